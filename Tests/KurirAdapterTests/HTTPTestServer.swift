import Glibc
import Synchronization

/// A deliberately small raw-socket HTTP/1.1 server on 127.0.0.1 for the HTTPClient tests.
///
/// It misbehaves on request (never answers, hangs up, drips) in ways a real server library
/// would not let us, and records exactly what arrived. One thread accepts, one thread per connection.
final class HTTPTestServer: Sendable {
    enum Behaviour: Sendable {
        /// Answer every request with this status, body and extra headers (keep-alive).
        case respond(status: Int, body: [UInt8], headers: [String] = [])
        /// Read the request, then say nothing until the client hangs up.
        case neverAnswer
        /// Read the request, then close the connection without a byte.
        case closeAfterRequest
        /// Answer the first request on each connection with 200 "ok"; read the second, then close without a byte.
        case answerOnceThenHangUp
        /// Send a 200 head announcing 1000 bytes, then one byte per `interval`.
        case drip(interval: Duration)
        /// Read the request, send these bytes as the whole answer, then close.
        case rawAnswer([UInt8])
        /// Send these bytes as soon as the connection opens, read nothing, wait for the hang-up.
        case sendOnConnect([UInt8])
    }

    struct Received: Sendable {
        var method: String
        var target: String
        var headers: [(name: String, value: String)]
        var body: [UInt8]

        func values(_ name: String) -> [String] {
            headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
        }
    }

    private struct State {
        var received: [Received] = []
        var connections: Set<Int32> = []
        var connectionCount = 0
        var stopped = false
    }

    let port: UInt16
    private let behaviour: Behaviour
    private let listener: Int32
    private let state = Mutex(State())

    init(_ behaviour: Behaviour) throws {
        self.behaviour = behaviour
        let (fd, port) = try bindLoopback(listen: true)
        listener = fd
        self.port = port
        spawnThread { [self] in acceptLoop() }
    }

    var url: String { "http://127.0.0.1:\(port)/send" }

    var received: [Received] { state.withLock { $0.received } }
    var connectionCount: Int { state.withLock { $0.connectionCount } }

    func stop() {
        state.withLock { state in
            state.stopped = true
            for connection in state.connections {
                shutdown(connection, Int32(SHUT_RDWR))
            }
        }
        // Wakes the thread blocked in accept(); it closes the socket itself.
        shutdown(listener, Int32(SHUT_RDWR))
    }

    private var stopped: Bool { state.withLock { $0.stopped } }

    private func acceptLoop() {
        while true {
            let connection = accept(listener, nil, nil)
            if connection < 0 {
                if errno == EINTR && !stopped { continue }
                close(listener)
                return
            }
            let admitted = state.withLock { state -> Bool in
                guard !state.stopped else { return false }
                state.connections.insert(connection)
                state.connectionCount += 1
                return true
            }
            guard admitted else {
                close(connection)
                continue
            }
            spawnThread { [self] in
                serve(connection)
                state.withLock { _ = $0.connections.remove(connection) }
                close(connection)
            }
        }
    }

    private func serve(_ connection: Int32) {
        if case .sendOnConnect(let bytes) = behaviour {
            guard sendAll(connection, bytes) else { return }
            var byte: UInt8 = 0
            while recv(connection, &byte, 1, 0) > 0 {}
            return
        }
        var buffer: [UInt8] = []
        var answered = 0
        while let request = readRequest(connection, buffer: &buffer) {
            state.withLock { $0.received.append(request) }
            switch behaviour {
            case .answerOnceThenHangUp:
                guard answered == 0 else { return }
                answered += 1
                guard sendAll(connection, Array("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".utf8)) else { return }
            case .respond(let status, let body, let headers):
                var head = "HTTP/1.1 \(status) Test\r\nContent-Length: \(body.count)\r\n"
                for header in headers { head += header + "\r\n" }
                head += "\r\n"
                guard sendAll(connection, Array(head.utf8) + body) else { return }
            case .neverAnswer:
                var byte: UInt8 = 0
                while recv(connection, &byte, 1, 0) > 0 {}
                return
            case .closeAfterRequest, .sendOnConnect:
                return
            case .rawAnswer(let bytes):
                _ = sendAll(connection, bytes)
                return
            case .drip(let interval):
                guard sendAll(connection, Array("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".utf8)) else { return }
                for _ in 0..<1000 {
                    guard !stopped, sendAll(connection, [UInt8(ascii: "x")]) else { return }
                    pause(interval)
                }
                return
            }
        }
    }

    /// Reads one request (head and Content-Length body); nil when the peer is gone.
    private func readRequest(_ connection: Int32, buffer: inout [UInt8]) -> Received? {
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        var headEnd: Int?
        while true {
            if headEnd == nil, let index = buffer.firstRange(of: separator)?.lowerBound {
                headEnd = index
            }
            if let headEnd {
                let head = String(decoding: buffer[..<headEnd], as: UTF8.self)
                var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
                let requestLine = lines.removeFirst().split(separator: " ").map(String.init)
                let headers = lines.map { line -> (name: String, value: String) in
                    guard let colon = line.firstIndex(of: ":") else { return (line, "") }
                    let value = line[line.index(after: colon)...].drop { $0 == " " }
                    return (String(line[..<colon]), String(value))
                }
                let length = headers.first { $0.name.lowercased() == "content-length" }.flatMap { Int($0.value) } ?? 0
                let bodyStart = headEnd + separator.count
                if buffer.count >= bodyStart + length {
                    let body = Array(buffer[bodyStart..<bodyStart + length])
                    buffer.removeFirst(bodyStart + length)
                    return Received(
                        method: requestLine.first ?? "", target: requestLine.count > 1 ? requestLine[1] : "",
                        headers: headers, body: body)
                }
            }
            var chunk = [UInt8](repeating: 0, count: 65_536)
            let count = recv(connection, &chunk, chunk.count, 0)
            if count <= 0 { return nil }
            buffer.append(contentsOf: chunk[..<count])
        }
    }
}

/// A loopback port with a bound socket that does not listen: connecting to it is refused.
final class RefusingPort: Sendable {
    let port: UInt16
    private let socket: Int32

    init() throws {
        (socket, port) = try bindLoopback(listen: false)
    }

    deinit {
        close(socket)
    }
}

struct HTTPTestServerError: Error, CustomStringConvertible {
    var description: String
}

private func bindLoopback(listen shouldListen: Bool) throws -> (Int32, UInt16) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw HTTPTestServerError(description: "socket() failed: errno \(errno)") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard bound == 0 else {
        close(fd)
        throw HTTPTestServerError(description: "bind() failed: errno \(errno)")
    }
    if shouldListen {
        guard listen(fd, 512) == 0 else {
            close(fd)
            throw HTTPTestServerError(description: "listen() failed: errno \(errno)")
        }
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else {
        close(fd)
        throw HTTPTestServerError(description: "getsockname() failed: errno \(errno)")
    }
    return (fd, UInt16(bigEndian: address.sin_port))
}

private func sendAll(_ connection: Int32, _ bytes: [UInt8]) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let sent = bytes[offset...].withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if sent <= 0 { return false }
        offset += sent
    }
    return true
}

private func pause(_ duration: Duration) {
    let (seconds, attoseconds) = duration.components
    var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR {
        request = remaining
    }
}

private final class ThreadBody {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// Starts a detached OS thread: the server's blocking socket calls must not sit on Swift's cooperative pool.
private func spawnThread(_ body: @escaping @Sendable () -> Void) {
    let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let created = pthread_create(
        &thread, nil,
        { context in
            Unmanaged<ThreadBody>.fromOpaque(context!).takeRetainedValue().body()
            return nil
        }, context)
    precondition(created == 0, "pthread_create failed: \(created)")
    pthread_detach(thread)
}
