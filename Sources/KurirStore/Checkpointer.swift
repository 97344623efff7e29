import Dispatch
import Foundation
import GRDB
import GRDBSQLite
import Glibc
import Synchronization

/// Copies the WAL back into the database file while the writers pause, on a connection and thread of
/// its own, so that a delivery's commit rarely pays for a checkpoint.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses its threshold (1,000 pages): in
/// `make bench` that commit (copying the pages, syncing the database file) made the whole p99 tail at a
/// steady 200 requests/s. Here the writer's WAL hook signals this thread once the WAL holds
/// `softFrames`; the thread waits until no commit has landed for `quietPeriod` and then runs a PASSIVE
/// checkpoint, which never blocks a writer, and the next commit rewinds the WAL. Under a sustained burst
/// the writers never pause, and a checkpoint beside them cannot let the WAL rewind (frames keep coming),
/// so it would only add work: there the writer checkpoints inline at `hardFrames`, exactly as SQLite's
/// own automatic checkpoint does, which keeps the WAL bounded.
final class Checkpointer: Sendable {
    static let softFrames: Int32 = 256
    /// SQLite's default automatic checkpoint threshold.
    static let hardFrames: Int32 = 1000
    static let quietPeriod: UInt64 = 1_000_000  // ns

    private let connection: DatabaseQueue
    // A thread of its own, woken by `wake`: waiting out the quiet period on a libdispatch worker took
    // one of the threads Swift's tasks run on (measured: about a fifth fewer deliveries/s).
    private let wake = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    private let scheduled = Atomic(false)
    private let stopping = Atomic(false)
    private let lastCommit = Atomic<UInt64>(0)
    private let walFrames = Atomic<Int32>(0)

    init(path: String) throws {
        var configuration = Configuration()
        configuration.label = "kurir.checkpoint"
        connection = try DatabaseQueue(path: path, configuration: configuration)
        let thread = Thread { [self] in
            while true {
                wake.wait()
                if stopping.load(ordering: .acquiring) { break }
                checkpointIfQuiet()
            }
            stopped.signal()
        }
        thread.name = "kurir-checkpoint"
        thread.start()
    }

    /// Installs the WAL hook on the writer's connection (replacing SQLite's automatic checkpoint).
    func install(on writer: DatabaseQueue) {
        let context = Unmanaged.passUnretained(self).toOpaque()
        writer.writeWithoutTransaction { db in
            _ = sqlite3_wal_hook(db.sqliteConnection, Self.walHook, context)
        }
    }

    /// Stops the background checkpoints and closes their connection (before the writer closes, so the
    /// writer's close, the last one, still checkpoints and removes the WAL).
    func close() {
        stopping.store(true, ordering: .releasing)
        wake.signal()
        stopped.wait()
        try? connection.close()
    }

    /// Called by SQLite on the writer's thread after each commit, with the WAL's frame count.
    private static let walHook: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<CChar>?, Int32) -> Int32 =
        {
            context, db, name, frames in
            guard let context else { return SQLITE_OK }
            let checkpointer = Unmanaged<Checkpointer>.fromOpaque(context).takeUnretainedValue()
            checkpointer.committed(frames: frames)
            if frames >= hardFrames {
                // Busy (the background checkpoint holds the lock) is not the commit's error; the next
                // commit tries again, as with SQLite's own automatic checkpoint.
                _ = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
            }
            return SQLITE_OK
        }

    private func committed(frames: Int32) {
        lastCommit.store(DispatchTime.now().uptimeNanoseconds, ordering: .sequentiallyConsistent)
        walFrames.store(frames, ordering: .sequentiallyConsistent)
        guard frames >= Self.softFrames else { return }
        if scheduled.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged {
            wake.signal()
        }
    }

    /// One pass, per signal: checkpoints if the last commit is a quiet period old, otherwise sleeps
    /// until it would be and signals itself for another pass (a commit meanwhile has signalled already).
    private func checkpointIfQuiet() {
        // From here on a commit signals again, so none is missed while this pass looks.
        scheduled.store(false, ordering: .sequentiallyConsistent)
        guard walFrames.load(ordering: .sequentiallyConsistent) >= Self.softFrames else { return }
        let quietAt = lastCommit.load(ordering: .sequentiallyConsistent) &+ Self.quietPeriod
        let now = DispatchTime.now().uptimeNanoseconds
        if now < quietAt {
            usleep(useconds_t((quietAt - now) / 1000 + 1))
            if scheduled.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged {
                wake.signal()
            }
            return
        }
        // A failed background checkpoint is harmless: the WAL keeps the pages, and the writer's inline
        // checkpoint at `hardFrames` bounds it.
        _ = try? connection.writeWithoutTransaction { db in try db.checkpoint(.passive) }
    }
}
