import Foundation
import GRDB
import KurirCore
import KurirTestSupport

/// Runs the scenarios one after another (never two heavy things at once on the shared 2-core machine).
final class Suite: @unchecked Sendable {
    let root: String
    let binDir: String
    let scale: Double
    let brokerDownSeconds: Int
    let only: [String]
    private(set) var results: [Figures] = []
    /// kurir's intake rate (requests/s while flowing) in this invocation's `broker kill -9 x5`, which the
    /// plain-subscriber control that follows it paces itself to.
    var kurirIntakeRate: Double?
    /// Worlds of the running scenario, shut down when it ends whatever happened.
    private var open: [World] = []

    init(root: String, binDir: String, scale: Double, brokerDownSeconds: Int, only: [String]) {
        self.root = root
        self.binDir = binDir
        self.scale = scale
        self.brokerDownSeconds = brokerDownSeconds
        self.only = only
    }

    func n(_ count: Int) -> Int { max(10, Int((Double(count) * scale).rounded())) }

    func runAll() async {
        await scenario("kill-9 x20") { try await self.killNine(&$0) }
        for point in ["intake-before-commit", "intake-after-commit", "before-http", "after-http", "after-publish"] {
            await scenario("crash-at \(point)") { try await self.crashPoint(point, &$0) }
        }
        await scenario("disk full") { try await self.diskFull(&$0) }
        await scenario("disk full, small tmpfs") { try await self.diskFullTmpfs(sizeKiB: 2048, &$0) }
        await scenario("second kurir") { try await self.secondInstance(&$0) }
        await scenario("broker SIGTERM x5") { try await self.brokerRestarts(kill: false, &$0) }
        await scenario("broker kill -9 x5") { try await self.brokerRestarts(kill: true, &$0) }
        await scenario("broker kill -9 x5, plain subscriber") { try await self.brokerKillControl(&$0) }
        await scenario("kurir offline") { try await self.kurirOffline(&$0) }
        await scenario("broker down \(brokerDownSeconds) s") { try await self.brokerDown(&$0) }
        for mode in GatewayMode.all {
            await scenario("primary \(mode.name) 100%") { try await self.gatewayMode(mode, fraction: 1, &$0) }
            await scenario("primary \(mode.name) 30%") { try await self.gatewayMode(mode, fraction: 0.3, &$0) }
        }
        await scenario("both gateways down, back") { try await self.bothDown(&$0) }
        await scenario("retry exhaustion") { try await self.retryExhaustion(&$0) }
        await scenario("hostile payloads") { try await self.hostile(&$0) }
        await scenario("fuzz smoke") { try await self.fuzzSmoke(&$0) }
        await scenario("broker TLS + password") { try await self.brokerTLS(&$0) }
        await scenario("gateway HTTPS untrusted") { try await self.untrustedGateway(&$0) }
        await scenario("config attacks") { try await self.configAttacks(&$0) }
        await scenario("log injection") { try await self.logInjection(&$0) }
        await scenario("file modes, docker user") { try await self.fileModes(&$0) }
    }

    private func scenario(_ name: String, _ body: (inout Figures) async throws -> Void) async {
        guard only.isEmpty || only.contains(where: { name.contains($0) }) else { return }
        var figures = Figures(name)
        let started = ContinuousClock.now
        Console.err("chaos: \(name) …")
        do {
            try await body(&figures)
        } catch {
            figures.failures.append("could not complete: \(error)")
        }
        for world in open { await world.shutdown() }
        open = []
        figures.wall = ContinuousClock.now - started
        Console.err(
            "chaos: \(name): \(figures.failures.isEmpty ? "ok" : "FAIL \(figures.failures)") in \(Report.seconds(figures.wall))")
        results.append(figures)
    }

    func world(_ name: String, env: [String: String] = [:]) async throws -> World {
        let safe = String(name.map { $0.isLetter || $0.isNumber ? $0 : "-" })
        let world = try await World.make(safe, root: root, binDir: binDir, env: env)
        open.append(world)
        return world
    }

    // MARK: Counting

    /// Counts delivered/lost/duplicates for requests that should all be delivered, from the producer's
    /// acknowledgements and the fake gateways' records; checks the database agrees.
    func tally(_ world: World, _ requests: [ChaosRequest], acked: Set<Int>, into f: inout Figures) {
        let view = GatewayView(world.gateways)
        f.requests = requests.count
        f.acknowledged = acked.count
        var delivered = 0
        var expected = Set<String>()
        for request in requests where request.valid {
            expected.formUnion(request.targets)
            guard acked.contains(request.index) else { continue }
            if request.targets.allSatisfy({ (view.accepted[$0] ?? 0) > 0 }) { delivered += 1 }
        }
        f.delivered = delivered
        f.lost = requests.filter { $0.valid && acked.contains($0.index) }.count - delivered
        f.duplicates = view.duplicates
        let dups = view.accepted.filter { $0.value > 1 }.map { "\($0.key) \($0.value)" }.sorted().joined(separator: "\n")
        try? dups.write(toFile: world.directory + "/gateway-duplicates.txt", atomically: true, encoding: .utf8)
        let stray = view.received.keys.filter { !expected.contains($0) }
        f.bar(stray.isEmpty, "gateways received \(stray.count) target(s) no request named, e.g. \(stray.prefix(3))")
        f.bar(f.acknowledged == f.requests, "broker acknowledged \(f.acknowledged) of \(f.requests)")
        f.bar(f.lost == 0, "lost \(f.lost)")
        let sentRows = world.count("SELECT COUNT(*) FROM whatsapp_notifications WHERE status = 'sent'")
        let validTargets = requests.filter { $0.valid && acked.contains($0.index) }.reduce(0) { $0 + $1.targets.count }
        f.bar(sentRows == validTargets, "database has \(sentRows) sent rows, expected \(validTargets)")
        f.bar(world.secretLeaks() == 0, "a canary secret leaked (log, database or events)")
    }

    func integrity(_ world: World, _ f: inout Figures) {
        let check =
            (try? world.query { db in try String.fetchAll(db, sql: "PRAGMA integrity_check").joined(separator: ";") })
            ?? "unreadable"
        f.bar(check == "ok", "integrity_check: \(check)")
    }

    func waitAllSent(_ world: World, _ count: Int, timeout: Duration = .seconds(180)) async -> Bool {
        await world.waitForCount(
            "SELECT COUNT(*) FROM whatsapp_notifications WHERE status = 'sent'", atLeast: count, timeout: timeout)
    }

    func waitEvents(_ world: World, kind: String, count: Int, timeout: Duration = .seconds(60)) async -> Bool {
        await waitUntil(timeout: timeout) { world.events.distinct(kind) >= count }
    }

    /// Runs blocking work off the cooperative pool (it has only two threads here).
    func blocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: body()) }
        }
    }
}
