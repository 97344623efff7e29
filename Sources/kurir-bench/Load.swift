import Foundation
import KurirCore
import KurirJSON
import KurirMQTT
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A fixed-size table of nanosecond times, one slot per request index.
///
/// `@unchecked Sendable`: each slot is written by one thread (publisher or receiver) and read only after
/// the run has finished (`poll` on an atomic counter orders the reads after the writes).
final class TimeTable: @unchecked Sendable {
    let count: Int
    private let slots: UnsafeMutableBufferPointer<Int64>

    init(count: Int) {
        self.count = count
        slots = .allocate(capacity: max(1, count))
        slots.initialize(repeating: 0)
    }

    deinit { slots.deallocate() }

    subscript(index: Int) -> Int64 {
        get { slots[index] }
        set { slots[index] = newValue }
    }
}

/// The load generator: one QoS 1 MQTT publisher, counting the broker's acknowledgements.
final class LoadGenerator: Sendable {
    private final class Counters: Sendable {
        let acknowledged = Atomic<Int>(0)
        let connected = Atomic<Bool>(false)
        let lastAckNanos = Atomic<Int64>(0)
    }

    private let client: MQTTClient
    private let counters = Counters()
    var acknowledged: Int { counters.acknowledged.load(ordering: .relaxed) }
    var lastAckNanos: Int64 { counters.lastAckNanos.load(ordering: .relaxed) }

    init(port: Int, name: String) throws {
        var options = MQTTConnectOptions(host: "127.0.0.1", port: port, clientID: "bench-\(name)-\(getpid())")
        options.cleanSession = true
        // libmosquitto walks its outgoing list up to the window on every PUBACK: with 4096 the walk took
        // half of the generator's CPU (perf) and held it to ≈ 22,000 publishes/s alone; 64 keeps loopback
        // busy (≈ 52,000/s alone).
        options.maxInflightMessages = 64
        client = try MQTTClient(options: options)
        let counters = self.counters
        client.setPublishedHandler { _ in
            counters.acknowledged.add(1, ordering: .relaxed)
            counters.lastAckNanos.store(monotonicNanos(), ordering: .relaxed)
        }
        client.setConnectHandler { code, _ in counters.connected.store(code == 0, ordering: .relaxed) }
        try client.start()
        guard poll(timeout: .seconds(10), { counters.connected.load(ordering: .relaxed) }) else {
            throw BenchError("load generator could not connect")
        }
    }

    /// Publishes `count` messages; `rate` nil = as fast as possible, else paced at that many per second.
    /// Records each send time in `sent`.
    func run(count: Int, rate: Double?, sent: TimeTable, topic: (Int) -> String, payload: (Int) -> [UInt8]) throws {
        let start = monotonicNanos()
        for i in 0..<count {
            if let rate {
                let due = start + Int64(Double(i) / rate * 1e9)
                while true {
                    let now = monotonicNanos()
                    if now >= due { break }
                    let wait = due - now
                    if wait > 200_000 { usleep(UInt32(wait / 1000 - 100)) }
                }
            }
            sent[i] = monotonicNanos()
            _ = try client.publish(topic: topic(i), payload: payload(i), qos: 1)
        }
    }

    func publish(topic: String, payload: [UInt8]) throws {
        _ = try client.publish(topic: topic, payload: payload, qos: 1)
    }

    func stop() { client.stop() }
}

/// A subscriber that stamps the arrival of each request's result (or, for the relay ceiling, of each
/// message) by request index.
final class ArrivalSink: Sendable {
    enum Mode: Sendable { case relay, events }

    final class Counters: Sendable {
        let received = Atomic<Int>(0)
        let counted = Atomic<Int>(0)
        let failed = Atomic<Int>(0)
        let warmups = Atomic<Int>(0)
        let failovers = Atomic<Int>(0)
        let subscribed = Atomic<Bool>(false)
    }

    private let client: MQTTClient
    let arrivals: TimeTable
    let counters = Counters()
    /// Requests of this run with their result recorded.
    var counted: Int { counters.counted.load(ordering: .acquiring) }
    var failed: Int { counters.failed.load(ordering: .relaxed) }
    var warmups: Int { counters.warmups.load(ordering: .relaxed) }
    /// `delivered` events of this run saying `failover: true`.
    var failovers: Int { counters.failovers.load(ordering: .relaxed) }

    /// Ids look like "<prefix>-<index>"; anything else (warm-ups) counts in `warmups` only.
    init(port: Int, filter: String, mode: Mode, prefix: String, count: Int) throws {
        arrivals = TimeTable(count: count)
        var options = MQTTConnectOptions(host: "127.0.0.1", port: port, clientID: "bench-sink-\(prefix)-\(getpid())")
        options.cleanSession = true
        client = try MQTTClient(options: options)
        let idPrefix = prefix + "-"
        let counters = self.counters
        let arrivals = self.arrivals
        client.setMessageHandler { message in
            let now = monotonicNanos()
            counters.received.add(1, ordering: .relaxed)
            guard let json = try? JSONCodec.decode(message.payload), case .string(let id)? = json["id"] else { return }
            if mode == .events {
                guard case .string(let kind)? = json["event"] else { return }
                if kind == "failed" { counters.failed.add(1, ordering: .relaxed) }
                guard kind == "delivered" else { return }
            }
            guard id.hasPrefix(idPrefix), let index = Int(id.dropFirst(idPrefix.count)), index >= 0,
                index < arrivals.count
            else {
                counters.warmups.add(1, ordering: .relaxed)
                return
            }
            if arrivals[index] == 0 {
                if mode == .events, case .bool(true)? = json["failover"] {
                    counters.failovers.add(1, ordering: .relaxed)
                }
                arrivals[index] = now
                counters.counted.add(1, ordering: .releasing)
            }
        }
        let client = self.client
        client.setConnectHandler { code, _ in
            guard code == 0 else { return }
            try? client.subscribe(filter, qos: 1)
            counters.subscribed.store(true, ordering: .relaxed)
        }
        try client.start()
        guard poll(timeout: .seconds(10), { counters.subscribed.load(ordering: .relaxed) }) else {
            throw BenchError("subscriber could not connect")
        }
        // The SUBACK is not reported; give the broker a moment to register the subscription.
        usleep(100_000)
    }

    func stop() { client.stop() }
}

/// Latency percentiles of one run or of several pooled, milliseconds.
struct Latency: Sendable {
    var p50: Double
    var p99: Double
    var max: Double
    /// Each request's latency, nanoseconds, sorted.
    let samples: [Int64]

    init(sent: TimeTable, arrived: TimeTable) {
        var values: [Int64] = []
        values.reserveCapacity(sent.count)
        for i in 0..<sent.count where arrived[i] > 0 && sent[i] > 0 {
            values.append(arrived[i] - sent[i])
        }
        self.init(samples: values)
    }

    /// The percentiles over every request of `runs`.
    static func pooled(_ runs: [Latency]) -> Latency { Latency(samples: runs.flatMap(\.samples)) }

    private init(samples: [Int64]) {
        let values = samples.sorted()
        self.samples = values
        func at(_ q: Double) -> Double {
            guard !values.isEmpty else { return .nan }
            let index = Swift.min(values.count - 1, Int((Double(values.count) * q).rounded(.up)) - 1)
            return Double(values[Swift.max(0, index)]) / 1e6
        }
        p50 = at(0.50)
        p99 = at(0.99)
        self.max = values.last.map { Double($0) / 1e6 } ?? .nan
    }
}

/// The request every run publishes: one target per request, distinct targets.
enum Workload {
    static func payload(prefix: String, index: Int) -> [UInt8] {
        let digits = String(index)
        let target = "62812" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
        return Array(#"{"id":"\#(prefix)-\#(index)","target":"\#(target)","message":"bench alert \#(index): site down"}"#.utf8)
    }

    static func warmup(prefix: String, n: Int) -> [UInt8] {
        Array(#"{"id":"warm\#(prefix)x\#(n)","target":"6281299999999","message":"bench warm-up"}"#.utf8)
    }
}
