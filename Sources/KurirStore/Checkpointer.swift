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
///
/// Each checkpoint syncs the database file, and the first commit after each rewind syncs the WAL's
/// header on the writer's path. With a soft threshold of 256 pages and a pass at every 1 ms pause, a
/// steady 200 requests/s made about 33 `fdatasync`s a second, 11 of them on the writer's path
/// (docs/performance.md, change 28). So the WAL grows to `softFrames` (16 MB) before a checkpoint, and
/// passes are at least `passSpacing` apart: a pass that a commit overtook, which leaves the WAL unable
/// to rewind, is followed by one more after the spacing, not by one at every pause.
///
/// In a FULL database the same thread also syncs the WAL for the group committer's deferred commits
/// that no intake's fsync covered within `DeferredSync.delay`.
final class Checkpointer: Sendable {
    static let softFrames: Int32 = 4000
    /// Ten times SQLite's default automatic checkpoint threshold: 40 MB of WAL, a little more while a
    /// background pass holds the checkpoint lock.
    static let hardFrames: Int32 = 10_000
    static let quietPeriod: UInt64 = 1_000_000  // ns
    static let passSpacing: UInt64 = 100_000_000  // ns

    private let connection: DatabaseQueue
    // A thread of its own, woken by `wake`: waiting out the quiet period on a libdispatch worker took
    // one of the threads Swift's tasks run on (measured: about a fifth fewer deliveries/s).
    private let wake = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    private let scheduled = Atomic(false)
    private let stopping = Atomic(false)
    private let lastCommit = Atomic<UInt64>(0)
    /// When the last background checkpoint ended (only this thread reads and writes it).
    private let lastPass = Atomic<UInt64>(0)
    private let walFrames = Atomic<Int32>(0)

    /// FULL databases only: the group committer's unsynced commits, synced here when no intake does.
    private let deferredSync: DeferredSync?

    init(path: String, deferredSync: DeferredSync?) throws {
        var configuration = Configuration()
        configuration.label = "kurir.checkpoint"
        connection = try DatabaseQueue(path: path, configuration: configuration)
        self.deferredSync = deferredSync
        let thread = Thread { [self] in
            // Named from inside: a name given before `start()` does not reach the thread on Linux, and
            // Linux refuses names longer than 15 bytes.
            Thread.current.name = "kurir-ckpt"
            while true {
                wake.wait()
                if stopping.load(ordering: .acquiring) { break }
                pass()
            }
            stopped.signal()
        }
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
        let now = DispatchTime.now().uptimeNanoseconds
        lastCommit.store(now, ordering: .sequentiallyConsistent)
        walFrames.store(frames, ordering: .sequentiallyConsistent)
        let owes = deferredSync?.committed(at: now) ?? false
        guard owes || frames >= Self.softFrames else { return }
        signal()
    }

    private func signal() {
        if scheduled.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged {
            wake.signal()
        }
    }

    /// One pass, per signal: syncs the WAL when a deferred commit has waited `DeferredSync.delay` for an
    /// intake's fsync, and checkpoints when the last commit is a quiet period old; otherwise sleeps until
    /// the earlier of the two would be due and signals itself for another pass (a commit meanwhile has
    /// signalled already).
    private func pass() {
        // From here on a commit signals again, so none is missed while this pass looks.
        scheduled.store(false, ordering: .sequentiallyConsistent)
        var now = DispatchTime.now().uptimeNanoseconds
        var nextPass: UInt64?
        if let deferredSync, let due = deferredSync.syncDue {
            var failed = false
            if now >= due {
                // A failure is final (`DeferredSync`): the next intake's sync reports it and kurir stops.
                failed = deferredSync.sync(at: now) != nil
                now = DispatchTime.now().uptimeNanoseconds
            }
            // Commits that landed while the sync ran are still owed, and did not signal (only the first
            // unsynced commit does): without another pass they waited for the next intake.
            if !failed, let stillDue = deferredSync.syncDue { nextPass = stillDue }
        }
        if walFrames.load(ordering: .sequentiallyConsistent) >= Self.softFrames {
            let quietAt = lastCommit.load(ordering: .sequentiallyConsistent) &+ Self.quietPeriod
            let dueAt = max(quietAt, lastPass.load(ordering: .relaxed) &+ Self.passSpacing)
            if now >= dueAt {
                // A failed background checkpoint is harmless: the WAL keeps the pages, and the writer's
                // inline checkpoint at `hardFrames` bounds it.
                _ = try? connection.writeWithoutTransaction { db in try db.checkpoint(.passive) }
                lastPass.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed)
            } else {
                nextPass = min(nextPass ?? dueAt, dueAt)
            }
        }
        guard let nextPass else { return }
        if nextPass > now { usleep(useconds_t((nextPass - now) / 1000 + 1)) }
        signal()
    }
}
