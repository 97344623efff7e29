import Foundation
import KurirTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// The nearest peer, mqttwarn 0.36.x from PyPI, in a throwaway virtualenv, routed to the same fake gateway.
struct Peer {
    let venv: String
    let template: String
    let work: String
    let binDir: String

    var executable: String { venv + "/bin/mqttwarn" }

    /// Creates the virtualenv and installs mqttwarn when it is not there yet.
    func prepare() throws {
        if FileManager.default.isExecutableFile(atPath: executable) { return }
        for (program, arguments) in [
            ("python3", ["-m", "venv", venv]),
            (venv + "/bin/pip", ["install", "--quiet", "mqttwarn==0.36.1"]),
        ] {
            let log = work + "/peer-setup.log"
            let path = program.hasPrefix("/") || program.contains("/") ? program : try which(program)
            let process = try ChildProcess.launch(executable: path, arguments: arguments, environment: [:], logPath: log)
            guard poll(timeout: .seconds(300), { !process.isRunning }) else {
                throw BenchError("\(program) \(arguments.joined(separator: " ")) did not finish")
            }
            guard FileManager.default.isExecutableFile(atPath: venv + "/bin/python3") else {
                throw BenchError("python3 -m venv failed (install python3-venv): \(process.output().suffix(400))")
            }
        }
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw BenchError("pip install mqttwarn==0.36.1 failed; see \(work)/peer-setup.log")
        }
    }

    private func which(_ name: String) throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        throw BenchError("\(name) not found")
    }

    struct Result {
        var rate: Double
        var received: Int
        var reportedDelivered: Int
    }

    /// Publishes `count` requests at full speed; the rate is counted where the requests land, at the gateway.
    func run(brokerPort: Int, workers: Int, latencyMs: Int, count: Int, refuse: Bool, run: Int) async throws -> Result {
        let directory = work + "/peer-\(run)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let gateway = try GatewayProcess(
            binDir: binDir, directory: directory, latencyMs: latencyMs, fonnte: refuse ? "refuse:target invalid" : "succeed")
        defer { gateway.stop() }
        let config = try String(contentsOfFile: template, encoding: .utf8)
            .replacingOccurrences(of: "@PORT@", with: "\(brokerPort)")
            .replacingOccurrences(of: "@CLIENTID@", with: "mqttwarn-bench-\(run)-\(getpid())")
            .replacingOccurrences(of: "@WORKERS@", with: "\(workers)")
            .replacingOccurrences(of: "@URL@", with: gateway.url("fonnte"))
        let ini = directory + "/mqttwarn.ini"
        try config.write(toFile: ini, atomically: true, encoding: .utf8)
        let peer = try ChildProcess.launch(
            executable: executable, arguments: ["--config-file=\(ini)"], environment: [:],
            logPath: directory + "/mqttwarn.log", currentDirectory: directory)
        defer {
            peer.signal(SIGTERM)
            if !poll(timeout: .seconds(5), { !peer.isRunning }) { peer.kill9() }
        }
        let generator = try LoadGenerator(port: brokerPort, name: "peer\(run)")
        defer { generator.stop() }
        // Subscribed once a warm-up request reaches the gateway.
        var warm = 0
        let subscribed = poll(timeout: .seconds(30)) {
            if gateway.received() >= 1 { return true }
            if warm % 250 == 0 {
                try? generator.publish(topic: "notify/whatsapp/bench/warm", payload: Workload.warmup(prefix: "p\(run)", n: warm))
            }
            warm += 1
            return false
        }
        guard subscribed else { throw BenchError("mqttwarn did not start: \(peer.output().suffix(1000))") }
        usleep(300_000)
        let base = gateway.received()
        let failuresBefore = Self.failures(peer.output())
        let sent = TimeTable(count: count)
        let payloads = (0..<count).map { Workload.payload(prefix: "p\(run)", index: $0) }
        try generator.run(
            count: count, rate: nil, sent: sent, topic: { _ in "notify/whatsapp/bench/alert" }, payload: { payloads[$0] })
        var reached = base
        var lastChange = monotonicNanos()
        var end = monotonicNanos()
        while reached < base + count {
            usleep(20_000)
            let now = gateway.received()
            if now != reached {
                reached = now
                lastChange = monotonicNanos()
                end = lastChange
            } else if monotonicNanos() - lastChange > 20_000_000_000 {
                break
            }
        }
        let got = reached - base
        var reported = got
        if refuse {
            // Give the workers a moment to log the outcome of the last requests.
            usleep(1_000_000)
            reported = got - (Self.failures(peer.output()) - failuresBefore)
        }
        return Result(rate: Double(got) / (Double(end - sent[0]) / 1e9), received: got, reportedDelivered: reported)
    }

    /// mqttwarn logs this line for every notification its service reported as not sent.
    static func failures(_ log: String) -> Int {
        log.components(separatedBy: "Notification failed or timed out").count - 1
    }
}
