import Foundation
import GRDB

/// The raw SQLite ceiling: one small row per committed transaction, WAL, on the disk kurir uses.
enum SQLiteRate {
    /// Rows per second committing one row per transaction for about `seconds` (at most `maxRows`).
    static func measure(directory: String, full: Bool, seconds: Double, maxRows: Int) throws -> Double {
        let path = directory + "/raw-\(full ? "full" : "normal").db"
        var configuration = Configuration()
        configuration.journalMode = .wal
        let queue = try DatabaseQueue(path: path, configuration: configuration)
        try queue.writeWithoutTransaction { db in
            // After GRDB's WAL switch, which sets NORMAL by itself.
            try db.execute(sql: "PRAGMA synchronous = \(full ? 2 : 1)")
            try db.execute(sql: "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, k TEXT NOT NULL, v TEXT NOT NULL)")
        }
        let start = monotonicNanos()
        let deadline = start + Int64(seconds * 1e9)
        var rows = 0
        while rows < maxRows && monotonicNanos() < deadline {
            try queue.write { db in
                try db.execute(
                    sql: "INSERT INTO t (k, v) VALUES (?, ?)", arguments: ["b-\(rows)", "6281200000000 bench alert"])
            }
            rows += 1
        }
        let elapsed = Double(monotonicNanos() - start) / 1e9
        try queue.close()
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        return Double(rows) / elapsed
    }
}
