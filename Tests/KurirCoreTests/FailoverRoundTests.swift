import Testing

@testable import KurirCore

let accepted = GatewayReply.answered(
    status: 200, body: [], json: .object([JSONMember("status", .bool(true))]), truncated: false)
let woowaAccepted = GatewayReply.answered(
    status: 200, body: [],
    json: .object([
        JSONMember("code", .integer(200)), JSONMember("results", .object([JSONMember("id_message", .string("W1"))])),
    ]), truncated: false)
func refusal(_ reason: String) -> GatewayReply {
    .answered(
        status: 200, body: [],
        json: .object([JSONMember("status", .bool(false)), JSONMember("reason", .string(reason))]), truncated: false)
}

struct Driven {
    var result: RoundResult
    var sentTo: [Int]
    var lines: [String]
    var notices: [FailoverNotice]
}

/// Runs a round, answering each `.send` with the next scripted reply.
func drive(_ chain: [GatewayConfig], target: Target = person, message: String = "hi", replies: [GatewayReply]) -> Driven {
    var round = FailoverRound(chain: chain, target: target, message: message, referenceID: "r-1")
    var replies = replies[...]
    var sentTo: [Int] = []
    var lines: [String] = []
    var notices: [FailoverNotice] = []
    while true {
        let step = round.next()
        lines += round.drainLogLines()
        notices += round.drainFailoverNotices()
        switch step {
        case .send(let index, _):
            sentTo.append(index)
            guard let reply = replies.popFirst() else {
                Issue.record("round asked for more sends than scripted")
                return Driven(
                    result: RoundResult(delivered: false, provider: .fonnte, failover: false, attempts: [], errorMessage: nil),
                    sentTo: sentTo, lines: lines, notices: notices)
            }
            _ = round.record(reply, latencyMs: 10)
            lines += round.drainLogLines()
            notices += round.drainFailoverNotices()
        case .finished(let result):
            #expect(round.attempts == result.attempts)
            #expect(replies.isEmpty, "unused scripted replies")
            return Driven(result: result, sentTo: sentTo, lines: lines, notices: notices)
        }
    }
}

@Suite struct FailoverRoundTests {
    @Test func primaryDelivers() {
        let run = drive([fonnte, wablas, woowa], replies: [accepted])
        #expect(run.result.delivered)
        #expect(run.result.provider == .fonnte)
        #expect(!run.result.failover)
        #expect(run.result.errorMessage == nil)
        #expect(run.sentTo == [0])
        #expect(run.lines == ["✅ WhatsApp sent to 6281234567890 via fonnte (primary)"])
        #expect(run.notices.isEmpty)
        #expect(
            run.result.attempts == [
                AttemptResult(provider: .fonnte, outcome: .accepted, error: nil, httpStatus: 200, latencyMs: 10)
            ])
    }

    @Test func backupDeliversAfterPrimaryRefuses() {
        let run = drive([fonnte, wablas], replies: [refusal("invalid group id"), accepted])
        #expect(run.result.delivered)
        #expect(run.result.provider == .wablas)
        #expect(run.result.failover)
        #expect(
            run.lines == [
                "⚠️ Primary provider fonnte failed, attempting failover to wablas...",
                "✅ WhatsApp sent to 6281234567890 via wablas (failover)",
            ])
        #expect(run.notices == [FailoverNotice(from: .fonnte, to: .wablas, error: "invalid group id")])
        #expect(run.result.attempts.map(\.outcome) == [.refused, .accepted])
    }

    @Test func tertiaryDeliversAfterTwoFailures() {
        let run = drive(
            [fonnte, wablas, woowa],
            replies: [.noAnswer(reason: "timeout"), .notSent(reason: "connection refused"), woowaAccepted])
        #expect(run.result.delivered)
        #expect(run.result.provider == .woowa)
        #expect(run.result.failover)
        #expect(
            run.lines == [
                "⚠️ Primary provider fonnte failed, attempting failover to wablas...",
                "⚠️ Backup provider wablas failed, attempting failover to woowa...",
                "✅ WhatsApp sent to 6281234567890 via woowa (failover)",
            ])
        #expect(
            run.notices == [
                FailoverNotice(from: .fonnte, to: .wablas, error: "timeout"),
                FailoverNotice(from: .wablas, to: .woowa, error: "connection refused"),
            ])
        #expect(run.result.attempts.map(\.outcome) == [.unknown, .refused, .accepted])
    }

    @Test func oneGatewayFails() {
        let run = drive([fonnte], replies: [refusal("invalid group id")])
        #expect(!run.result.delivered)
        #expect(run.result.provider == .fonnte)
        #expect(!run.result.failover)
        #expect(run.result.errorMessage == "invalid group id")
        #expect(run.lines == ["❌ WhatsApp failed to 6281234567890 via fonnte", "Error: invalid group id"])
        #expect(run.notices.isEmpty)
    }

    @Test func twoGatewaysFail() {
        let run = drive([fonnte, wablas], replies: [refusal("invalid group id"), .noAnswer(reason: "timeout")])
        #expect(!run.result.delivered)
        #expect(run.result.provider == .fonnte)
        #expect(run.result.errorMessage == "Both failed: Primary (invalid group id), Backup (timeout)")
        #expect(
            run.lines == [
                "⚠️ Primary provider fonnte failed, attempting failover to wablas...",
                "❌ Both providers failed. Primary: invalid group id, Backup: timeout",
            ])
        #expect(run.notices == [FailoverNotice(from: .fonnte, to: .wablas, error: "invalid group id")])
    }

    @Test func threeGatewaysFail() {
        let run = drive(
            [fonnte, wablas, woowa],
            replies: [
                refusal("insufficient quota"), .noAnswer(reason: "timeout"),
                .answered(status: 502, body: [], json: nil, truncated: false),
            ])
        #expect(!run.result.delivered)
        #expect(run.result.provider == .fonnte)
        #expect(run.result.errorMessage == "All failed: fonnte (insufficient quota), wablas (timeout), woowa (HTTP 502)")
        #expect(
            run.lines == [
                "⚠️ Primary provider fonnte failed, attempting failover to wablas...",
                "⚠️ Backup provider wablas failed, attempting failover to woowa...",
                "❌ All providers failed. fonnte: insufficient quota, wablas: timeout, woowa: HTTP 502",
            ])
        #expect(run.notices.count == 2)
    }

    @Test func sameProviderTwice() {
        var second = fonnte
        second.role = .backup
        second.token = Secret("F2")
        let run = drive([fonnte, second], replies: [refusal("insufficient quota"), accepted])
        #expect(run.result.provider == .fonnte)
        #expect(run.result.failover)
        #expect(run.lines.last == "✅ WhatsApp sent to 6281234567890 via fonnte (failover)")
    }

    @Test func wablasTooLongIsSkippedAsRefused() {
        let long = String(repeating: "a", count: 2000)
        let run = drive([wablas, fonnte], message: long, replies: [accepted])
        #expect(run.sentTo == [1])
        #expect(run.result.delivered)
        #expect(run.result.failover)
        #expect(
            run.result.attempts.first
                == AttemptResult(
                    provider: .wablas, outcome: .refused, error: "message longer than 1024 characters (wablas limit)",
                    httpStatus: nil, latencyMs: 0))
        #expect(
            run.lines == [
                "⚠️ Primary provider wablas failed, attempting failover to fonnte...",
                "✅ WhatsApp sent to 6281234567890 via fonnte (failover)",
            ])
        #expect(
            run.notices == [
                FailoverNotice(from: .wablas, to: .fonnte, error: "message longer than 1024 characters (wablas limit)")
            ])
    }

    @Test func onlyGatewaySkippedFinishesWithoutSending() {
        let run = drive([wablas], message: String(repeating: "a", count: 1025), replies: [])
        #expect(run.sentTo.isEmpty)
        #expect(!run.result.delivered)
        #expect(run.result.errorMessage == "message longer than 1024 characters (wablas limit)")
        #expect(
            run.lines == [
                "❌ WhatsApp failed to 6281234567890 via wablas", "Error: message longer than 1024 characters (wablas limit)",
            ])
    }

    @Test func gatewayTextCannotForgeLogLines() {
        let run = drive([fonnte], replies: [refusal("nope\n✅ WhatsApp sent to 62999 via fonnte (primary)\u{1B}[1A")])
        #expect(run.lines.count == 2)
        #expect(run.lines.allSatisfy { !$0.contains("\n") && !$0.contains("\u{1B}") })
        #expect(run.lines[1] == "Error: nope ✅ WhatsApp sent to 62999 via fonnte (primary)")
    }

    @Test func nextIsIdempotentUntilRecorded() {
        var round = FailoverRound(chain: [fonnte, wablas], target: person, message: "hi", referenceID: "r")
        guard case .send(0, let first) = round.next(), case .send(0, let again) = round.next() else {
            Issue.record("expected the primary twice")
            return
        }
        #expect(first == again)
        _ = round.record(refusal("x"), latencyMs: 1)
        guard case .send(1, _) = round.next() else {
            Issue.record("expected the backup")
            return
        }
        _ = round.record(accepted, latencyMs: 1)
        guard case .finished(let result) = round.next(), case .finished(let same) = round.next() else {
            Issue.record("expected finished")
            return
        }
        #expect(result == same)
        #expect(result.attempts.count == 2)
    }
}

@Suite struct OperatorLinesTests {
    @Test func formats() {
        #expect(
            OperatorLines.sent(target: "62812", provider: .woowa, failover: false)
                == "✅ WhatsApp sent to 62812 via woowa (primary)")
        #expect(
            OperatorLines.failingOver(position: 1, from: .wablas, to: .woowa)
                == "⚠️ Backup provider wablas failed, attempting failover to woowa...")
        let attempts = [
            AttemptResult(provider: .wablas, outcome: .refused, error: "a", httpStatus: 200, latencyMs: 1),
            AttemptResult(provider: .fonnte, outcome: .unknown, error: nil, httpStatus: nil, latencyMs: 1),
        ]
        #expect(OperatorLines.errorMessage(attempts) == "Both failed: Primary (a), Backup (unknown error)")
        #expect(
            OperatorLines.allFailed(target: "t\n", attempts: Array(attempts.prefix(1))) == [
                "❌ WhatsApp failed to t via wablas", "Error: a",
            ])
    }
}
