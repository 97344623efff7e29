import Foundation
import KurirTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// A failure of the benchmark's own machinery (not of kurir): one line.
struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Monotonic nanoseconds, the one clock every figure of a run is measured with.
@inline(__always) func monotonicNanos() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// Polls `condition` every 2 ms until it holds or `timeout` passes; returns whether it held.
func poll(timeout: Duration, _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while ContinuousClock.now < deadline {
        if condition() { return true }
        usleep(2_000)
    }
    return condition()
}

/// CPU time and peak memory of a child process, read from /proc.
enum ProcStats {
    /// User + system CPU seconds the process has used so far.
    static func cpuSeconds(pid: Int32) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return 0 }
        // Fields after "(comm)": state is field 3, utime 14, stime 15.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Seconds the whole machine has spent idle (all cores), from the `cpu` line of /proc/stat.
    static func machineIdleSeconds() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first, line.hasPrefix("cpu ")
        else { return 0 }
        // cpu user nice system idle iowait ...: idle and iowait are time no process ran.
        let fields = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard fields.count > 4 else { return 0 }
        return (fields[3] + fields[4]) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Peak resident set size (VmHWM) in MiB.
    static func peakRSSMiB(pid: Int32) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let kb = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Double($0) }
            return (kb ?? 0) / 1024
        }
        return 0
    }
}

/// Finds a free TCP port on 127.0.0.1 by binding port 0.
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw BenchError("socket failed") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { ptr in
        ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
            bind(fd, sa, len) == 0 && getsockname(fd, sa, &len) == 0
        }
    }
    guard ok else { throw BenchError("bind to 127.0.0.1:0 failed") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// A blocking HTTP/1.0 GET on loopback; returns the body.
func httpGet(port: Int, path: String) -> String? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    let connected = withUnsafePointer(to: &addr) { ptr in
        ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
    guard connected else { return nil }
    let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
    guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        response += buffer[0..<n]
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n") else { return nil }
    return String(text[split.upperBound...])
}

/// The broker every figure of the run goes through: mosquitto on a free loopback port.
///
/// In-memory (no persistence file): the default `autosave_interval` would make a save land at a
/// random point of some runs, and the per-change autosave the tests use rewrites the whole file per
/// message. The queue limits are off so no run loses messages to them (a persistent session drops
/// beyond `max_queued_messages`); `max_inflight_messages` keeps mosquitto's default (20), as an
/// operator's own broker has it (docker/mosquitto.conf sets 100; in three alternating pairs 100 here
/// moved the ratio by less than the noise, docs/performance.md, change 32). Unlimited, the broker pours
/// a whole backlog into kurir's socket ahead of the acknowledgements of kurir's own events, which then
/// wait behind it. `set_tcp_nodelay`:
/// without it Nagle's algorithm holds the broker's small writes (events, PUBACKs) for milliseconds.
final class BenchBroker {
    let port: Int
    let process: ChildProcess
    let directory: String

    init(directory: String) throws {
        self.directory = directory
        port = try freePort()
        let userLine = geteuid() == 0 ? "user root\n" : ""
        let config = """
            listener \(port) 127.0.0.1
            allow_anonymous true
            persistence false
            max_queued_messages 0
            max_queued_bytes 0
            message_size_limit 262144
            set_tcp_nodelay true
            log_dest file \(directory)/mosquitto.log
            log_type error
            log_type warning
            \(userLine)
            """
        try config.write(toFile: directory + "/mosquitto.conf", atomically: true, encoding: .utf8)
        let executable = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
        guard let executable else { throw BenchError("mosquitto not found: run `make deps`") }
        process = try ChildProcess.launch(
            executable: executable, arguments: ["-c", directory + "/mosquitto.conf"], environment: [:],
            logPath: directory + "/mosquitto.out")
        let up = poll(timeout: .seconds(10)) { httpProbe(port: port) }
        guard up else { throw BenchError("mosquitto did not listen on \(port): \(process.output())") }
    }

    func stop() {
        process.signal(SIGTERM)
        _ = poll(timeout: .seconds(5)) { !process.isRunning }
    }
}

/// True when something accepts TCP connections on 127.0.0.1:port.
func httpProbe(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    return withUnsafePointer(to: &addr) { ptr in
        ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}

/// `kurir-fake-gateway` as its own process, so its CPU is not charged to kurir or the load generator.
final class GatewayProcess {
    let port: Int
    let process: ChildProcess

    /// `fonnte`/`wablas` are MODE specs (`succeed`, `refuse:<reason>`, …).
    init(binDir: String, directory: String, latencyMs: Int, fonnte: String = "succeed", wablas: String = "succeed")
        throws
    {
        port = try freePort()
        process = try ChildProcess.launch(
            executable: binDir + "/kurir-fake-gateway",
            arguments: [
                "--port", "\(port)", "--latency-ms", "\(latencyMs)", "--fonnte", fonnte, "--wablas", wablas,
            ],
            environment: [:], logPath: directory + "/gateway-\(port).log")
        let up = poll(timeout: .seconds(10)) { process.output().contains("listening") }
        guard up else { throw BenchError("fake gateway did not start: \(process.output())") }
    }

    func url(_ provider: String) -> String {
        provider == "wablas"
            ? "http://127.0.0.1:\(port)/wablas/api/send-message" : "http://127.0.0.1:\(port)/fonnte/send"
    }

    /// Requests received by every provider so far.
    func received() -> Int {
        guard let body = httpGet(port: port, path: "/_stats"),
            let json = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        else { return -1 }
        return json.values.compactMap { ($0 as? [String: Any])?["received"] as? Int }.reduce(0, +)
    }

    func stop() {
        process.signal(SIGTERM)
        _ = poll(timeout: .seconds(5)) { !process.isRunning }
    }
}

/// kurir itself, as an operator runs it: the release binary with an environment.
final class KurirProcess {
    let process: ChildProcess
    let directory: String

    init(binDir: String, directory: String, environment: [String: String]) throws {
        self.directory = directory
        process = try ChildProcess.launch(
            executable: binDir + "/kurir", arguments: ["run"], environment: environment,
            logPath: directory + "/kurir.log", currentDirectory: directory)
        let up = poll(timeout: .seconds(20)) { process.output().contains("subscribed to") || !process.isRunning }
        guard up, process.isRunning else { throw BenchError("kurir did not subscribe: \(process.output().suffix(2000))") }
    }

    var pid: Int32 { process.pid }
    var peakRSSMiB: Double { ProcStats.peakRSSMiB(pid: process.pid) }

    /// SIGTERM, and the exit status (nil when it did not stop within 30 s).
    func stop() async -> Int32? {
        process.signal(SIGTERM)
        return await process.waitForExit(timeout: .seconds(30))
    }
}
