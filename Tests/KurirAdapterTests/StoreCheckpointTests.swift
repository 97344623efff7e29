import Foundation
import KurirCore
import KurirStore
import Testing

private func size(_ path: String) -> Int {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
}

private func row(_ n: Int) -> NewDelivery {
    NewDelivery(
        requestID: "req-\(n)", route: "alerts", target: "62812\(n)", message: String(repeating: "m", count: 200),
        priority: .normal, replyTo: nil, provider: "fonnte", status: .pending, errorMessage: nil,
        createdAt: Timestamp(millisecondsSinceEpoch: 1_795_593_600_000), events: [])
}

/// WAL frames are a 4,096-byte page plus a 24-byte header.
private let frameBytes = 4096 + 24

@Suite("Store: WAL checkpoints")
struct StoreCheckpointTests {
    /// Past the background threshold (4,000 pages) and below the writer's own (10,000) nothing else
    /// would copy the WAL into the database file: only the background checkpoint, once the writes pause.
    @Test func backgroundCheckpointCopiesTheWALOnceWritesPause() async throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        let before = size(dir.database)
        var n = 0
        // Bounded: if a checkpoint rewound the WAL on the way, its file would never reach this size.
        while size(dir.wal) < 4400 * frameBytes && n < 20_000 {
            _ = try store.accept([row(n)])
            n += 1
        }
        #expect(size(dir.wal) >= 4400 * frameBytes, "the WAL was rewound before it held 4,400 pages")
        #expect(size(dir.wal) < 10_000 * frameBytes)
        let deadline = ContinuousClock.now.advanced(by: .seconds(10))
        while size(dir.database) <= before && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(size(dir.database) > before, "no checkpoint after \(n) commits and a pause")
        #expect(try store.notifications().count == n)
    }

    /// Commits back to back never leave the background checkpoint a pause; the writer's own checkpoint
    /// at 10,000 pages must still rewind the WAL.
    @Test func walStaysBoundedUnderSustainedWrites() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        var largest = 0
        for n in 0..<15_000 {
            _ = try store.accept([row(n)])
            if n % 100 == 0 { largest = max(largest, size(dir.wal)) }
        }
        largest = max(largest, size(dir.wal))
        // 15,000 commits of several pages each would be over 40,000 frames without a rewind. Above
        // 10,000 by what lands while a background checkpoint holds the checkpoint lock: the writer's
        // inline one is busy until it ends (with a threshold of 1,000, a loaded machine reached 1,234 and
        // 1,407 frames).
        #expect(largest <= 20_000 * frameBytes, "WAL reached \(largest / frameBytes) frames")
        #expect(try store.notifications().count == 15_000)
    }

    /// The checkpoint connection closes first, so the writer's close (the last) checkpoints and
    /// removes the WAL, as with one connection.
    @Test func closingRemovesTheWAL() throws {
        let dir = try Scratch()
        do {
            let store = try Store(path: dir.database, sync: .full)
            for n in 0..<50 { _ = try store.accept([row(n)]) }
            #expect(FileManager.default.fileExists(atPath: dir.wal))
        }
        #expect(!FileManager.default.fileExists(atPath: dir.wal))
        let reopened = try Store(path: dir.database, sync: .full)
        #expect(try reopened.notifications().count == 50)
    }
}
