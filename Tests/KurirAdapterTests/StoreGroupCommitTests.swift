import Foundation
import KurirCore
import KurirStore
import Testing

private let base = Timestamp(millisecondsSinceEpoch: 1_795_593_600_000)

private func at(_ seconds: Int64) -> Timestamp {
    Timestamp(millisecondsSinceEpoch: base.millisecondsSinceEpoch + seconds * 1000)
}

private func row(_ id: String, target: String, priority: Priority = .normal) -> NewDelivery {
    NewDelivery(
        requestID: id, route: "alerts", target: target, message: "m \(id)", priority: priority, replyTo: nil,
        provider: "fonnte", status: .pending, errorMessage: nil, createdAt: base, events: [])
}

private func sent(_ id: Int64, events: [OutboxEvent] = []) -> FinishedRound {
    FinishedRound(
        notificationID: id, status: .sent, provider: "fonnte", failover: false, errorMessage: nil, sentAt: at(2),
        nextAttemptAt: nil, retries: 0, at: at(2), events: events)
}

private let accepted = AttemptResult(provider: .fonnte, outcome: .accepted, error: nil, httpStatus: 200, latencyMs: 7)

@Suite("Store: per-target claim order and group commit")
struct StoreGroupCommitTests {
    @Test func claimTakesOneRowPerTargetInReceivedOrder() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        _ = try store.accept([
            row("a1", target: "A"), row("b1", target: "B"), row("a2", target: "A"), row("c1", target: "C"),
            row("b2", target: "B"), row("a3", target: "A"),
        ])
        let first = try store.claimDueInTargetOrder(now: at(1), limit: 10, busyTargets: [])
        #expect(first.map(\.requestID) == ["a1", "b1", "c1"])
        // A, B and C are now busy: their next rows wait.
        #expect(try store.claimDueInTargetOrder(now: at(1), limit: 10, busyTargets: ["A", "B", "C"]).isEmpty)
        // B's round finished: only B's next row is claimable, and A's rows keep their order.
        try store.finishRound(
            notificationID: first[1].id, status: .sent, provider: "fonnte", failover: false, errorMessage: nil,
            sentAt: at(2), nextAttemptAt: nil, retries: 0, at: at(2), events: [])
        #expect(try store.claimDueInTargetOrder(now: at(2), limit: 10, busyTargets: ["A", "C"]).map(\.requestID) == ["b2"])
        try store.finishRound(
            notificationID: first[0].id, status: .sent, provider: "fonnte", failover: false, errorMessage: nil,
            sentAt: at(2), nextAttemptAt: nil, retries: 0, at: at(2), events: [])
        #expect(try store.claimDueInTargetOrder(now: at(3), limit: 10, busyTargets: ["B", "C"]).map(\.requestID) == ["a2"])
    }

    /// Ten thousand alarms to one on-call group must not hide other targets' rows behind them: before,
    /// the claim decoded the busy target's rows one by one and gave up at the scan limit.
    @Test func aBusyTargetsBacklogDoesNotHideOtherTargets() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        _ = try store.accept((0..<150).map { row("g\($0)", target: "GROUP") } + [row("solo", target: "SOLO")])
        // GROUP has a round in flight: its 150 rows wait, SOLO's row goes out.
        let busy = try store.claimDueInTargetOrder(now: at(1), limit: 5, busyTargets: ["GROUP"], scanLimit: 100)
        #expect(busy.map(\.requestID) == ["solo"])
    }

    /// The busy targets reach SQLite as a JSON array written by the store itself: a target with a quote,
    /// a backslash, a control character or non-ASCII text must still be excluded by the query, or its
    /// backlog would use up the scan limit and hide the other target's row.
    @Test(arguments: ["12\"34", "12\\34", "12\n34\u{1}", "grüße@g.us", "\u{1F4DF}"])
    func busyTargetsAreExcludedWhateverTheirCharacters(target: String) throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        _ = try store.accept((0..<150).map { row("w\($0)", target: target) } + [row("solo", target: "SOLO")])
        let claimed = try store.claimDueInTargetOrder(
            now: at(1), limit: 5, busyTargets: [target, "OTHER\"\\"], scanLimit: 100)
        #expect(claimed.map(\.requestID) == ["solo"])
    }

    /// The same when the backlog's target is taken by the claim itself: its head goes out with the others.
    @Test func aTargetTakenInTheSameClaimDoesNotHideOtherTargets() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        _ = try store.accept((0..<300).map { row("g\($0)", target: "GROUP") } + [row("solo", target: "SOLO")])
        let claimed = try store.claimDueInTargetOrder(now: at(1), limit: 5, busyTargets: [], scanLimit: 100)
        #expect(claimed.map(\.requestID) == ["g0", "solo"])
    }

    /// Targets reach SQLite's json_each as a JSON array; quotes, backslashes and control characters escaped.
    @Test func busyTargetsBecomeAJSONArray() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        let odd: Set<String> = ["a\"b", "c\\d", "e\u{1}f", "120363000000000001@g.us"]
        _ = try store.accept(odd.sorted().map { row("r-\($0)", target: $0) } + [row("plain", target: "6281234567890")])
        #expect(try store.claimDueInTargetOrder(now: at(1), limit: 10, busyTargets: odd).map(\.requestID) == ["plain"])
    }

    @Test func claimOrdersByPriorityFirstAndRespectsTheLimit() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        _ = try store.accept([
            row("bulk", target: "1", priority: .bulk), row("n1", target: "2"),
            row("crit", target: "3", priority: .critical), row("n2", target: "4"),
        ])
        #expect(try store.claimDueInTargetOrder(now: at(1), limit: 2, busyTargets: []).map(\.requestID) == ["crit", "n1"])
        #expect(try store.claimDueInTargetOrder(now: at(1), limit: 5, busyTargets: []).map(\.requestID) == ["n2", "bulk"])
    }

    @Test func claimScansPastABusyTargetsBacklog() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        // 300 rows for one busy target ahead of a row for another: more than one page of the scan.
        _ = try store.accept((0..<300).map { row("hot\($0)", target: "HOT") } + [row("other", target: "OTHER")])
        let claimed = try store.claimDueInTargetOrder(now: at(1), limit: 4, busyTargets: ["HOT"])
        #expect(claimed.map(\.requestID) == ["other"])
    }

    @Test func groupedWritesAreCommittedWhenTheyReturn() async throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .full)
        _ = try store.accept((0..<40).map { row("r\($0)", target: "T\($0)") })
        let claimed = try store.claimDueInTargetOrder(now: at(1), limit: 40, busyTargets: [])
        #expect(claimed.count == 40)
        // Forty concurrent rounds: begin, then finish with the completion in the same write.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for record in claimed {
                group.addTask {
                    let attempt = try await store.beginAttemptGrouped(
                        notificationID: record.id, provider: .fonnte, at: at(1))
                    #expect(try store.attempts(notificationID: record.id).map(\.id) == [attempt])
                    try await store.finishRoundGrouped(
                        sent(record.id, events: [OutboxEvent(eventID: "e-\(record.id)", topic: "t", payload: [1])]),
                        completing: CompletedAttempt(attemptID: attempt, result: accepted, events: []))
                }
            }
            try await group.waitForAll()
        }
        let rows = try store.notifications()
        #expect(rows.allSatisfy { $0.status == "sent" && $0.attempts == 1 && $0.inFlightSince == nil })
        #expect(try store.outboxCount() == 40)
        let attempt = try #require(try store.attempts(notificationID: claimed[0].id).first)
        #expect(attempt.outcome == "accepted" && attempt.latencyMs == 7 && attempt.httpStatus == 200)
    }

    @Test func aFailingWriteFailsAloneInItsBatch() async throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        _ = try store.accept([row("r1", target: "A")])
        let record = try #require(try store.claimDueInTargetOrder(now: at(1), limit: 1, busyTargets: []).first)
        let bad = Task { () -> StoreError? in
            do {
                try await store.finishRoundGrouped(sent(9_999))
                return nil
            } catch {
                return error as? StoreError
            }
        }
        try await store.finishRoundGrouped(sent(record.id))
        #expect(await bad.value?.code == .notFound)
        #expect(try store.notifications().first?.status == "sent")
    }

    @Test func outboxDeletionsLandWithTheNextGroupCommitAndOnClose() async throws {
        let dir = try Scratch()
        do {
            let store = try Store(path: dir.database, sync: .normal)
            _ = try store.accept([
                NewDelivery(
                    requestID: "x", route: "r", target: "", message: "", priority: .normal, replyTo: nil,
                    provider: "fonnte", status: .rejected, errorMessage: "bad", createdAt: base,
                    events: [
                        OutboxEvent(eventID: "e1", topic: "t", payload: [1]),
                        OutboxEvent(eventID: "e2", topic: "t", payload: [2]),
                    ])
            ])
            let rows = try store.outbox(after: 0, limit: 10)
            #expect(rows.count == 2)
            store.deleteOutboxLater(id: rows[0].id)
            // Writes run in order: once a later grouped write returns, the deletion is committed.
            _ = try? await store.beginAttemptGrouped(notificationID: 1, provider: .fonnte, at: base)
            #expect(try store.outboxCount() == 1)
            store.deleteOutboxLater(id: rows[1].id)
        }
        // Closing the store commits what is still queued.
        let reopened = try Store(path: dir.database, sync: .normal)
        #expect(try reopened.outboxCount() == 0)
    }

    @Test func outboxRowsAcknowledgedTogetherAreDeletedExactly() async throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        _ = try store.accept([
            NewDelivery(
                requestID: "x", route: "r", target: "", message: "", priority: .normal, replyTo: nil,
                provider: "fonnte", status: .rejected, errorMessage: "bad", createdAt: base,
                events: (0..<300).map { OutboxEvent(eventID: "e\($0)", topic: "t", payload: [1]) })
        ])
        let ids = try store.outbox(after: 0, limit: 1000).map(\.id)
        #expect(ids.count == 300)
        // Acknowledgements out of order and with gaps: one statement must delete these rows and no others.
        let acknowledged = ids.enumerated().filter { $0.offset % 3 != 1 }.map(\.element).reversed()
        for id in acknowledged { store.deleteOutboxLater(id: id) }
        _ = try? await store.beginAttemptGrouped(notificationID: 1, provider: .fonnte, at: base)
        let unacknowledged = ids.enumerated().filter { $0.offset % 3 == 1 }.map(\.element)
        #expect(try store.outbox(after: 0, limit: 1000).map(\.id) == unacknowledged)
        for id in ids { store.deleteOutboxLater(id: id) }  // the deleted ones again: no error
        _ = try? await store.beginAttemptGrouped(notificationID: 1, provider: .fonnte, at: base)
        #expect(try store.outboxCount() == 0)
    }

    @Test func nextRetryTimeIgnoresRowsDueAtOnce() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        _ = try store.accept([row("r1", target: "A"), row("r2", target: "B")])
        #expect(try store.nextRetryTime() == nil)
        let claimed = try store.claimDueInTargetOrder(now: at(1), limit: 1, busyTargets: [])
        try store.finishRound(
            notificationID: claimed[0].id, status: .retrying, provider: "fonnte", failover: false,
            errorMessage: "x", sentAt: nil, nextAttemptAt: at(300), retries: 1, at: at(2), events: [])
        #expect(try store.nextRetryTime() == at(300))
        #expect(try store.claimDueInTargetOrder(now: at(299), limit: 5, busyTargets: []).map(\.requestID) == ["r2"])
    }
    @Test func groupedClaimInsertsTheFirstAttemptOfFirstRoundsOnly() async throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        _ = try store.accept([row("r1", target: "A"), row("r2", target: "B")])
        // r2 had a round already: it gets no pre-made attempt.
        let first = try store.claimDueInTargetOrder(now: at(1), limit: 10, busyTargets: ["A"])
        let earlier = try store.beginAttempt(notificationID: first[0].id, provider: .fonnte, at: at(1))
        try store.completeAttempt(
            attemptID: earlier, notificationID: first[0].id,
            result: AttemptResult(provider: .fonnte, outcome: .refused, error: "x", httpStatus: 200, latencyMs: 1),
            events: [])
        try store.finishRound(
            notificationID: first[0].id, status: .retrying, provider: "fonnte", failover: false, errorMessage: "x",
            sentAt: nil, nextAttemptAt: at(2), retries: 1, at: at(1), events: [])
        let claimed = try await store.claimDueGrouped(now: at(3), limit: 10, busyTargets: [], firstAttempt: .wablas).records
        #expect(claimed.map(\.requestID) == ["r1", "r2"])
        let premade = try #require(claimed[0].pendingAttempt?.id)
        #expect(claimed[1].pendingAttempt == nil)
        #expect(claimed[0].pendingAttempt?.attemptedAt == at(3))
        let attempts = try store.attempts(notificationID: claimed[0].id)
        #expect(attempts.map(\.id) == [premade])
        #expect(attempts.first?.provider == "wablas")
        #expect(attempts.first?.outcome == nil)
        #expect(try store.attempts(notificationID: claimed[1].id).count == 1)
    }

    @Test(arguments: [DatabaseSync.full, .normal])
    func concurrentIntakeAndGroupedWritesAllCommit(sync: DatabaseSync) async throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: sync)
        let perThread = 150
        // Intake commits from plain threads (as libmosquitto's callback does) while grouped writes run.
        let threads = (0..<3).map { t in
            Thread {
                for i in 0..<perThread { _ = try? store.accept([row("t\(t)-\(i)", target: "T\(t)-\(i)")]) }
            }
        }
        threads.forEach { $0.start() }
        var claimed = 0
        var finished = 0
        let deadline = ContinuousClock.now.advanced(by: .seconds(60))
        while finished < 3 * perThread && ContinuousClock.now < deadline {
            let batch = try await store.claimDueGrouped(now: at(1), limit: 16, busyTargets: [], firstAttempt: .fonnte).records
            claimed += batch.count
            for record in batch {
                try await store.finishRoundGrouped(
                    sent(record.id),
                    completing: CompletedAttempt(
                        attemptID: try #require(record.pendingAttempt?.id), result: accepted, events: []))
                finished += 1
            }
            if batch.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
        }
        #expect(claimed == 3 * perThread)
        #expect(try store.notifications().filter { $0.status == "sent" }.count == 3 * perThread)
    }
}
