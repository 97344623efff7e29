import Benchmark
import KurirCore
import KurirJSON

// Inputs are built once, outside the measured loops, and checked up front: a benchmark that quietly
// measured a rejection or a parse error would report a fast path kurir never takes in production.

private let subscription = "notify/whatsapp/#"
private let topic = "notify/whatsapp/tickets/assigned"
private let validator = RequestValidator(
    defaultCountryCode: "62", subscription: subscription, resultPrefix: "notify/result/whatsapp")

private func payload(target: String) -> [UInt8] {
    Array(
        """
        {"id":"t-1","target":"\(target)","message":"Ticket #4711 assigned to you: site down at Jl. Sudirman \
        Kav. 52-53, Jakarta Selatan. No uplink since 08:40 WIB; call the NOC before dispatching a field team. \
        Ref INC-2026-004711.","priority":"critical","reply_to":"tickets/replies/4711"}
        """.utf8)
}

// One target in a local format, and a comma list mixing every format intake normalises.
private let singlePayload = payload(target: "0812-3456-7890")
private let listPayload = payload(
    target: "0812-3456-7890, +62 813 1111 2222, 6281555566667, (0857) 1234 5678, 120363041234567890@g.us")

private func decoded(_ bytes: [UInt8]) -> JSONValue {
    let value = try! JSONCodec.decode(bytes)
    guard case .accepted(let request) = validator.validate(topic: topic, payloadSize: bytes.count, decoded: .success(value))
    else { preconditionFailure("benchmark payload was rejected") }
    precondition(request.targets.count == (bytes == singlePayload ? 1 : 5), "unexpected target count")
    return value
}

// Bodies from spec/providers.md: each provider's success and a documented refusal, all under HTTP 200
// because success is decided from the body.
private struct ReplyCase: Sendable {
    let name: String
    let provider: Provider
    let body: [UInt8]
    let expected: AttemptOutcome
}

private let replyCases: [ReplyCase] = [
    ReplyCase(
        name: "fonnte success", provider: .fonnte,
        body: Array(
            #"{"status":true,"detail":"success! message in queue","id":["80367170"],"process":"pending","requestid":2937124,"target":["6282227097005"]}"#
                .utf8),
        expected: .accepted),
    ReplyCase(
        name: "fonnte refusal", provider: .fonnte, body: Array(#"{"Status":false,"reason":"token invalid"}"#.utf8),
        expected: .refused),
    ReplyCase(
        name: "wablas success", provider: .wablas,
        body: Array(
            #"{"status":true,"message":"Message is pending and waiting to be processed","data":{"device_id":"A5DOYJ","quota":88,"messages":[{"id":"5be46e84-6fd8-4a8f-b6c4-1c2a3b4c5d6e","phone":6281218444555,"message":"Ticket #4711 assigned to you","status":"pending","ref_id":null}]}}"#
                .utf8),
        expected: .accepted),
    ReplyCase(
        name: "wablas refusal", provider: .wablas,
        body: Array(#"{"status":false,"message":"token invalid or device expired"}"#.utf8), expected: .refused),
    ReplyCase(
        name: "woowa success", provider: .woowa,
        body: Array(
            #"{"code":200,"query":{"to":"+6281234567890","message":"Ticket #4711 assigned to you"},"results":{"id_message":"WOWA3EB0C4A1F2","serialized":"true_6281234567890@c.us_3EB0C4A1F2","type_chat":"personal","message":"Ticket #4711 assigned to you"}}"#
                .utf8),
        expected: .accepted),
    // Woowa's failures are undocumented; this is the shape kurir's fake gateway answers with.
    ReplyCase(
        name: "woowa refusal", provider: .woowa,
        body: Array(#"{"code":401,"message":"invalid key"}"#.utf8), expected: .refused),
]

// What the daemon does with every reply (GatewayCaller.reply, then the dialect): parse the body, then
// classify it. Measured together because neither happens without the other.
@inline(__always)
private func classify(_ reply: ReplyCase) -> AttemptResult {
    let json = try? JSONCodec.decode(reply.body)
    return Dialect.classify(
        provider: reply.provider, reply: .answered(status: 200, body: reply.body, json: json, truncated: false),
        latencyMs: 412)
}

// A failover delivery: one refused attempt, then the backup's success — the largest `delivered` event.
private let deliveredEvent = Event.delivered(
    eventID: "01J9ZK3Q4W5E6R7T8Y9U0I1O2P", requestID: "t-1", route: "tickets/assigned",
    at: Timestamp(millisecondsSinceEpoch: 1_767_225_600_123), target: "6281234567890", provider: .wablas,
    failover: true,
    attempts: [
        AttemptResult(provider: .fonnte, outcome: .refused, error: "token invalid", httpStatus: 200, latencyMs: 187),
        AttemptResult(provider: .wablas, outcome: .accepted, error: nil, httpStatus: 200, latencyMs: 412),
    ],
    latencyMs: 611, possibleDuplicate: false)

let benchmarks: @Sendable () -> Void = {
    // Per-operation figures need a thousand calls per sample: one call is far below the timer's resolution.
    // One second per benchmark keeps the whole set near 15 seconds of measuring.
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .throughput, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: 10,
        scalingFactor: .kilo,
        maxDuration: .seconds(1),
        maxIterations: 10_000)

    let single = decoded(singlePayload)
    let list = decoded(listPayload)
    for reply in replyCases {
        precondition(classify(reply).outcome == reply.expected, "\(reply.name) classified unexpectedly")
    }

    Benchmark("decode request (\(singlePayload.count) B)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! JSONCodec.decode(singlePayload))
        }
    }

    Benchmark("validate 1 target") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(validator.validate(topic: topic, payloadSize: singlePayload.count, decoded: .success(single)))
        }
    }

    Benchmark("validate 5 targets (comma list)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(validator.validate(topic: topic, payloadSize: listPayload.count, decoded: .success(list)))
        }
    }

    for reply in replyCases {
        Benchmark("classify \(reply.name)") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(classify(reply))
            }
        }
    }

    Benchmark("encode delivered event") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(JSONCodec.encode(deliveredEvent.json))
        }
    }
}
