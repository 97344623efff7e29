import Foundation
import KurirTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// mosquitto on loopback with the configuration kurir ships (docker/mosquitto.conf), adapted only in
/// where it listens, where it keeps its files, and (for the security scenarios) extra listener lines.
final class Broker: @unchecked Sendable {
    let port: Int
    let directory: String
    private var process: ChildProcess?

    init(directory: String, repoRoot: String, extra: String = "", port: Int? = nil) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.port = try port ?? freePort()
        let shipped = try String(contentsOfFile: repoRoot + "/docker/mosquitto.conf", encoding: .utf8)
        var lines: [String] = []
        for raw in shipped.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("listener ") { lines.append("listener \(self.port) 127.0.0.1"); continue }
            if line.hasPrefix("persistence_location") { lines.append("persistence_location \(directory)/"); continue }
            if line.hasPrefix("log_dest") { lines.append("log_dest file \(directory)/mosquitto.log"); continue }
            if line.hasPrefix("log_timestamp_format") { continue }
            if !extra.isEmpty && line.hasPrefix("allow_anonymous") { continue }
            lines.append(String(raw))
        }
        // Started as root, mosquitto 2 switches to user "mosquitto", which cannot write our directory.
        if geteuid() == 0 { lines.append("user root") }
        lines.append(extra)
        try lines.joined(separator: "\n").appending("\n").write(
            toFile: directory + "/mosquitto.conf", atomically: true, encoding: .utf8)
    }

    /// Starts mosquitto and waits (deadline 10 s) until it accepts TCP connections.
    func start() async throws {
        let deadline = ContinuousClock.now.advanced(by: .seconds(10))
        while ContinuousClock.now < deadline {
            let child = try ChildProcess.launch(
                executable: Broker.executable, arguments: ["-c", directory + "/mosquitto.conf"], environment: [:],
                logPath: directory + "/stdout.log")
            process = child
            while ContinuousClock.now < deadline && child.isRunning {
                if canConnect(port: port) { return }
                try? await Task.sleep(for: .milliseconds(20))
            }
            if child.isRunning { break }
            // Port still held by the previous instance: try again.
            try? await Task.sleep(for: .milliseconds(200))
        }
        throw ChaosError("mosquitto did not start on port \(port); see \(directory)/mosquitto.log")
    }

    /// SIGTERM (the broker saves its persistence file) and wait.
    func stop() async {
        guard let process else { return }
        _ = await process.stop(grace: .seconds(10))
        self.process = nil
    }

    /// SIGKILL (no final save) and wait.
    func kill() async {
        guard let process else { return }
        await process.killAndWait()
        self.process = nil
    }

    static var executable: String {
        for path in ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto"]
        where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        return "mosquitto"
    }
}

/// A free loopback TCP port (bind port 0, read it back, close).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw ChaosError("socket() failed") }
    defer { close(fd) }
    var address = loopback(0)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw ChaosError("bind() failed") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = loopback(port)
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}

private func loopback(_ port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    return address
}

/// Runs a short command to completion (openssl, mosquitto_passwd) and returns its status and output.
@discardableResult
func runTool(_ executable: String, _ arguments: [String], in directory: String, timeout: Duration = .seconds(30)) async throws
    -> (status: Int32, output: String)
{
    let log = directory + "/tool-\(UUID().uuidString.prefix(6)).log"
    let child = try ChildProcess.launch(
        executable: executable, arguments: arguments, environment: [:], logPath: log, currentDirectory: directory)
    let status = await child.waitForExit(timeout: timeout) ?? -1
    if status == -1 { child.kill9() }
    let output = child.output()
    try? FileManager.default.removeItem(atPath: log)
    return (status, output)
}
