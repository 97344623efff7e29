import Foundation
import GRDB
import KurirCore
import KurirJSON
import KurirMQTT
import Synchronization

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
func waitUntil(timeout: Duration, _ condition: () throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try condition()
}

/// The producer: publishes requests with QoS 1 and counts what the broker acknowledged.
///
/// This is the producer's own view, independent of kurir: a request counts as acknowledged only when
/// its PUBACK came back. Unacknowledged requests are published again (same `id`) after `resendAfter`,
/// as a careful producer would.
final class Producer: Sendable {
    private struct State {
        var connected = false
        /// Key: client generation << 32 | message id.
        var inFlight: [Int64: (index: Int, sentAt: ContinuousClock.Instant)] = [:]
        var acked = Set<Int>()
        var generation = 0
        var lastAck = ContinuousClock.now
    }

    private let state = Locked(State())
    private let client = Locked<MQTTClient?>(nil)
    private let port: Int
    private let username: String?
    private let password: String?

    init(port: Int, username: String? = nil, password: String? = nil) throws {
        self.port = port
        self.username = username
        self.password = password
        try connectAgain()
    }

    /// A fresh client (new generation). Used at start, and when acknowledgements stall while connected:
    /// libmosquitto 2.0.11 can leave QoS 1 publishes queued forever after a broker restart, as a real
    /// producer would notice and reconnect.
    private func connectAgain() throws {
        let old = client.withLock { c -> MQTTClient? in
            let o = c
            c = nil
            return o
        }
        old?.stop()
        let generation = state.withLock { s -> Int in
            s.generation += 1
            s.connected = false
            s.inFlight = [:]
            s.lastAck = ContinuousClock.now
            return s.generation
        }
        var options = MQTTConnectOptions(
            host: "127.0.0.1", port: port, clientID: "chaos-producer-\(UUID().uuidString.prefix(8))")
        options.cleanSession = true
        options.username = username
        options.password = password
        let fresh = try MQTTClient(options: options)
        let state = self.state
        fresh.setConnectHandler { code, _ in
            state.withLock { if $0.generation == generation { $0.connected = code == 0 } }
        }
        fresh.setDisconnectHandler { _ in state.withLock { if $0.generation == generation { $0.connected = false } } }
        fresh.setPublishedHandler { mid in
            state.withLock { s in
                if let entry = s.inFlight.removeValue(forKey: Int64(generation) << 32 | Int64(mid)) {
                    s.acked.insert(entry.index)
                    s.lastAck = ContinuousClock.now
                }
            }
        }
        try fresh.start()
        client.withLock { $0 = fresh }
    }

    /// Indices acknowledged by the broker so far.
    var acknowledged: Set<Int> { state.withLock { $0.acked } }

    /// Requests the broker has acknowledged so far.
    var acknowledgedCount: Int { state.withLock { $0.acked.count } }

    /// Publishes every request; returns when all are acknowledged or `timeout` passed.
    @discardableResult
    func publishAll(
        _ requests: [ChaosRequest], window: Int = 200, timeout: Duration = .seconds(300),
        resendAfter: Duration = .seconds(10)
    ) async -> Set<Int> {
        var queue = Array(requests.indices.reversed())
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while ContinuousClock.now < deadline {
            let (connected, inFlight, ackedCount) = state.withLock { ($0.connected, $0.inFlight.count, $0.acked.count) }
            if ackedCount == requests.count { break }
            // Requeue what waited too long for its PUBACK (lost with a broker restart).
            let now = ContinuousClock.now
            let stalled = state.withLock { s in s.connected && !s.inFlight.isEmpty && now - s.lastAck > resendAfter * 2 }
            if stalled {
                let pending = state.withLock { s in s.inFlight.values.map(\.index).filter { !s.acked.contains($0) } }
                queue.append(contentsOf: pending)
                try? connectAgain()
                continue
            }
            let stale = state.withLock { s -> [Int] in
                let old = s.inFlight.filter { now - $0.value.sentAt > resendAfter }
                for key in old.keys { s.inFlight.removeValue(forKey: key) }
                return old.values.map(\.index).filter { !s.acked.contains($0) }
            }
            queue.append(contentsOf: stale)
            if !connected || inFlight >= window || queue.isEmpty {
                try? await Task.sleep(for: .milliseconds(5))
                continue
            }
            var budget = window - inFlight
            while budget > 0, let index = queue.popLast() {
                if state.withLock({ $0.acked.contains(index) }) { continue }
                let request = requests[index]
                do {
                    // The lock is held across publish so the PUBACK handler cannot run before the mid is known.
                    guard let client = client.withLock({ $0 }) else { throw ChaosError("no client") }
                    try state.withLock { s in
                        let mid = try client.publish(topic: request.topic, payload: request.payload, qos: 1)
                        s.inFlight[Int64(s.generation) << 32 | Int64(mid)] = (index, ContinuousClock.now)
                        if s.inFlight.count == 1 { s.lastAck = ContinuousClock.now }
                    }
                    budget -= 1
                } catch {
                    queue.append(index)
                    break
                }
            }
            await Task.yield()
        }
        return acknowledged
    }

    /// Publishes one payload and waits for its PUBACK (deadline 10 s).
    func publishOne(topic: String, payload: [UInt8]) async -> Bool {
        let request = ChaosRequest(index: 0, id: nil, topic: topic, payload: payload, targets: [], valid: false)
        let before = acknowledged.count
        _ = before
        return await publishAll([request], timeout: .seconds(10)).contains(0)
    }

    func stop() { client.withLock { $0 }?.stop() }
}

/// One request of a scenario, with what the producer expects: its normalised targets when valid.
struct ChaosRequest: Sendable {
    var index: Int
    var id: String?
    var topic: String
    var payload: [UInt8]
    var targets: [String]
    var valid: Bool

    /// A valid request to one unique number.
    static func simple(_ index: Int, scenario: String, extra: String = "") -> ChaosRequest {
        let target = ChaosRequest.number(index)
        let id = "\(scenario)-\(index)"
        let json = #"{"id":"\#(id)","target":"\#(target)","message":"chaos \#(scenario) \#(index)"\#(extra)}"#
        return ChaosRequest(
            index: index, id: id, topic: "notify/whatsapp/chaos/\(scenario)", payload: Array(json.utf8),
            targets: [target], valid: true)
    }

    /// A unique, valid Indonesian mobile number for index `i`.
    static func number(_ i: Int) -> String {
        let digits = String(i)
        return "62812" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }
}

/// What the result-event subscriber saw, counted per kind and request id; checks every payload for canaries.
final class EventRecorder: Sendable {
    struct Seen: Sendable {
        var byKind: [String: [String: Int]] = [:]
        var eventIDs: [String: Int] = [:]
        var possibleDuplicates = Set<String>()
        var finalFailed: [String: Int] = [:]
        var failedRetryAts: [String] = []
        var leaks = 0
        var total = 0
        var subscribed = false
    }

    private let client: MQTTClient
    private let seen = Locked(Seen())

    init(port: Int, canaries: [String], username: String? = nil, password: String? = nil) throws {
        let seen = self.seen
        // Persistent session: events published while a broker restart cut us off still arrive.
        client = try persistentSubscriber(
            port: port, clientID: "chaos-events-\(UUID().uuidString.prefix(8))", filter: "notify/result/whatsapp/#",
            username: username, password: password
        ) { seen.withLock { $0.subscribed = true } }
        client.setMessageHandler { message in
            let text = String(decoding: message.payload, as: UTF8.self) + message.topic
            let leaked = canaries.contains { text.contains($0) }
            guard let json = try? JSONCodec.decode(message.payload) else { return }
            let kind = json["event"]?.stringValue ?? "?"
            let id = (json["id"]?.stringValue ?? "") + "|" + (json["target"]?.stringValue ?? "")
            let eventID = json["event_id"]?.stringValue ?? ""
            seen.withLock { s in
                s.total += 1
                if leaked { s.leaks += 1 }
                guard message.topic.hasPrefix("notify/result/") else { return }
                s.byKind[kind, default: [:]][id, default: 0] += 1
                s.eventIDs[eventID, default: 0] += 1
                if kind == "delivered", json["possible_duplicate"] == .bool(true) { s.possibleDuplicates.insert(id) }
                if kind == "failed" {
                    if json["retry_at"] == .null {
                        s.finalFailed[id, default: 0] += 1
                    } else if let at = json["retry_at"]?.stringValue {
                        s.failedRetryAts.append(at)
                    }
                }
            }
        }
        try client.start()
    }

    var snapshot: Seen { seen.withLock { $0 } }

    /// Distinct (request id, target) pairs that got an event of `kind`.
    func distinct(_ kind: String) -> Int { seen.withLock { $0.byKind[kind]?.count ?? 0 } }

    /// Request ids (prefix before "|") with a `kind` event.
    func ids(_ kind: String) -> Set<String> {
        seen.withLock {
            Set(($0.byKind[kind] ?? [:]).keys.map { String($0.split(separator: "|", omittingEmptySubsequences: false)[0]) })
        }
    }

    func waitSubscribed() async -> Bool { await waitUntil(timeout: .seconds(10)) { seen.withLock { $0.subscribed } } }

    func stop() { client.stop() }
}

/// A client with a persistent session (clean session false) that subscribes to `filter` with QoS 1 again
/// on every CONNACK and then calls `subscribed`; set its message handler, then `start()` it.
func persistentSubscriber(
    port: Int, clientID: String, filter: String, username: String? = nil, password: String? = nil,
    subscribed: @escaping @Sendable () -> Void
) throws -> MQTTClient {
    var options = MQTTConnectOptions(host: "127.0.0.1", port: port, clientID: clientID)
    options.cleanSession = false
    options.username = username
    options.password = password
    let client = try MQTTClient(options: options)
    client.setConnectHandler { [weak client] code, _ in
        guard code == 0 else { return }
        try? client?.subscribe(filter, qos: 1)
        subscribed()
    }
    return client
}

/// A plain libmosquitto subscriber in kurir's place (the broker `kill -9` control): a persistent session
/// under a fixed client id, QoS 1 on `notify/whatsapp/#`, and the request ids it received, in memory.
/// It acknowledges as kurir does: the same `MQTTClient`, so the PUBACK goes out once the handler returned.
///
/// With `commitTo`, the handler commits one `INSERT` per message into a database of its own (WAL,
/// `synchronous=NORMAL`, as kurir runs in the suite); it then sleeps out the rest of `handlingTime`: kurir's
/// intake also shares its 2 cores with delivery, so a bare commit would still drain the broker faster,
/// and fewer acknowledged messages would wait in the broker's memory when it dies than with kurir.
final class RequestRecorder: Sendable {
    private struct Seen {
        var ids = Set<String>()
        /// Wall-clock milliseconds of each id's first arrival (kurir's `created_at` has the same resolution).
        var firstArrivals: [Int64] = []
        var messages = 0
        var commitFailures = 0
        var last = ContinuousClock.now
        var subscribed = false
    }

    private let client: MQTTClient
    private let seen = Locked(Seen())
    private let database: DatabaseQueue?

    init(port: Int, clientID: String, commitTo databasePath: String? = nil, handlingTime: Duration = .zero) throws {
        let seen = self.seen
        let database = try databasePath.map(Self.openDatabase)
        self.database = database
        client = try persistentSubscriber(port: port, clientID: clientID, filter: "notify/whatsapp/#") {
            seen.withLock { $0.subscribed = true }
        }
        client.setMessageHandler { message in
            let started = ContinuousClock.now
            let id = (try? JSONCodec.decode(message.payload))?["id"]?.stringValue ?? "?"
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            var committed = true
            if let database {
                do {
                    try database.write { db in
                        try db.cachedStatement(sql: "INSERT OR IGNORE INTO received (request_id, received_at) VALUES (?, ?)")
                            .execute(arguments: [id, now])
                    }
                } catch {
                    committed = false
                }
            }
            let rest = handlingTime - (ContinuousClock.now - started)
            if rest > .zero { usleep(UInt32(rest / .microseconds(1))) }
            seen.withLock { s in
                if !committed { s.commitFailures += 1 }
                if s.ids.insert(id).inserted { s.firstArrivals.append(now) }
                s.messages += 1
                s.last = ContinuousClock.now
            }
        }
        try client.start()
    }

    private static func openDatabase(_ path: String) throws -> DatabaseQueue {
        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.busyMode = .timeout(5)
        let queue = try DatabaseQueue(path: path, configuration: configuration)
        try queue.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            try db.execute(sql: "CREATE TABLE IF NOT EXISTS received (request_id TEXT PRIMARY KEY, received_at INTEGER NOT NULL)")
        }
        return queue
    }

    /// Distinct request ids received so far.
    var ids: Set<String> { seen.withLock { $0.ids } }

    /// Wall-clock milliseconds of each distinct request's first arrival.
    var firstArrivals: [Int64] { seen.withLock { $0.firstArrivals } }

    /// Messages received (redeliveries included).
    var messages: Int { seen.withLock { $0.messages } }

    /// Commits that failed (the message was acknowledged anyway: the control has no way to refuse).
    var commitFailures: Int { seen.withLock { $0.commitFailures } }

    /// When the last message arrived.
    var lastMessage: ContinuousClock.Instant { seen.withLock { $0.last } }

    /// Whether it is connected to the broker now.
    var isConnected: Bool { client.isConnected }

    func waitSubscribed() async -> Bool { await waitUntil(timeout: .seconds(10)) { seen.withLock { $0.subscribed } } }

    func stop() {
        client.stop()
        try? database?.close()
    }
}

extension JSONValue {
    var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }
}

/// A mutex-guarded value that escaping closures can share (a `Mutex` itself cannot be captured).
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R, E: Error>(_ body: (inout sending Value) throws(E) -> sending R) throws(E) -> sending R {
        try mutex.withLock(body)
    }
}
