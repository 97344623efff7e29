import Foundation
import GRDB
import KurirCore
import KurirTestSupport

/// Canary secrets used for every gateway and the broker through the whole suite: none may appear anywhere.
enum Canary {
    static let fonnte = "CANARY-fonnte-c4a05"
    static let wablas = "CANARY-wablas-9e1f2.CANARY-secret-77b1"
    static let woowa = "CANARY-woowa-3d8e6"
    static let brokerPassword = "CANARY-broker-pw-51c9"
    static let all = [fonnte, wablas, woowa, brokerPassword, "CANARY-wablas-9e1f2", "CANARY-secret-77b1"]
}

/// Why a scenario could not run to its end (not a figure that missed its bar).
struct ChaosError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One isolated run: a broker, the fake gateways, an event subscriber, a producer and kurir as a child.
final class World: @unchecked Sendable {
    let name: String
    let directory: String
    let broker: Broker
    let gateways: FakeGateway
    let events: EventRecorder
    let producer: Producer
    let binDir: String
    var environment: [String: String]
    private(set) var kurir: ChildProcess?
    private(set) var starts = 0

    static func make(
        _ name: String, root: String, binDir: String, env extra: [String: String] = [:]
    ) async throws -> World {
        let directory = root + "/" + name
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let broker = try Broker(directory: directory + "/broker", repoRoot: FileManager.default.currentDirectoryPath)
        try await broker.start()
        let gateways = try await FakeGateway.start()
        for (provider, token) in [(Provider.fonnte, Canary.fonnte), (.wablas, Canary.wablas), (.woowa, Canary.woowa)] {
            var behaviour = FakeBehaviour()
            behaviour.expectedToken = token
            gateways.setBehaviour(behaviour, for: provider)
        }
        let events = try EventRecorder(port: broker.port, canaries: Canary.all)
        let producer = try Producer(port: broker.port)
        let world = World(
            name: name, root: root, binDir: binDir, broker: broker, gateways: gateways, events: events,
            producer: producer, extra: extra)
        guard await events.waitSubscribed() else { throw ChaosError("event subscriber could not connect") }
        return world
    }

    private init(
        name: String, root: String, binDir: String, broker: Broker, gateways: FakeGateway, events: EventRecorder,
        producer: Producer, extra: [String: String]
    ) {
        self.name = name
        self.directory = root + "/" + name
        self.binDir = binDir
        self.broker = broker
        self.gateways = gateways
        self.events = events
        self.producer = producer
        environment = [
            "MQTT_URL": "mqtt://127.0.0.1:\(broker.port)",
            "MQTT_CLIENT_ID": "kurir-chaos-\(name)",
            "WHATSAPP_PROVIDER": "fonnte",
            "WHATSAPP_API_TOKEN": Canary.fonnte,
            "WHATSAPP_API_URL": gateways.url(.fonnte),
            "WHATSAPP_BACKUP_PROVIDER": "wablas",
            "WHATSAPP_BACKUP_API_TOKEN": Canary.wablas,
            "WHATSAPP_BACKUP_API_URL": gateways.url(.wablas),
            "WHATSAPP_TIMEOUT_SECONDS": "1",
            // The debug kurir and the in-process fake gateways (one event-loop thread) take over a second
            // to answer 256 requests sent at once, which the 1 s timeout turns into `unknown` attempts the
            // fake never chose; 32 keeps every answer within it, so the bars count what the fake decided.
            "WHATSAPP_MAX_IN_FLIGHT": "32",
            "WHATSAPP_RETRY_DELAY_SECONDS": "1",
            "WHATSAPP_RETRY_MAX_DELAY_SECONDS": "4",
            "KURIR_DB_PATH": directory + "/kurir.db",
            "KURIR_DB_SYNC": "normal",
            "KURIR_LOG_LEVEL": "info",
        ]
        environment.merge(extra) { _, new in new }
    }

    var databasePath: String { environment["KURIR_DB_PATH"]! }
    var logPath: String { directory + "/kurir.log" }
    var kurirPath: String { binDir + "/kurir" }

    /// Starts kurir; when `waitSubscribed`, waits (deadline 20 s) until it logged its subscription.
    @discardableResult
    func startKurir(extra: [String: String] = [:], waitSubscribed: Bool = true) async throws -> ChildProcess {
        starts += 1
        let marker = "subscribed to"
        let before = log().components(separatedBy: marker).count
        var env = environment
        env.merge(extra) { _, new in new }
        let process = try ChildProcess.launch(
            executable: kurirPath, arguments: ["run"], environment: env, logPath: logPath, currentDirectory: directory)
        kurir = process
        guard waitSubscribed else { return process }
        let up = await waitUntil(timeout: .seconds(20)) {
            process.output().components(separatedBy: marker).count > before || !process.isRunning
        }
        guard up, process.isRunning else {
            throw ChaosError("kurir did not subscribe; last log lines: \(log().suffix(600))")
        }
        return process
    }

    /// SIGTERM and wait; returns the exit status (nil when it did not stop within 30 s).
    @discardableResult
    func stopKurir() async -> Int32? {
        guard let kurir else { return nil }
        let status = await kurir.stop(grace: .seconds(30))
        self.kurir = nil
        return status
    }

    /// `kill -9` and wait for the exit.
    func killKurir() async {
        guard let kurir else { return }
        await kurir.killAndWait()
        self.kurir = nil
    }

    /// Forgets the child without signalling it (it exited by itself, e.g. at a crash point).
    func reapKurir(timeout: Duration = .seconds(10)) async -> Int32? {
        guard let kurir else { return nil }
        let status = await kurir.waitForExit(timeout: timeout)
        if status == nil { await kurir.killAndWait() }
        self.kurir = nil
        return status
    }

    func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Runs `body` on kurir's database (read queries only; fine while kurir runs: WAL readers do not block).
    func query<T>(_ body: (Database) throws -> T) throws -> T {
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        let queue = try DatabaseQueue(path: databasePath, configuration: configuration)
        defer { try? queue.close() }
        return try queue.read(body)
    }

    func count(_ sql: String) -> Int {
        (try? query { db in try Int.fetchOne(db, sql: sql) ?? 0 }) ?? -1
    }

    /// Waits until `sql` (a COUNT) reaches `value`, with a deadline.
    func waitForCount(_ sql: String, atLeast value: Int, timeout: Duration) async -> Bool {
        await waitUntil(timeout: timeout) { count(sql) >= value }
    }

    /// Everything kurir wrote: its log, the database files, the events (for canary checks).
    func secretLeaks() -> Int {
        var haystacks = [log()]
        for file in ["kurir.db", "kurir.db-wal"] {
            if let data = FileManager.default.contents(atPath: directory + "/" + file) {
                haystacks.append(String(decoding: data, as: UTF8.self))
            }
        }
        let inFiles = haystacks.reduce(0) { sum, text in sum + Canary.all.filter { text.contains($0) }.count }
        return inFiles + events.snapshot.leaks
    }

    func shutdown() async {
        if let kurir, kurir.isRunning {
            _ = await kurir.stop(grace: .seconds(10))
        }
        kurir = nil
        producer.stop()
        events.stop()
        await broker.stop()
        try? await gateways.stop()
    }
}

/// Per-target view of what the fake gateways received, from their own records.
struct GatewayView {
    var accepted: [String: Int] = [:]
    var received: [String: Int] = [:]
    var total = 0
    var acceptedTotal = 0

    init(_ gateways: FakeGateway) {
        for request in gateways.requests() {
            let raw = request.fields["target"] ?? request.fields["phone"] ?? request.fields["phone_no"] ?? "?"
            let target = String(
                raw.unicodeScalars.filter { $0.properties.numericType != nil || $0 == "," || $0 == "|" || $0 == "@" }.map(
                    Character.init))
            total += 1
            received[target, default: 0] += 1
            if request.accepted {
                accepted[target, default: 0] += 1
                acceptedTotal += 1
            }
        }
    }

    /// Accepted sends beyond the first for each target.
    var duplicates: Int { accepted.values.reduce(0) { $0 + max(0, $1 - 1) } }
}
