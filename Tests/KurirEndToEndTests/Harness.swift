import Foundation
import KurirCore
import KurirJSON
import KurirMQTT
import KurirStore
import KurirTestSupport
import Synchronization
import Testing

/// Canary secrets: the whole suite runs with these, and none may appear in any output.
enum Canary {
    static let fonnte = "CANARY-fonnte-7f3a9c"
    static let wablas = "CANARY-wablas-1b2d4e.SECRET-88aa"
    static let woowa = "CANARY-woowa-5c6d7e"
    static func token(_ provider: Provider) -> String {
        switch provider {
        case .fonnte: fonnte
        case .wablas: wablas
        case .woowa: woowa
        }
    }

    /// A fake gateway behaviour that checks the provider's canary token.
    static func behaviour(
        _ provider: Provider, _ mode: FakeBehaviour.Mode = .succeed, reason: String? = nil, latencyMs: Int = 0
    ) -> FakeBehaviour {
        var behaviour = FakeBehaviour()
        behaviour.expectedToken = token(provider)
        behaviour.mode = mode
        if let reason { behaviour.reason = reason }
        behaviour.latencyMs = latencyMs
        return behaviour
    }

    static let all = [fonnte, wablas, woowa, "CANARY-wablas-1b2d4e", "SECRET-88aa"]
}

/// One isolated world for an end-to-end test: a real broker, the fake gateways, and kurir as a child process.
final class World: @unchecked Sendable {
    let broker: TestBroker
    let gateways: FakeGateway
    let directory: String
    let events: EventRecorder
    private(set) var kurir: ChildProcess?
    private var runs = 0
    var environment: [String: String]

    static func make(_ extra: [String: String] = [:]) async throws -> World {
        let broker = try TestBroker.start()
        let gateways = try await FakeGateway.start()
        for provider in Provider.allCases {
            gateways.setBehaviour(Canary.behaviour(provider), for: provider)
        }
        let events = try EventRecorder(port: broker.port)
        return World(broker: broker, gateways: gateways, events: events, extra: extra)
    }

    private init(broker: TestBroker, gateways: FakeGateway, events: EventRecorder, extra: [String: String]) {
        self.broker = broker
        self.gateways = gateways
        self.events = events
        self.directory = NSTemporaryDirectory() + "kurir-e2e-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        environment = [
            "MQTT_URL": "mqtt://127.0.0.1:\(broker.port)",
            "MQTT_CLIENT_ID": "kurir-e2e-\(UUID().uuidString.prefix(8))",
            "WHATSAPP_PROVIDER": "fonnte",
            "WHATSAPP_API_TOKEN": Canary.fonnte,
            "WHATSAPP_API_URL": gateways.url(.fonnte),
            "WHATSAPP_BACKUP_PROVIDER": "wablas",
            "WHATSAPP_BACKUP_API_TOKEN": Canary.wablas,
            "WHATSAPP_BACKUP_API_URL": gateways.url(.wablas),
            "WHATSAPP_TIMEOUT_SECONDS": "2",
            "KURIR_DB_PATH": directory + "/kurir.db",
            "KURIR_DB_SYNC": "normal",
            "KURIR_LOG_LEVEL": "info",
        ]
        environment.merge(extra) { _, new in new }
    }

    /// Sets a provider's fake gateway to `mode`; it keeps checking the canary token.
    func setGateway(
        _ provider: Provider, _ mode: FakeBehaviour.Mode = .succeed, reason: String? = nil, latencyMs: Int = 0
    ) {
        gateways.setBehaviour(Canary.behaviour(provider, mode, reason: reason, latencyMs: latencyMs), for: provider)
    }

    var databasePath: String { environment["KURIR_DB_PATH"]! }
    var logPath: String { directory + "/kurir.log" }

    /// Starts kurir and waits until it has subscribed.
    func startKurir() async throws {
        runs += 1
        let marker = "subscribed to"
        let before = (try? String(contentsOfFile: logPath, encoding: .utf8))?.components(separatedBy: marker).count ?? 1
        let process = try ChildProcess.launch(
            executable: builtProductPath("kurir"), arguments: ["run"], environment: environment,
            logPath: logPath, currentDirectory: directory)
        kurir = process
        let deadline = ContinuousClock.now.advanced(by: .seconds(20))
        while ContinuousClock.now < deadline {
            let count = process.output().components(separatedBy: marker).count
            if count > before { return }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("kurir did not subscribe; log:\n\(process.output())")
        throw WorldError.kurirDidNotStart
    }

    /// SIGTERM and wait for a clean exit (status 0).
    func stopKurir() async -> Int32? {
        guard let kurir else { return nil }
        // A kurir that does not stop is killed, not left running; the caller sees nil and fails.
        let status = await kurir.stop(grace: .seconds(30))
        self.kurir = nil
        return status
    }

    /// Starts kurir once, so the broker keeps its persistent session, and stops it: what is published
    /// next waits at the broker and arrives all at once at the next start. Returns the exit status.
    func registerSessionAndStop() async throws -> Int32? {
        try await startKurir()
        return await stopKurir()
    }

    func killKurir() async {
        guard let kurir else { return }
        await kurir.killAndWait()
        self.kurir = nil
    }

    /// Publishes one request with QoS 1 and waits for the broker's acknowledgement.
    func publish(_ route: String, _ payload: String) async throws {
        try await publish(route, Array(payload.utf8))
    }

    func publish(_ route: String, _ payload: [UInt8], retain: Bool = false) async throws {
        let publisher = try Publisher.shared(port: broker.port)
        try await publisher.publish(topic: "notify/whatsapp/\(route)", payload: payload, retain: retain)
    }

    /// Rows of whatsapp_notifications; kurir must be stopped (the store takes an exclusive lock).
    func rows() throws -> [NotificationRow] {
        let store = try Store(path: databasePath, sync: .normal)
        return try store.notifications()
    }

    func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func shutdown() async {
        if let kurir, kurir.isRunning { kurir.kill9(); _ = await kurir.waitForExit(timeout: .seconds(5)) }
        events.stop()
        Publisher.stopAll(port: broker.port)
        broker.stop()
        try? await gateways.stop()
    }

    /// Asserts no canary secret appears in kurir's log, the events, or a dump of the database.
    func expectNoSecretsLeaked(sourceLocation: SourceLocation = #_sourceLocation) throws {
        var haystacks = [log()]
        haystacks += events.all().map { String(decoding: $0.payload, as: UTF8.self) + $0.topic }
        for file in ["kurir.db", "kurir.db-wal"] {
            if let data = FileManager.default.contents(atPath: directory + "/" + file) {
                haystacks.append(String(decoding: data, as: UTF8.self))
            }
        }
        for canary in Canary.all {
            for text in haystacks {
                #expect(!text.contains(canary), "secret leaked", sourceLocation: sourceLocation)
            }
        }
    }
}

enum WorldError: Error { case kurirDidNotStart, timeout(String) }

/// A received event: its topic and decoded JSON.
struct ReceivedEvent: Sendable {
    var topic: String
    var payload: [UInt8]
    var json: JSONValue

    var kind: String { json["event"]?.stringValue ?? "" }
    func string(_ key: String) -> String? { json[key]?.stringValue }
    func bool(_ key: String) -> Bool? {
        if case .bool(let value)? = json[key] { return value }
        return nil
    }
}

extension JSONValue {
    var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }
}

/// Subscribes to every result event and keeps them for assertions.
final class EventRecorder: Sendable {
    private let client: MQTTClient
    private let received = Locked<[ReceivedEvent]>([])
    private let subscribed = Locked(false)

    init(port: Int, filter: String = "notify/result/whatsapp/#") throws {
        // A persistent session, so events published while a broker restart cut it off still arrive.
        var options = MQTTConnectOptions(host: "127.0.0.1", port: port, clientID: "e2e-events-\(UUID().uuidString.prefix(8))")
        options.cleanSession = false
        client = try MQTTClient(options: options)
        let received = self.received
        let subscribed = self.subscribed
        let client = self.client
        client.setMessageHandler { message in
            guard let json = try? JSONCodec.decode(message.payload) else { return }
            received.withLock { $0.append(ReceivedEvent(topic: message.topic, payload: message.payload, json: json)) }
        }
        client.setConnectHandler { code, _ in
            guard code == 0 else { return }
            try? client.subscribe(filter, qos: 1)
            try? client.subscribe("e2e/reply/#", qos: 1)
            subscribed.withLock { $0 = true }
        }
        try client.start()
    }

    func waitUntilSubscribed() async throws {
        try await waitUntil("event recorder subscribed") { self.subscribed.withLock { $0 } }
    }

    func all() -> [ReceivedEvent] { received.withLock { $0 } }
    func of(_ kind: String) -> [ReceivedEvent] { all().filter { $0.kind == kind && $0.topic.hasPrefix("notify/result/") } }

    /// Waits until at least `count` events of `kind` arrived.
    @discardableResult
    func wait(for kind: String, count: Int = 1, timeout: Duration = .seconds(20)) async throws -> [ReceivedEvent] {
        try await waitUntil("\(count) \(kind) event(s), have \(of(kind).count)", timeout: timeout) {
            self.of(kind).count >= count
        }
        return of(kind)
    }

    func stop() { client.stop() }
}

/// One publishing client per broker port, waiting for each PUBACK.
final class Publisher: Sendable {
    private static let clients = Mutex<[Int: Publisher]>([:])
    private let client: MQTTClient
    private let acked = Locked<Set<Int32>>([])
    private let connected = Locked(false)

    static func shared(port: Int) throws -> Publisher {
        if let existing = clients.withLock({ $0[port] }) { return existing }
        let publisher = try Publisher(port: port)
        clients.withLock { $0[port] = publisher }
        return publisher
    }

    static func stopAll(port: Int) {
        clients.withLock { $0.removeValue(forKey: port) }?.client.stop()
    }

    private init(port: Int) throws {
        var options = MQTTConnectOptions(host: "127.0.0.1", port: port, clientID: "e2e-pub-\(UUID().uuidString.prefix(8))")
        options.cleanSession = true
        client = try MQTTClient(options: options)
        let acked = self.acked
        let connected = self.connected
        client.setPublishedHandler { mid in acked.withLock { _ = $0.insert(mid) } }
        client.setConnectHandler { code, _ in connected.withLock { $0 = code == 0 } }
        client.setDisconnectHandler { _ in connected.withLock { $0 = false } }
        try client.start()
    }

    /// Publishes with QoS 1 and returns once the broker acknowledged it.
    func publish(topic: String, payload: [UInt8], retain: Bool = false) async throws {
        try await waitUntil("publisher connected") { self.connected.withLock { $0 } }
        let mid = try client.publish(topic: topic, payload: payload, qos: 1, retain: retain)
        try await waitUntil("PUBACK for \(topic)") { self.acked.withLock { $0.remove(mid) != nil } }
    }

    /// Waits until the client is connected to the broker.
    func connect() async throws {
        try await waitUntil("publisher connected") { self.connected.withLock { $0 } }
    }

    /// Publishes without waiting for the acknowledgement; returns the message id.
    func publishNoWait(topic: String, payload: [UInt8]) throws -> Int32 {
        try client.publish(topic: topic, payload: payload, qos: 1)
    }

    func isAcknowledged(_ mid: Int32) -> Bool { acked.withLock { $0.contains(mid) } }
}

/// Polls `condition` every 10 ms until it holds or the deadline passes.
func waitUntil(
    _ what: String, timeout: Duration = .seconds(20), _ condition: @Sendable () throws -> Bool
) async throws {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while ContinuousClock.now < deadline {
        if try condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw WorldError.timeout(what)
}

/// Runs `body` in a fresh world and always tears it down (processes, broker, gateways).
func withWorld(_ extra: [String: String] = [:], _ body: (World) async throws -> Void) async throws {
    let world = try await World.make(extra)
    do {
        try await body(world)
    } catch {
        Issue.record("kurir log:\n\(world.log().suffix(4000))")
        await world.shutdown()
        throw error
    }
    await world.shutdown()
}

/// A mutex-guarded value that closures can share (a `Mutex` itself cannot be captured).
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R>(_ body: (inout sending Value) throws -> sending R) rethrows -> sending R {
        try mutex.withLock(body)
    }
}
