import Foundation
import KurirCore
import KurirStore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

private let t0 = Timestamp(millisecondsSinceEpoch: 1_795_593_600_000)  // 2026-11-25T08:00:00.000Z

private func at(_ seconds: Int64) -> Timestamp {
    Timestamp(millisecondsSinceEpoch: t0.millisecondsSinceEpoch + seconds * 1000)
}

/// A target of its own per request id (FNV-1a), so the per-target claim treats each row independently.
private func ownTarget(for requestID: String) -> String {
    let hash = requestID.utf8.reduce(UInt64(14_695_981_039_346_656_037)) { ($0 ^ UInt64($1)) &* 1_099_511_628_211 }
    return "62812" + String(format: "%08llu", hash % 100_000_000)
}

private func delivery(
    _ requestID: String, target: String? = nil, priority: Priority = .normal,
    status: DeliveryStatus = .pending, events: [OutboxEvent] = [], created: Timestamp = t0
) -> NewDelivery {
    NewDelivery(
        requestID: requestID, route: "tickets/assigned", target: target ?? ownTarget(for: requestID),
        message: "hello \(requestID)",
        priority: priority, replyTo: nil, provider: "fonnte", status: status,
        errorMessage: status == .rejected ? "missing message" : nil, createdAt: created, events: events)
}

private func event(_ id: String, topic: String = "notify/result/whatsapp/delivered/tickets/assigned") -> OutboxEvent {
    OutboxEvent(eventID: id, topic: topic, payload: Array("{\"event_id\":\"\(id)\"}".utf8))
}

private func fileMode(_ path: String) -> mode_t {
    var info = stat()
    guard stat(path, &info) == 0 else { return 0 }
    return info.st_mode & 0o777
}

@Suite("Store (SQLite via GRDB)")
struct StoreTests {
    @Test func createsSchemaInWALModeAndReopens() throws {
        let dir = try Scratch()
        do {
            let store = try Store(path: dir.database, sync: .full)
            #expect(try store.notifications().isEmpty)
            #expect(try store.outboxCount() == 0)
            #expect(try store.attempts(notificationID: 1).isEmpty)
            #expect(try store.integrityCheck() == "ok")
            #expect(try store.accept([delivery("r1")]) == [true])
            #expect(FileManager.default.fileExists(atPath: dir.database + "-wal"))
        }
        // Migrations already applied: opening again keeps the data.
        let again = try Store(path: dir.database, sync: .full)
        #expect(try again.notifications().map(\.requestID) == ["r1"])
    }

    @Test func filesAreOwnerOnly() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        _ = try store.accept([delivery("r1")])
        #expect(fileMode(dir.database) == 0o600)
        #expect(fileMode(dir.database + ".lock") == 0o600)
        #expect(fileMode(dir.database + "-wal") == 0o600)
    }

    @Test func secondStoreOnTheSamePathIsLocked() throws {
        let dir = try Scratch()
        do {
            let first = try Store(path: dir.database, sync: .full)
            do {
                _ = try Store(path: dir.database, sync: .full)
                Issue.record("a second Store on the same file must fail")
            } catch {
                #expect(error.code == .locked)
                #expect(
                    error.message
                        == "database \(dir.database) is in use by another kurir process (lock \(dir.database).lock)")
            }
            #expect(try first.integrityCheck() == "ok")
        }
        // Released with the first store.
        _ = try Store(path: dir.database, sync: .full)
    }

    @Test(arguments: [DatabaseSync.full, .normal])
    func synchronousModeReadsBack(_ sync: DatabaseSync) throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: sync)
        #expect(store.synchronousMode == sync)
    }

    @Test func acceptIsIdempotentPerRequestAndTarget() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        #expect(try store.accept([delivery("r1", target: "6281234567890", events: [event("e1")])]) == [true])
        #expect(try store.accept([delivery("r1", target: "6281234567890", events: [event("e1-again")])]) == [false])
        #expect(try store.outbox(after: 0, limit: 10).map(\.event.eventID) == ["e1"])
        // Same request, other target: a separate delivery. Duplicates inside one batch count once.
        #expect(
            try store.accept([delivery("r1", target: "6289999999999"), delivery("r2"), delivery("r2")])
                == [true, true, false])
        let rows = try store.notifications()
        #expect(rows.count == 3)
        let first = try #require(rows.first)
        #expect(first.requestID == "r1")
        #expect(first.route == "tickets/assigned")
        #expect(first.target == "6281234567890")
        #expect(first.message == "hello r1")
        #expect(first.priority == "normal")
        #expect(first.provider == "fonnte")
        #expect(first.status == "pending")
        #expect(first.failover == false)
        #expect(first.attempts == 0)
        #expect(first.retries == 0)
        #expect(first.createdAt == "2026-11-25T08:00:00.000Z")
        #expect(first.updatedAt == first.createdAt)
        #expect(first.sentAt == nil && first.nextAttemptAt == nil && first.inFlightSince == nil)
    }

    @Test func claimDueOrdersByPriorityThenIDAndMarksInFlight() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        _ = try store.accept([
            delivery("bulk", priority: .bulk),
            delivery("normal-1"),
            delivery("critical", priority: .critical),
            delivery("normal-2"),
            delivery("rejected", status: .rejected),
            delivery("disabled", status: .disabled),
        ])
        let firstTwo = try store.claimDueInTargetOrder(now: at(1), limit: 2, busyTargets: [])
        #expect(firstTwo.map(\.requestID) == ["critical", "normal-1"])
        let rest = try store.claimDueInTargetOrder(now: at(1), limit: 10, busyTargets: [])
        #expect(rest.map(\.requestID) == ["normal-2", "bulk"])
        #expect(try store.claimDueInTargetOrder(now: at(2), limit: 10, busyTargets: []).isEmpty)
        let claimed = try store.notifications().filter { $0.inFlightSince != nil }
        #expect(claimed.count == 4)
        #expect(claimed.allSatisfy { $0.inFlightSince == at(1).rfc3339 })
        #expect(try store.nextRetryTime() == nil)

        let record = try #require(firstTwo.first)
        #expect(record.priority == .critical)
        #expect(record.status == .pending)
        #expect(record.createdAt == t0)
        #expect(record.message == "hello critical")

        // Hand back: due again at once.
        try store.release(notificationID: record.id)
        #expect(try store.nextRetryTime() == nil)
        #expect(try store.claimDueInTargetOrder(now: at(3), limit: 10, busyTargets: []).map(\.id) == [record.id])
    }

    @Test func attemptsAreRecordedBeforeAndAfterTheRequest() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .full)
        _ = try store.accept([delivery("r1")])
        let record = try #require(try store.claimDueInTargetOrder(now: at(1), limit: 1, busyTargets: []).first)
        let attemptID = try store.beginAttempt(notificationID: record.id, provider: .fonnte, at: at(2))
        let pending = try store.attempts(notificationID: record.id)
        #expect(pending.count == 1)
        #expect(pending.first?.outcome == nil)
        #expect(pending.first?.attemptedAt == at(2).rfc3339)
        #expect(try store.hasUnknownAttempt(notificationID: record.id) == false)

        try store.completeAttempt(
            attemptID: attemptID, notificationID: record.id,
            result: AttemptResult(provider: .fonnte, outcome: .unknown, error: "timeout", httpStatus: nil, latencyMs: 1500),
            events: [event("failover-1", topic: "notify/result/whatsapp/failover/tickets/assigned")])
        let done = try #require(try store.attempts(notificationID: record.id).first)
        #expect(done.id == attemptID)
        #expect(done.notificationID == record.id)
        #expect(done.provider == "fonnte")
        #expect(done.outcome == "unknown")
        #expect(done.error == "timeout")
        #expect(done.httpStatus == nil)
        #expect(done.latencyMs == 1500)
        #expect(try store.hasUnknownAttempt(notificationID: record.id))
        let row = try #require(try store.notifications().first)
        #expect(row.attempts == 1)
        #expect(row.updatedAt == "2026-11-25T08:00:03.500Z")
        #expect(try store.outbox(after: 0, limit: 10).map(\.event.eventID) == ["failover-1"])

        let second = try store.beginAttempt(notificationID: record.id, provider: .wablas, at: at(4))
        try store.completeAttempt(
            attemptID: second, notificationID: record.id,
            result: AttemptResult(provider: .wablas, outcome: .accepted, error: nil, httpStatus: 200, latencyMs: 80),
            events: [])
        #expect(try store.attempts(notificationID: record.id).map(\.outcome) == ["unknown", "accepted"])
        #expect(try store.notifications().first?.attempts == 2)

        #expect(throws: StoreError.self) {
            try store.completeAttempt(
                attemptID: 999, notificationID: record.id,
                result: AttemptResult(provider: .woowa, outcome: .accepted, error: nil, httpStatus: 200, latencyMs: 1),
                events: [])
        }
    }

    @Test func recoverInterruptedTurnsOpenAttemptsIntoUnknownAndFreesRows() throws {
        let dir = try Scratch()
        do {
            let store = try Store(path: dir.database, sync: .full)
            _ = try store.accept([delivery("r1"), delivery("r2")])
            let claimed = try store.claimDueInTargetOrder(now: at(1), limit: 2, busyTargets: [])
            #expect(claimed.count == 2)
            _ = try store.beginAttempt(notificationID: claimed[0].id, provider: .fonnte, at: at(2))
            // "Crash": the store goes away with a claimed row and an attempt without outcome.
        }
        let store = try Store(path: dir.database, sync: .full)
        #expect(try store.claimDueInTargetOrder(now: at(10), limit: 10, busyTargets: []).isEmpty)
        #expect(try store.recoverInterrupted(now: at(10)) == 1)
        let rows = try store.notifications()
        #expect(rows.allSatisfy { $0.inFlightSince == nil && $0.status == "pending" })
        #expect(rows.map(\.attempts) == [1, 0])
        let attempt = try #require(try store.attempts(notificationID: rows[0].id).first)
        #expect(attempt.outcome == "unknown")
        #expect(attempt.error == "interrupted")
        #expect(try store.hasUnknownAttempt(notificationID: rows[0].id))
        #expect(try store.claimDueInTargetOrder(now: at(10), limit: 10, busyTargets: []).map(\.requestID) == ["r1", "r2"])
        #expect(try store.recoverInterrupted(now: at(11)) == 0)
    }

    /// The delivery loop sleeps until the earliest waiting retry; a claim that came up short reads it in
    /// its own transaction, one that took all it was asked for does not.
    @Test func aShortClaimAlsoReadsTheNextRetry() async throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        _ = try store.accept([delivery("r1"), delivery("r2")])
        let first = try store.claimDueInTargetOrder(now: at(1), limit: 1, busyTargets: [])
        try store.finishRound(
            notificationID: first[0].id, status: .retrying, provider: "fonnte", failover: false,
            errorMessage: "timeout", sentAt: nil, nextAttemptAt: at(300), retries: 1, at: at(2), events: [])

        let full = try await store.claimDueGrouped(now: at(3), limit: 1, busyTargets: [], firstAttempt: nil)
        #expect(full.records.map(\.requestID) == ["r2"])
        #expect(full.nextRetry == nil)

        let short = try await store.claimDueGrouped(now: at(4), limit: 5, busyTargets: [], firstAttempt: nil)
        #expect(short.records.isEmpty)
        #expect(short.nextRetry == at(300))

        let due = try await store.claimDueGrouped(now: at(300), limit: 5, busyTargets: [], firstAttempt: nil)
        #expect(due.records.map(\.requestID) == ["r1"])
        #expect(due.nextRetry == nil, "the only waiting retry was just claimed")
    }

    /// A round's end wakes the delivery loop only when a claim could take something more; the claim
    /// says whether every due row is already in flight.
    @Test func aClaimTellsWhetherItTookEveryDueRow() async throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        _ = try store.accept([delivery("a1"), delivery("b1")])
        let both = try await store.claimDueGrouped(now: at(1), limit: 10, busyTargets: [], firstAttempt: nil)
        #expect(both.records.count == 2)
        #expect(both.tookEveryDueRow)

        _ = try store.accept([delivery("c1"), delivery("c2", target: ownTarget(for: "c1"))])
        let sameTarget = try await store.claimDueGrouped(now: at(2), limit: 10, busyTargets: [], firstAttempt: nil)
        #expect(sameTarget.records.map(\.requestID) == ["c1"])
        #expect(!sameTarget.tookEveryDueRow, "c2 waits for c1's round")

        _ = try store.accept([delivery("d1"), delivery("e1")])
        let busy = try await store.claimDueGrouped(
            now: at(3), limit: 10, busyTargets: [ownTarget(for: "c1")], firstAttempt: nil)
        #expect(busy.records.map(\.requestID) == ["d1", "e1"])
        #expect(!busy.tookEveryDueRow, "rows of a busy target are left out unseen")

        _ = try store.accept([delivery("f1"), delivery("g1")])
        let short = try await store.claimDueGrouped(now: at(4), limit: 1, busyTargets: [], firstAttempt: nil)
        #expect(short.records.map(\.requestID) == ["c2"])
        #expect(!short.tookEveryDueRow, "two rows wait for a slot")

        let rest = try await store.claimDueGrouped(now: at(5), limit: 10, busyTargets: [], firstAttempt: nil)
        #expect(rest.records.map(\.requestID) == ["f1", "g1"])
        #expect(rest.tookEveryDueRow)
    }

    @Test func finishRoundRecordsTheOutcomeAndSchedulesRetries() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        _ = try store.accept([delivery("r1"), delivery("r2")])
        let claimed = try store.claimDueInTargetOrder(now: at(1), limit: 2, busyTargets: [])

        try store.finishRound(
            notificationID: claimed[0].id, status: .sent, provider: "wablas", failover: true, errorMessage: nil,
            sentAt: at(2), nextAttemptAt: nil, retries: 0, at: at(2), events: [event("delivered-1")])
        try store.finishRound(
            notificationID: claimed[1].id, status: .retrying, provider: "fonnte", failover: false,
            errorMessage: "Both failed: Primary (timeout), Backup (invalid token)", sentAt: nil,
            nextAttemptAt: at(300), retries: 1, at: at(2), events: [event("failed-2")])

        let rows = try store.notifications()
        #expect(rows[0].status == "sent")
        #expect(rows[0].provider == "wablas")
        #expect(rows[0].failover)
        #expect(rows[0].sentAt == at(2).rfc3339)
        #expect(rows[0].updatedAt == at(2).rfc3339)
        #expect(rows[0].inFlightSince == nil)
        #expect(rows[1].status == "retrying")
        #expect(rows[1].errorMessage == "Both failed: Primary (timeout), Backup (invalid token)")
        #expect(rows[1].nextAttemptAt == at(300).rfc3339)
        #expect(rows[1].retries == 1)
        #expect(rows[1].inFlightSince == nil)
        #expect(try store.outbox(after: 0, limit: 10).map(\.event.eventID) == ["delivered-1", "failed-2"])

        // The retry is due at its time, not before; the sent row never again.
        #expect(try store.nextRetryTime() == at(300))
        #expect(try store.claimDueInTargetOrder(now: at(299), limit: 10, busyTargets: []).isEmpty)
        let retry = try store.claimDueInTargetOrder(now: at(300), limit: 10, busyTargets: [])
        #expect(retry.map(\.requestID) == ["r2"])
        #expect(retry.first?.status == .retrying)
        #expect(retry.first?.retries == 1)

        #expect(throws: StoreError.self) {
            try store.finishRound(
                notificationID: 999, status: .sent, provider: "fonnte", failover: false, errorMessage: nil,
                sentAt: at(3), nextAttemptAt: nil, retries: 0, at: at(3), events: [])
        }
    }

    @Test func outboxPagesInIDOrderAndDeletes() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        let replyTopic = "app/replies/42"
        _ = try store.accept([
            delivery("r1", events: [event("e1"), event("e1", topic: replyTopic)]),
            delivery("r2", events: [event("e2")]),
            delivery("r3", events: [event("e3")]),
        ])
        #expect(try store.outboxCount() == 4)
        let page1 = try store.outbox(after: 0, limit: 2)
        #expect(page1.map(\.event.eventID) == ["e1", "e1"])
        #expect(page1.map(\.event.topic) == ["notify/result/whatsapp/delivered/tickets/assigned", replyTopic])
        #expect(page1[0].event.payload == Array("{\"event_id\":\"e1\"}".utf8))
        let page2 = try store.outbox(after: try #require(page1.last).id, limit: 2)
        #expect(page2.map(\.event.eventID) == ["e2", "e3"])
        #expect(try store.outbox(after: try #require(page2.last).id, limit: 2).isEmpty)

        try store.deleteOutbox(id: page1[0].id)
        try store.deleteOutbox(id: page1[0].id)  // already gone: fine
        #expect(try store.outboxCount() == 3)
        #expect(try store.outbox(after: 0, limit: 10).map(\.id) == [page1[1].id] + page2.map(\.id))
    }

    @Test func fullDatabaseIsAStoreFullError() throws {
        let dir = try Scratch()
        let store = try Store(path: dir.database, sync: .normal)
        _ = try store.accept([delivery("first")])
        _ = try store.limitPageCount(try #require(Int(exactly: 16)))
        let big = String(repeating: "x", count: 4000)
        var failure: StoreError?
        for i in 0..<200 {
            do {
                var d = delivery("r\(i)")
                d.message = big
                _ = try store.accept([d])
            } catch {
                failure = error
                break
            }
        }
        let error = try #require(failure)
        #expect(error.code == .full)
        #expect(error.message.hasPrefix("store full: "))
        #expect(!error.message.contains(big.prefix(20)))
        // The failed transaction was rolled back; the store still answers.
        #expect(try store.integrityCheck() == "ok")
        #expect(try store.notifications().count < 200)
    }
}
