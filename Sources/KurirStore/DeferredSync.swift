import GRDB
import Glibc
import Synchronization

/// In a `synchronous=FULL` database, which commits are not on disk yet, and the `fdatasync` of the WAL
/// that puts them there.
///
/// FULL's promise is about the intake: a request is on disk before the broker gets its PUBACK. The
/// intake commits the requests the network thread read in one go at `synchronous=NORMAL` and then syncs
/// the WAL once for all of them, before their PUBACKs are written (`Store.syncAccepted`).
/// The delivery bookkeeping (claims, attempt rows, outcomes, outbox rows and deletions) runs in the
/// group committer's transactions at NORMAL too, without an fsync of its own: the WAL is written in
/// order, so the next intake's fsync puts every earlier commit on disk as well. When no intake comes
/// within `delay`, the checkpointer's thread syncs the WAL itself. A power loss can so undo at most the
/// last moments of bookkeeping, which at worst sends those deliveries again (at least once), and never
/// an acknowledged request.
///
/// The WAL hook reports every commit that wrote pages (`committed`); `deferring` is set around a
/// transaction run at NORMAL, so the hook can tell the two kinds apart (the store's other writes, rare
/// ones, commit at FULL).
final class DeferredSync: Sendable {
    /// How long an unsynced commit may wait for the next intake's fsync before the WAL is synced alone.
    static let delay: UInt64 = 10_000_000  // ns

    private struct State {
        /// Deferred commits so far (tells a sync whether more landed while it ran).
        var deferred: UInt64 = 0
        /// When the oldest deferred commit not yet on disk landed; nil when none is owed.
        var owedSince: UInt64?
    }

    let deferring = Atomic(false)
    private let state = Mutex(State())
    /// Held across each fsync, so syncs run one at a time; holds the first failure, which is final.
    private let syncing = Mutex<String?>(nil)
    /// Tests: runs inside each sync of the WAL, as a commit landing while the fsync runs would.
    let whileSyncing = Mutex<(@Sendable () -> Void)?>(nil)
    private let wal: WALFile

    init(walPath: String) { wal = WALFile(path: walPath) }

    /// Thrown when `synchronous` could not be set back to FULL after a transaction: the connection is
    /// left at NORMAL and the transaction may have committed, so its writes must not run again (the group
    /// committer retries a failed batch job by job otherwise) and FULL's promise no longer holds.
    struct ConnectionLeftAtNormal: Error, CustomStringConvertible {
        let reason: String
        var description: String { "synchronous=FULL could not be restored after a transaction (\(reason))" }
    }

    /// Tests: the next restore of synchronous=FULL fails.
    let failNextRestore = Atomic(false)

    /// Runs `body` in a transaction at synchronous=NORMAL on `queue`, whose connection is at FULL
    /// otherwise, and puts FULL back before anything else runs on it. The commit is owed a `sync`.
    func transaction<T>(on queue: DatabaseQueue, _ body: (Database) throws -> T) throws -> T {
        try queue.writeWithoutTransaction { db in
            try db.cachedStatement(sql: "PRAGMA synchronous = NORMAL").execute()
            deferring.store(true, ordering: .releasing)
            var result: T?
            let outcome = Result {
                result = try db.immediateTransaction { try body(db) }
            }
            deferring.store(false, ordering: .releasing)
            if failNextRestore.exchange(false, ordering: .acquiringAndReleasing) {
                throw ConnectionLeftAtNormal(reason: "failure injected by a test")
            }
            do {
                try db.cachedStatement(sql: "PRAGMA synchronous = FULL").execute()
            } catch {
                throw ConnectionLeftAtNormal(reason: "\(type(of: error))")
            }
            try outcome.get()
            guard let result else { throw StoreError(code: .sqlite, message: "deferred transaction lost its result") }
            return result
        }
    }

    /// Called for each commit that wrote pages, on the writer's thread, inside the commit. Returns true
    /// when this commit began a debt (the checkpointer should schedule a sync).
    func committed(at now: UInt64) -> Bool {
        let deferred = deferring.load(ordering: .acquiring)
        return state.withLock { state in
            guard deferred else {
                // An fsynced commit: the WAL up to here is on disk, every earlier commit with it.
                state.owedSince = nil
                return false
            }
            state.deferred += 1
            guard state.owedSince == nil else { return false }
            state.owedSince = now
            return true
        }
    }

    /// True while some deferred commit is not known to be on disk.
    var owesSync: Bool { syncDue != nil }

    /// When a sync is due (the oldest unsynced commit plus `delay`), or nil when nothing is owed.
    var syncDue: UInt64? {
        state.withLock { state in state.owedSince.map { $0 &+ Self.delay } }
    }

    /// `fdatasync`s the WAL, outside any SQLite lock, and records what that covered: every commit that
    /// had landed before it began. Commits landing meanwhile stay owed, from the sync's start. Returns nil,
    /// or the `errno` text of a failed sync (nothing is known to be on disk then).
    ///
    /// A failure is final: every later sync returns it without syncing. Linux reports a failed writeback
    /// to one fsync of the file only and may drop the pages it could not write, so a later fsync that
    /// succeeds says nothing about them (PostgreSQL's "fsyncgate"); the intake must stop acknowledging.
    /// Syncs run one at a time for the same reason: the intake's must not succeed on the back of the
    /// checkpointer's failure that it did not see.
    @discardableResult
    func sync(at now: UInt64) -> String? {
        sync(at: now) {
            whileSyncing.withLock { $0 }?()
            return wal.sync()
        }
    }

    /// `sync(at:)` with the fsync given (tests).
    func sync(at now: UInt64, using fsync: () -> String?) -> String? {
        syncing.withLock { failed -> String? in
            if let failed { return failed }
            let covered = state.withLock { $0.deferred }
            if let failure = fsync() {
                failed = failure
                return failure
            }
            state.withLock { state in
                // Nil: a commit at FULL paid everything meanwhile.
                guard state.owedSince != nil else { return }
                // Commits that landed while it ran stay owed from the sync's start.
                state.owedSince = state.deferred == covered ? nil : now
            }
            return nil
        }
    }

    /// Closes the WAL file (when the store closes).
    func close() { wal.close() }
}

/// The WAL file, opened on first use, for `fdatasync` alone: SQLite writes it only by appending and
/// rewinding, never replacing it while a connection (the checkpointer's) is open.
private final class WALFile: Sendable {
    let path: String
    private let fd = Mutex<Int32>(-1)

    init(path: String) { self.path = path }

    /// Puts every page written to the WAL so far on disk; the `errno` text when that failed.
    func sync() -> String? {
        let fd = fd.withLock { fd in
            if fd < 0 { fd = open(path, O_RDWR | O_CLOEXEC) }
            return fd
        }
        guard fd >= 0, fdatasync(fd) == 0 else { return String(cString: strerror(errno)) }
        return nil
    }

    func close() {
        fd.withLock { fd in
            if fd >= 0 { _ = Glibc.close(fd) }
            fd = -1
        }
    }
}
