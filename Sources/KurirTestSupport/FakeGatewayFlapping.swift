import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// A listening port on 127.0.0.1 that is closed and bound again in a cycle (see
/// ``FakeGateway/openFlappingListener(open:closed:)``): while it is closed the kernel answers a SYN with a
/// RST, so the client's `connect` fails with ECONNREFUSED — a real refusal, not a reset of an open
/// connection.
///
/// Plain sockets on a thread of its own rather than a NIO server channel: before each close it accepts
/// every connection already queued, so the close cannot reset a connection that had been completed by
/// the kernel but not yet accepted (NIO accepts a few per wake-up and would leave such a window).
public final class FlappingListener: Sendable {
    /// What the cycle did so far.
    public struct Stats: Sendable, Equatable {
        /// Closed phases so far.
        public var cycles = 0
        /// Total time the port had a listener, in milliseconds.
        public var openMs = 0.0
        /// Total time it had none, in milliseconds.
        public var closedMs = 0.0
        /// Connections accepted and handed to the gateway.
        public var accepted = 0
        /// Binds that failed (another socket took the port meanwhile) and were tried again 1 ms later.
        public var rebindFailures = 0

        /// Share of the time the port had no listener.
        public var closedFraction: Double { openMs + closedMs > 0 ? closedMs / (openMs + closedMs) : 0 }
    }

    /// The port that flaps.
    public let port: Int
    private let stopping = NIOLockedValueBox(false)
    private let figures = NIOLockedValueBox(Stats())
    private let ended = DispatchSemaphore(value: 0)

    init(openMs: ClosedRange<Int>, closedMs: ClosedRange<Int>, hand: @escaping @Sendable (Int32) -> Void) throws {
        let fd = try Self.listen(port: 0)
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        let cycle = Cycle(
            port: port, openMs: openMs, closedMs: closedMs, hand: hand, stopping: stopping, figures: figures, ended: ended)
        Thread.detachNewThread { cycle.run(first: fd) }
    }

    /// The figures of the cycle so far.
    public var stats: Stats { figures.withLockedValue { $0 } }

    /// Ends the cycle and closes the listening socket (accepted connections stay with the gateway); waits
    /// at most 1 s for the thread. Idempotent.
    public func stop() {
        let first = stopping.withLockedValue { was in
            defer { was = true }
            return !was
        }
        guard first else { return }
        _ = ended.wait(timeout: .now() + 1)
    }

    /// A non-blocking listening socket on 127.0.0.1:`port` with SO_REUSEADDR (accepted connections of an
    /// earlier phase still hold the port).
    static func listen(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw FakeGatewayError("socket() failed: errno \(errno)") }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 256) == 0 else {
            let code = errno
            close(fd)
            throw FakeGatewayError("bind/listen on port \(port) failed: errno \(code)")
        }
        return fd
    }
}

/// The thread's side of a ``FlappingListener``.
private struct Cycle: Sendable {
    let port: Int
    let openMs: ClosedRange<Int>
    let closedMs: ClosedRange<Int>
    let hand: @Sendable (Int32) -> Void
    let stopping: NIOLockedValueBox<Bool>
    let figures: NIOLockedValueBox<FlappingListener.Stats>
    let ended: DispatchSemaphore

    var stopped: Bool { stopping.withLockedValue { $0 } }

    func run(first: Int32) {
        var fd: Int32? = first
        while let listening = fd {
            let openedAt = ContinuousClock.now
            serve(listening, until: openedAt.advanced(by: .milliseconds(Int.random(in: openMs))))
            acceptQueued(listening)
            close(listening)
            let closedAt = ContinuousClock.now
            guard !stopped else { break }
            usleep(UInt32(Int.random(in: closedMs) * 1000))
            fd = rebind()
            let reopened = ContinuousClock.now
            figures.withLockedValue {
                $0.cycles += 1
                $0.openMs += Self.ms(closedAt - openedAt)
                $0.closedMs += Self.ms(reopened - closedAt)
            }
        }
        ended.signal()
    }

    /// Accepts connections as they come until `deadline` (or a stop).
    private func serve(_ fd: Int32, until deadline: ContinuousClock.Instant) {
        while !stopped, case let left = deadline - ContinuousClock.now, left > .zero {
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let wait = Int32(min(5, max(1, Self.ms(left).rounded(.up))))
            if poll(&entry, 1, wait) > 0 { acceptQueued(fd) }
        }
    }

    /// Accepts everything the kernel has queued, so that closing the socket resets none of it.
    private func acceptQueued(_ fd: Int32) {
        while true {
            let connection = accept(fd, nil, nil)
            guard connection >= 0 else {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return
            }
            // Not inherited by kurir or the broker, which the suite starts as children. (NIO makes it non-blocking.)
            _ = fcntl(connection, F_SETFD, FD_CLOEXEC)
            figures.withLockedValue { $0.accepted += 1 }
            hand(connection)
        }
    }

    /// Binds the port again, retrying every 1 ms (another socket may hold it for a moment); nil when stopped.
    private func rebind() -> Int32? {
        while !stopped {
            if let fd = try? FlappingListener.listen(port: port) { return fd }
            figures.withLockedValue { $0.rebindFailures += 1 }
            usleep(1000)
        }
        return nil
    }

    private static func ms(_ d: Duration) -> Double {
        Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
    }
}
