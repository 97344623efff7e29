import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A child process started by a test (the daemon, a fake gateway, a broker), its output in a log file.
///
/// Spawned with `posix_spawn` rather than Foundation's `Process`: `Process` hands the child
/// the signal mask of the launching thread, and Swift concurrency and Dispatch threads
/// block SIGTERM and SIGINT, so a child launched from a test could never be stopped
/// gracefully. Here the child starts with an empty mask and default dispositions.
///
/// `@unchecked Sendable`: `pid` and `logPath` are immutable, and the cached exit status
/// is only touched under `lock`.
public final class ChildProcess: @unchecked Sendable {
    /// The child's process id.
    public let pid: Int32
    private let logPath: String
    private let lock = NIOLock()
    /// Exit status once reaped (128 + signal for a signal), nil while running.
    private var status: Int32?

    private init(pid: Int32, logPath: String) {
        self.pid = pid
        self.logPath = logPath
    }

    /// Launches `executable` with arguments and exactly `environment` (plus PATH/HOME from the parent), stdout+stderr appended to `logPath`.
    ///
    /// The log file is created when missing; stdin is `/dev/null`. A child still running
    /// when this object is released is killed with SIGKILL and reaped, so a failing test
    /// does not leave it behind.
    public static func launch(
        executable: String, arguments: [String], environment: [String: String], logPath: String,
        currentDirectory: String? = nil
    ) throws -> ChildProcess {
        var env = environment
        let parent = ProcessInfo.processInfo.environment
        for key in ["PATH", "HOME"] where env[key] == nil {
            if let value = parent[key] { env[key] = value }
        }

        // Opened here, not as a spawn file action, so a bad path is an error of launch().
        let fd = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw ChildProcessError("cannot open log \(logPath): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, fd, 1)
        posix_spawn_file_actions_adddup2(&actions, fd, 2)
        if let currentDirectory {
            guard let addchdir = SpawnExtensions.addchdir else {
                throw ChildProcessError("this C library cannot set a child's working directory")
            }
            guard addchdir(&actions, currentDirectory) == 0 else {
                throw ChildProcessError("cannot use working directory \(currentDirectory)")
            }
        }
        // Test processes hold many descriptors (sockets, pipes) that are not all close-on-exec.
        if let closefrom = SpawnExtensions.addclosefrom { _ = closefrom(&actions, 3) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2, SIGALRM, SIGCHLD] {
            sigaddset(&defaults, sig)
        }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = ([executable] + arguments).map { strdup($0) }
        let envp = env.map { strdup("\($0.key)=\($0.value)") }
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let result = (argv + [nil]).withUnsafeBufferPointer { argvBuffer in
            (envp + [nil]).withUnsafeBufferPointer { envpBuffer in
                posix_spawn(
                    &pid, executable, &actions, &attributes, argvBuffer.baseAddress!,
                    envpBuffer.baseAddress!)
            }
        }
        guard result == 0 else {
            throw ChildProcessError("cannot launch \(executable): \(String(cString: strerror(result)))")
        }
        return ChildProcess(pid: pid, logPath: logPath)
    }

    deinit {
        if reap() == nil {
            kill(pid, SIGKILL)
            var raw: Int32 = 0
            _ = waitpid(pid, &raw, 0)
        }
    }

    /// The exit status if the child has ended (reaping it), nil while it runs.
    private func reap() -> Int32? {
        lock.withLock {
            if let status { return status }
            var raw: Int32 = 0
            let r = waitpid(pid, &raw, WNOHANG)
            if r == pid {
                // WIFEXITED/WEXITSTATUS/WTERMSIG are C macros Swift cannot import.
                let signal = raw & 0x7f
                if signal == 0 {
                    status = (raw >> 8) & 0xff
                } else if signal != 0x7f {
                    status = 128 + signal
                }
            } else if r < 0 && errno == ECHILD {
                // Someone else reaped it: it has ended, with a status we cannot know.
                status = -1
            }
            return status
        }
    }

    /// Sends a signal (e.g. `SIGTERM`) to the child; does nothing once it has exited.
    public func signal(_ sig: Int32) {
        if reap() == nil { kill(pid, sig) }
    }

    /// Kills the child at once (SIGKILL), as a crash or power cut would stop it.
    public func kill9() {
        signal(SIGKILL)
    }

    /// Waits for exit up to timeout; returns the exit status (or nil on timeout).
    ///
    /// A child ended by a signal returns 128 + the signal number, as a shell reports it.
    public func waitForExit(timeout: Duration) async -> Int32? {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while true {
            if let status = reap() { return status }
            if clock.now >= deadline { return nil }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// SIGTERM, then waits up to `grace`; a child still running then is killed (SIGKILL) so none is left
    /// behind. Returns the exit status of the clean stop, nil when it had to be killed.
    public func stop(grace: Duration) async -> Int32? {
        signal(SIGTERM)
        let status = await waitForExit(timeout: grace)
        if status == nil { await killAndWait() }
        return status
    }

    /// SIGKILL, then waits (up to 10 s) until the child is gone.
    public func killAndWait() async {
        kill9()
        _ = await waitForExit(timeout: .seconds(10))
    }

    /// Whether the child has not exited yet.
    public var isRunning: Bool { reap() == nil }

    /// Current content of the log file.
    public func output() -> String {
        guard let data = FileManager.default.contents(atPath: logPath) else { return "" }
        return String(decoding: data, as: UTF8.self)
    }

    /// Waits until the log contains `text` (deadline); false on timeout.
    ///
    /// Returns false early when the child exits without having written it.
    public func waitForOutput(containing text: String, timeout: Duration) async -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while true {
            if output().contains(text) { return true }
            if !isRunning { return output().contains(text) }
            if clock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// glibc spawn file actions that Swift's Glibc module does not export (they need `_GNU_SOURCE`).
private enum SpawnExtensions {
    typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?) -> Int32
    typealias AddClosefrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32

    static let addchdir: AddChdir? = lookup("posix_spawn_file_actions_addchdir_np")
    static let addclosefrom: AddClosefrom? = lookup("posix_spawn_file_actions_addclosefrom_np")

    private static func lookup<F>(_ name: String) -> F? {
        // A null handle is RTLD_DEFAULT: search the libraries already loaded.
        guard let symbol = dlsym(nil, name) else { return nil }
        return unsafeBitCast(symbol, to: F.self)
    }
}

/// A child process could not be started.
public struct ChildProcessError: Error, CustomStringConvertible {
    /// One line saying what went wrong.
    public var description: String

    init(_ description: String) { self.description = description }
}

/// Path of a product built next to the test bundle: env KURIR_BIN_DIR if set, else the directory of the running test
/// binary's bundle (…/.build/debug) — found via `CommandLine.arguments[0]` / Bundle.main paths; returns "<dir>/<name>".
public func builtProductPath(_ name: String) -> String {
    if let dir = ProcessInfo.processInfo.environment["KURIR_BIN_DIR"], !dir.isEmpty {
        return (dir as NSString).appendingPathComponent(name)
    }
    return (builtProductsDirectory() as NSString).appendingPathComponent(name)
}

/// The directory holding the running test binary, or the directory above its `.xctest` bundle.
private func builtProductsDirectory() -> String {
    var candidates: [String] = []
    if let first = CommandLine.arguments.first, !first.isEmpty { candidates.append(first) }
    candidates.append(Bundle.main.bundlePath)
    for candidate in candidates {
        var path = candidate
        if !path.hasPrefix("/") {
            path = (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(path)
        }
        path = (path as NSString).standardizingPath
        // On macOS the runner lives inside …/debug/X.xctest/Contents/MacOS/; on Linux the
        // .xctest file itself is the executable in …/debug/.
        let components = (path as NSString).pathComponents
        if let bundle = components.lastIndex(where: { $0.hasSuffix(".xctest") }) {
            return NSString.path(withComponents: Array(components[..<bundle]))
        }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            return isDirectory.boolValue ? path : (path as NSString).deletingLastPathComponent
        }
    }
    return FileManager.default.currentDirectoryPath
}
