import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Why a `TestBroker` could not be started.
public struct TestBrokerError: Error, CustomStringConvertible, Sendable {
    /// One line saying what went wrong and, where it helps, what to do.
    public var description: String
}

/// A real mosquitto broker on 127.0.0.1 for tests, with its configuration, persistence file and log
/// in a temporary directory.
///
/// `@unchecked Sendable`: the running broker's pid is guarded by `lock`; everything else is immutable.
public final class TestBroker: @unchecked Sendable {
    /// Loopback port the broker listens on.
    public let port: Int
    /// Temporary directory holding `mosquitto.conf`, the persistence database and `mosquitto.log`.
    public let directory: String

    private let executable: String
    private let lock = NSLock()
    private var pid: pid_t?

    private init(port: Int, directory: String, executable: String) {
        self.port = port
        self.directory = directory
        self.executable = executable
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Starts `mosquitto -c <tmpdir>/mosquitto.conf` on 127.0.0.1:<free port>; waits (deadline 10 s)
    /// until a TCP connect succeeds.
    ///
    /// The configuration keeps every message (`persistence`, `autosave_on_changes`, `autosave_interval 1`,
    /// no queue or in-flight limits) and sets `message_size_limit 262144`: larger than kurir's 64 KiB
    /// request limit, so tests can send oversized requests and see kurir itself reject them.
    /// `extraConfig` is appended to the file. Missing binary → an error saying how to install it.
    public static func start(extraConfig: String = "", port: Int? = nil) throws -> TestBroker {
        guard let executable = findMosquitto() else {
            throw TestBrokerError(
                description:
                    "mosquitto not found: install it with `apt-get install mosquitto` (or run `make deps`)")
        }
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("kurir-broker-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let chosenPort = try port ?? freeLoopbackPort()
        // Started as root, mosquitto 2 switches to user "mosquitto", which cannot write the temp directory.
        let userLine = geteuid() == 0 ? "user root\n" : ""
        let config = """
            listener \(chosenPort) 127.0.0.1
            allow_anonymous true
            persistence true
            persistence_location \(directory)/
            autosave_on_changes true
            autosave_interval 1
            max_queued_messages 0
            max_queued_bytes 0
            max_inflight_messages 0
            message_size_limit 262144
            log_dest file \(directory)/mosquitto.log
            log_type error
            log_type warning
            log_type notice
            log_type information
            \(userLine)\(extraConfig)

            """
        try config.write(toFile: directory + "/mosquitto.conf", atomically: true, encoding: .utf8)
        let broker = TestBroker(port: chosenPort, directory: directory, executable: executable)
        try broker.launch()
        return broker
    }

    /// Stops the broker with SIGTERM (it saves its persistence file) and waits for it to exit.
    public func stop() {
        terminate(signal: SIGTERM)
    }

    /// Kills the broker with SIGKILL (no final save) and waits for it to exit.
    public func kill() {
        terminate(signal: SIGKILL)
    }

    /// Starts the broker again on the same port with the same persistence directory.
    ///
    /// Retries for up to 10 s while the port is still held by the previous instance.
    public func restart() throws {
        terminate(signal: SIGTERM)
        try launch()
    }

    /// The broker's log so far (for failure messages).
    public func log() -> String {
        (try? String(contentsOfFile: directory + "/mosquitto.log", encoding: .utf8)) ?? ""
    }

    private func launch() throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            let pid = try Self.spawn(executable, ["-c", directory + "/mosquitto.conf"])
            lock.withLock { self.pid = pid }
            // Up means: accepts TCP connections. Exited means: could not bind yet (TIME_WAIT / old
            // instance still closing) or a bad configuration — retry until the deadline.
            var status: Int32 = 0
            var exited = false
            while ContinuousClock.now < deadline {
                if waitpid(pid, &status, WNOHANG) == pid {
                    exited = true
                    break
                }
                if Self.canConnect(port: port) { return }
                Thread.sleep(forTimeInterval: 0.02)
            }
            if !exited {
                terminate(signal: SIGKILL)
                throw TestBrokerError(description: "mosquitto did not accept connections on port \(port) within 10 s")
            }
            lock.withLock { self.pid = nil }
            if ContinuousClock.now >= deadline {
                throw TestBrokerError(
                    description:
                        "mosquitto exited with status \(status) on port \(port); log: \(directory)/mosquitto.log")
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
    }

    private func terminate(signal: Int32) {
        guard
            let pid = lock.withLock({ () -> pid_t? in
                defer { self.pid = nil }
                return self.pid
            })
        else { return }
        Glibc.kill(pid, signal)
        var status: Int32 = 0
        // A broker that ignores SIGTERM for 10 s is killed, so a test can never hang here.
        let deadline = ContinuousClock.now + .seconds(10)
        while waitpid(pid, &status, WNOHANG) == 0 {
            if ContinuousClock.now >= deadline {
                Glibc.kill(pid, SIGKILL)
                while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
                return
            }
            Thread.sleep(forTimeInterval: 0.01)
        }
    }

    /// `posix_spawn` with an empty signal mask and default handlers.
    ///
    /// Not Foundation `Process`: the child would inherit the spawning thread's signal mask, and
    /// Swift's worker threads block SIGTERM, so mosquitto would never see the SIGTERM of `stop()`.
    private static func spawn(_ executable: String, _ arguments: [String]) throws -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGHUP, SIGINT, SIGTERM, SIGPIPE, SIGUSR1, SIGUSR2] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard rc == 0 else {
            throw TestBrokerError(description: "cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        return pid
    }

    private static func findMosquitto() -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let candidates =
            path.split(separator: ":").map { "\($0)/mosquitto" } + [
                "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/bin/mosquitto",
            ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Binds port 0 on 127.0.0.1, reads the port the kernel chose, closes the socket.
    private static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestBrokerError(description: "socket() failed: errno \(errno)") }
        defer { close(fd) }
        var address = loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else { throw TestBrokerError(description: "bind() failed: errno \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw TestBrokerError(description: "getsockname() failed: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = loopback(port: port)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return rc == 0
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }
}
