import Testing

@testable import KurirCore

@Suite struct RetryPolicyTests {
    let policy = RetryPolicy()

    @Test(arguments: [(1, 300), (2, 600), (3, 1200), (4, 2400), (5, 3600), (6, 3600), (8, 3600), (100, 3600), (0, 300)])
    func delaysDoubleUpToTheCap(retry: Int, seconds: Int) {
        #expect(policy.delay(beforeRetry: retry, jitter: 0) == .seconds(seconds))
    }

    @Test func jitterBounds() {
        #expect(policy.delay(beforeRetry: 1, jitter: 1) == .seconds(330))
        #expect(policy.delay(beforeRetry: 1, jitter: -1) == .seconds(270))
        #expect(policy.delay(beforeRetry: 9, jitter: 1) == .seconds(3960))
        #expect(policy.delay(beforeRetry: 9, jitter: -1) == .seconds(3240))
        #expect(policy.delay(beforeRetry: 1, jitter: 5) == .seconds(330))  // clamped
        #expect(policy.delay(beforeRetry: 1, jitter: -5) == .seconds(270))
        #expect(policy.delay(beforeRetry: 1, jitter: .nan) == .seconds(300))
        for step in -10...10 {
            let jitter = Double(step) / 10
            let delay = policy.delay(beforeRetry: 2, jitter: jitter)
            #expect(delay >= .seconds(540) && delay <= .seconds(660))
        }
    }

    @Test func smallCapAndZeroDelayNeverNegative() {
        let tight = RetryPolicy(firstDelay: .seconds(10), maxDelay: .seconds(5), maxRetries: 2)
        #expect(tight.delay(beforeRetry: 1, jitter: 0) == .seconds(5))
        let zero = RetryPolicy(firstDelay: .zero, maxDelay: .zero, maxRetries: 1)
        #expect(zero.delay(beforeRetry: 3, jitter: -1) == .zero)
    }
}

@Suite struct TimestampTests {
    @Test(arguments: [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_795_593_600_123, "2026-11-25T08:00:00.123Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    ])
    func roundTrip(ms: Int64, text: String) {
        let timestamp = Timestamp(millisecondsSinceEpoch: ms)
        #expect(timestamp.rfc3339 == text)
        #expect(Timestamp(rfc3339: text) == timestamp)
    }

    /// The formatter writes digits into a buffer; the parser reads them back independently.
    @Test func randomTimesRoundTripThroughTheirText() {
        var generator = SystemRandomNumberGenerator()
        let earliest: Int64 = -62_167_219_200_000  // 0000-01-01T00:00:00.000Z
        for _ in 0..<10_000 {
            let time = Timestamp(millisecondsSinceEpoch: Int64.random(in: earliest...253_402_300_799_999, using: &generator))
            let text = time.rfc3339
            #expect(text.utf8.count == 24)
            #expect(Timestamp(rfc3339: text) == time)
        }
    }

    @Test(arguments: [
        "2026-11-25T08:00:00Z", "2026-11-25T08:00:00.12Z", "2026-11-25T08:00:00.123+00:00", "2026-13-01T00:00:00.000Z",
        "2026-02-29T00:00:00.000Z", "2026-11-25 08:00:00.123Z", "2026-11-25T24:00:00.000Z", "", "2026-11-25T08:00:00.1a3Z",
    ])
    func rejectsOtherFormats(text: String) {
        #expect(Timestamp(rfc3339: text) == nil)
    }

    @Test func arithmeticAndOrder() {
        let t = Timestamp(millisecondsSinceEpoch: 1000)
        #expect(t.adding(.seconds(300)).millisecondsSinceEpoch == 301_000)
        #expect(t.adding(.milliseconds(-1500)).millisecondsSinceEpoch == -500)
        #expect(t.adding(.seconds(2)).milliseconds(since: t) == 2000)
        #expect(t < t.adding(.milliseconds(1)))
        // Text order equals time order.
        let times = [0, 999, 1000, 59_999, 86_400_000, 1_795_593_600_123].map { Timestamp(millisecondsSinceEpoch: $0) }
        #expect(times.map(\.rfc3339) == times.map(\.rfc3339).sorted())
    }
}

@Suite struct SecretTests {
    @Test func neverPrints() {
        let secret = Secret("hunter2-token")
        #expect(secret.description == "****")
        #expect(secret.debugDescription == "****")
        #expect("\(secret)" == "****")
        #expect(String(describing: secret) == "****")
        #expect(String(reflecting: secret) == "****")
        var dumped = ""
        dump(secret, to: &dumped)
        #expect(!dumped.contains("hunter2"))
        #expect(Mirror(reflecting: secret).children.isEmpty)
        let gateway = GatewayConfig(provider: .fonnte, role: .primary, token: secret, url: "https://x")
        #expect(!"\(gateway)".contains("hunter2"))
        var dumpedGateway = ""
        dump(gateway, to: &dumpedGateway)
        #expect(!dumpedGateway.contains("hunter2"))
        #expect(secret.reveal() == "hunter2-token")
    }
}

@Suite struct EventTests {
    let at = Timestamp(millisecondsSinceEpoch: 1_795_593_600_123)
    let attempts = [
        AttemptResult(provider: .fonnte, outcome: .unknown, error: "timeout", httpStatus: nil, latencyMs: 10_000),
        AttemptResult(provider: .wablas, outcome: .accepted, error: nil, httpStatus: 200, latencyMs: 250),
    ]

    func head(_ kind: String, route: String = "tickets/assigned") -> [JSONMember] {
        [
            JSONMember("event", .string(kind)), JSONMember("event_id", .string("e-1")), JSONMember("id", .string("req-1")),
            JSONMember("route", .string(route)), JSONMember("at", .string("2026-11-25T08:00:00.123Z")),
        ]
    }

    var attemptsJSON: JSONValue {
        .array([
            .object([
                JSONMember("provider", .string("fonnte")), JSONMember("outcome", .string("unknown")),
                JSONMember("error", .string("timeout")), JSONMember("http_status", .null),
                JSONMember("latency_ms", .integer(10_000)),
            ]),
            .object([
                JSONMember("provider", .string("wablas")), JSONMember("outcome", .string("accepted")),
                JSONMember("error", .null), JSONMember("http_status", .integer(200)), JSONMember("latency_ms", .integer(250)),
            ]),
        ])
    }

    @Test func delivered() {
        let event = Event.delivered(
            eventID: "e-1", requestID: "req-1", route: "tickets/assigned", at: at, target: "6281234567890",
            provider: .wablas, failover: true, attempts: attempts, latencyMs: 10_300, possibleDuplicate: true)
        #expect(
            event.json
                == .object(
                    head("delivered") + [
                        JSONMember("target", .string("6281234567890")), JSONMember("provider", .string("wablas")),
                        JSONMember("failover", .bool(true)), JSONMember("attempts", attemptsJSON),
                        JSONMember("latency_ms", .integer(10_300)), JSONMember("possible_duplicate", .bool(true)),
                    ]))
        #expect(event.topic(prefix: "notify/result/whatsapp") == "notify/result/whatsapp/delivered/tickets/assigned")
    }

    @Test func failover() {
        let event = Event.failover(
            eventID: "e-1", requestID: "req-1", route: "tickets/assigned", at: at, target: "6281234567890",
            notice: FailoverNotice(from: .fonnte, to: .wablas, error: "timeout"))
        #expect(
            event.json
                == .object(
                    head("failover") + [
                        JSONMember("target", .string("6281234567890")), JSONMember("from", .string("fonnte")),
                        JSONMember("to", .string("wablas")), JSONMember("error", .string("timeout")),
                    ]))
    }

    @Test func failedWithAndWithoutRetry() {
        let retrying = Event.failed(
            eventID: "e-1", requestID: "req-1", route: "tickets/assigned", at: at, target: "6281234567890",
            attempts: attempts, retryAt: at.adding(.seconds(300)), retriesLeft: 8)
        #expect(
            retrying.json
                == .object(
                    head("failed") + [
                        JSONMember("target", .string("6281234567890")), JSONMember("attempts", attemptsJSON),
                        JSONMember("retry_at", .string("2026-11-25T08:05:00.123Z")), JSONMember("retries_left", .integer(8)),
                    ]))
        let last = Event.failed(
            eventID: "e-1", requestID: "req-1", route: "tickets/assigned", at: at, target: "6281234567890",
            attempts: attempts, retryAt: nil, retriesLeft: 0)
        #expect(last.json["retry_at"] == .null)
        #expect(last.json["retries_left"] == .integer(0))
    }

    @Test func rejectedAndSkippedWithEmptyRoute() {
        let rejected = Event.rejected(eventID: "e-1", requestID: "req-1", route: "", at: at, reason: "target is required")
        #expect(rejected.json == .object(head("rejected", route: "") + [JSONMember("reason", .string("target is required"))]))
        #expect(rejected.topic(prefix: "notify/result/whatsapp") == "notify/result/whatsapp/rejected")
        let skipped = Event.skipped(eventID: "e-1", requestID: "req-1", route: "x", at: at, target: "6281234567890")
        #expect(skipped.json == .object(head("skipped", route: "x") + [JSONMember("target", .string("6281234567890"))]))
        #expect(skipped.kind == .skipped)
        #expect(skipped.topic(prefix: "p") == "p/skipped/x")
    }
}

@Suite struct SpaceTests {
    /// The ASCII shortcut must answer exactly as Unicode's White_Space property.
    @Test func isSpaceMatchesTheUnicodeProperty() {
        let scalars = (0...0x3000).compactMap(Unicode.Scalar.init)
        for scalar in scalars {
            #expect(scalar.isSpace == scalar.properties.isWhitespace, "U+\(String(scalar.value, radix: 16))")
        }
    }

    @Test func blankAndTrimmedAgree() {
        for text in ["", " ", "\t\r\n", "\u{00A0}\u{3000}", " x ", "x", "\u{2028}y"] {
            #expect(text.isBlank == text.trimmingSpaces().isEmpty)
        }
        #expect(" \u{00A0}0812 \t".trimmingSpaces() == "0812")
    }
}
