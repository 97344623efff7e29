import Foundation
import KurirCore
import Synchronization
import Testing

@testable import KurirStore

private let base = Timestamp(millisecondsSinceEpoch: 1_795_593_600_000)

private func row(_ id: String) -> NewDelivery {
    NewDelivery(
        requestID: id, route: "alerts", target: "T-\(id)", message: "m \(id)", priority: .normal, replyTo: nil,
        provider: "fonnte", status: .pending, errorMessage: nil, createdAt: base, events: [])
}

/// Commits one deferred (group) transaction as the WAL hook would report it.
private func deferredCommit(_ sync: DeferredSync, at now: UInt64) -> Bool {
    sync.deferring.store(true, ordering: .releasing)
    defer { sync.deferring.store(false, ordering: .releasing) }
    return sync.committed(at: now)
}

@Suite("Store: FULL commits deferring their fsync (group commits to the next intake, the intake to syncAccepted)")
struct StoreDeferredSyncTests {
    @Test func aDeferredCommitOwesASyncThatTheNextFsyncedCommitPays() {
        let sync = DeferredSync(walPath: "/nonexistent/db-wal")
        #expect(sync.syncDue == nil)
        #expect(deferredCommit(sync, at: 1_000))
        // Only the first unsynced commit starts the clock; later ones ride along.
        #expect(!deferredCommit(sync, at: 2_000))
        #expect(sync.syncDue == 1_000 + DeferredSync.delay)
        // An intake's commit (fsynced) puts every earlier WAL frame on disk.
        #expect(!sync.committed(at: 3_000))
        #expect(!sync.owesSync)
    }

    @Test func aSyncCoversOnlyTheCommitsBeforeItBegan() {
        let sync = DeferredSync(walPath: "/nonexistent/db-wal")
        _ = deferredCommit(sync, at: 1_000)
        _ = sync.sync(at: 5_000) {
            // Lands while the fsync runs: not covered by it.
            _ = deferredCommit(sync, at: 5_001)
            return nil
        }
        #expect(sync.syncDue == 5_000 + DeferredSync.delay)
        _ = sync.sync(at: 9_000) { nil }
        #expect(!sync.owesSync)
    }

    /// Linux reports a failed writeback to one fsync of the file only, and may drop the pages it could not
    /// write: a later fsync that succeeds says nothing about them. So a failure is final, and every later
    /// sync reports it without syncing (the intake then stops acknowledging).
    @Test func aFailedSyncIsFinal() {
        let sync = DeferredSync(walPath: "/nonexistent/db-wal")
        _ = deferredCommit(sync, at: 1_000)
        #expect(sync.sync(at: 5_000) { "Input/output error" } == "Input/output error")
        let fsyncs = Mutex(0)
        let later = sync.sync(at: 20_000) {
            fsyncs.withLock { $0 += 1 }
            return nil
        }
        #expect(later == "Input/output error")
        #expect(fsyncs.withLock { $0 } == 0)
        #expect(sync.owesSync)
    }

    /// A WAL that cannot be opened is a failed sync, with its reason, never a silent success.
    @Test func aWALThatCannotBeSyncedIsAnError() {
        let sync = DeferredSync(walPath: "/nonexistent/db-wal")
        _ = deferredCommit(sync, at: 1_000)
        #expect(sync.sync(at: 2_000) == "No such file or directory")
        #expect(sync.owesSync)
    }

    /// The intake's commit in FULL waits for `syncAccepted()`, which the network thread runs before the
    /// PUBACKs; the fsync covers every request accepted before it.
    @Test func requestsAcceptedDeferringTheirSyncAreOwedUntilSyncAccepted() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .full)
        let deferredSync = try #require(store.deferredSync)
        _ = try store.accept([row("a")], deferringSync: true)
        _ = try store.accept([row("b")], deferringSync: true)
        #expect(deferredSync.owesSync)
        #expect(store.synchronousMode == .full, "the connection is back at FULL after the intake")
        try store.syncAccepted()
        #expect(!deferredSync.owesSync)
        #expect(try store.notifications().map(\.requestID) == ["a", "b"])
    }

    @Test func acceptWithoutDeferringIsOnDiskWhenItReturns() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .full)
        _ = try store.accept([row("a")])
        #expect(store.deferredSync.map { !$0.owesSync } ?? false)
    }

    /// Group transactions switch the connection to NORMAL; the intake after them must be fsynced again.
    @Test func intakeStaysFullAfterGroupCommits() async throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .full)
        _ = try store.accept([row("a")])
        let claimed = try await store.claimDueGrouped(
            now: base, limit: 1, busyTargets: [], firstAttempt: .fonnte)
        #expect(claimed.records.count == 1)
        #expect(store.synchronousMode == .full)
        _ = try store.accept([row("b")])
        #expect(store.deferredSync.map { !$0.owesSync } ?? false, "the intake's fsync pays the debt")
    }

    /// With no intake after them, the checkpointer's thread syncs the group commits on its own.
    @Test func groupCommitsWithoutIntakeAreSyncedByTheCheckpointer() async throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .full)
        #expect(store.deferredSync != nil)
        _ = try store.accept([row("a")])
        _ = try await store.claimDueGrouped(now: base, limit: 1, busyTargets: [], firstAttempt: .fonnte)
        let deferredSync = try #require(store.deferredSync)
        let deadline = ContinuousClock.now.advanced(by: .seconds(10))
        while deferredSync.owesSync && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(2))
        }
        #expect(!deferredSync.owesSync)
    }

    /// A group commit that lands while the checkpointer's own fsync runs stays owed, and does not signal
    /// the checkpointer (only the first unsynced commit does): the checkpointer must look again after its
    /// sync, or that commit waits for the next intake, however long that is.
    @Test func aCommitDuringTheCheckpointersSyncIsSyncedToo() async throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .full)
        let deferredSync = try #require(store.deferredSync)
        let landed = Mutex(false)
        deferredSync.whileSyncing.withLock { hook in
            hook = {
                let first = landed.withLock { landed in
                    defer { landed = true }
                    return !landed
                }
                // What the WAL hook reports for a group commit landing now.
                if first { _ = deferredCommit(deferredSync, at: DispatchTime.now().uptimeNanoseconds) }
            }
        }
        _ = try store.accept([row("a")])
        _ = try await store.claimDueGrouped(now: base, limit: 1, busyTargets: [], firstAttempt: .fonnte)
        let deadline = ContinuousClock.now.advanced(by: .seconds(10))
        while !(landed.withLock { $0 } && !deferredSync.owesSync) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(2))
        }
        #expect(landed.withLock { $0 })
        #expect(!deferredSync.owesSync)
    }

    /// If synchronous=FULL cannot be put back after a group transaction, that transaction may have
    /// committed: its jobs fail rather than run again (a second run claimed the next row as well and left
    /// the first in flight until a restart).
    @Test func aBatchThatMayHaveCommittedIsNotRunAgain() async throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .full)
        let deferredSync = try #require(store.deferredSync)
        _ = try store.accept([row("a"), row("b")])
        deferredSync.failNextRestore.store(true, ordering: .releasing)
        await #expect(throws: StoreError.self) {
            _ = try await store.claimDueGrouped(now: base, limit: 1, busyTargets: [], firstAttempt: .fonnte)
        }
        let attempts = try store.notifications().map { try store.attempts(notificationID: $0.id).count }
        #expect(attempts.sorted() == [0, 1], "one claim, one attempt row: the job ran once")
    }

    @Test func normalDatabasesDeferNothing() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        #expect(store.deferredSync == nil)
        _ = try store.accept([row("a")], deferringSync: true)
        try store.syncAccepted()
        #expect(try store.notifications().count == 1)
    }
}
