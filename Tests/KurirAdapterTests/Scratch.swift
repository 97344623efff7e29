import Foundation

/// A fresh directory per test holding one database, removed at the end.
final class Scratch {
    let path: String
    init(_ prefix: String = "kurir-store") throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    var database: String { path + "/kurir.db" }
    var wal: String { database + "-wal" }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}
