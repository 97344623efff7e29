import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A child process started by a test (the daemon, a fake gateway, a broker), its output in a log file.
///
/// `@unchecked Sendable`: every stored property is immutable; the `Process` is only
/// queried (`isRunning`, `terminationStatus`, `processIdentifier`), which Foundation
/// synchronises, and signals go through `kill(2)` on the fixed pid.
public final class ChildProcess: @unchecked Sendable {
    private let process: Process
    private let logPath: String

    private init(process: Process, logPath: String) {
        self.process = process
        self.logPath = logPath
    }

    /// Launches `executable` with arguments and exactly `environment` (plus PATH/HOME from the parent), stdout+stderr appended to `logPath`.
    ///
    /// The log file is created when missing. A child still running when this object is
    /// released is killed with SIGKILL, so a failing test does not leave it behind.
    public static func launch(
        executable: String, arguments: [String], environment: [String: String], logPath: String,
        currentDirectory: String? = nil
    ) throws -> ChildProcess {
        let fd = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw ChildProcessError("cannot open log \(logPath): \(String(cString: strerror(errno)))")
        }
        let log = FileHandle(fileDescriptor: fd, closeOnDealloc: true)

        var env = environment
        let parent = ProcessInfo.processInfo.environment
        for key in ["PATH", "HOME"] where env[key] == nil {
            if let value = parent[key] { env[key] = value }
        }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = env
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        do {
            try process.run()
        } catch {
            throw ChildProcessError("cannot launch \(executable): \(error)")
        }
        try? log.close()
        return ChildProcess(process: process, logPath: logPath)
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// The child's process id.
    public var pid: Int32 { process.processIdentifier }

    /// Sends a signal (e.g. `SIGTERM`) to the child; does nothing once it has exited.
    public func signal(_ sig: Int32) {
        if process.isRunning { kill(process.processIdentifier, sig) }
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
        while process.isRunning {
            if clock.now >= deadline { return nil }
            try? await Task.sleep(for: .milliseconds(20))
        }
        switch process.terminationReason {
        case .exit: return process.terminationStatus
        case .uncaughtSignal: return 128 + process.terminationStatus
        @unknown default: return process.terminationStatus
        }
    }

    /// Whether the child has not exited yet.
    public var isRunning: Bool { process.isRunning }

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
            if !process.isRunning { return output().contains(text) }
            if clock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
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
