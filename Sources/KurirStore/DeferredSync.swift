import Synchronization

/// In a `synchronous=FULL` database, which commits are not on disk yet.
///
/// FULL's promise is about the intake: a request is fsynced before the broker gets its PUBACK. The
/// delivery bookkeeping after it (claims, attempt rows, outcomes, outbox rows and deletions) runs in the
/// group committer's transactions at `synchronous=NORMAL`, without an fsync of its own: the WAL is
/// written in order, so the next intake's fsync puts every earlier commit on disk too. When no intake
/// comes within `delay`, the checkpointer's thread syncs the WAL itself. A power loss can so undo at most
/// the last moments of bookkeeping, which at worst sends those deliveries again (at least once), and never
/// an acknowledged request. This is what keeps FULL close to one fsync per request.
///
/// The WAL hook reports every commit that wrote pages (`committed`); `deferring` is set by the group
/// committer around a transaction it runs at NORMAL, so the hook can tell the two kinds apart.
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

    /// Runs `sync` (an fsync of the WAL) and records what it covered: every deferred commit that had
    /// landed before it began. Commits landing meanwhile stay owed, from the sync's start.
    func sync(at now: UInt64, _ sync: () -> Bool) {
        let covered = state.withLock { $0.deferred }
        let done = sync()
        state.withLock { state in
            // Nil: an intake's fsync paid everything meanwhile.
            guard state.owedSince != nil else { return }
            // Commits that landed while it ran, or a failed sync, stay owed from the sync's start.
            state.owedSince = done && state.deferred == covered ? nil : now
        }
    }
}
