import Foundation
import KurirCore
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// Local fake WhatsApp gateways: Fonnte, Wablas and Woowa dialects on one HTTP/1.1 server on 127.0.0.1.
///
/// Paths: `POST /fonnte/send`, `POST /wablas/api/send-message`, `POST /woowa/send_message`,
/// `POST /woowa/send_message_group_id`. Control for out-of-process users:
/// `POST /_control/<provider>` (a JSON ``FakeBehaviour``; missing fields come from the
/// provider's starting behaviour, so tokens given at start survive, and `null` clears an
/// optional field), `POST /_control/reset`, `GET /_requests[?provider=p]` (tokens masked),
/// `GET /_stats` (`{"fonnte":{"received":…,"accepted":…,"refused":…},…}`).
///
/// The token check applies to answers that carry a dialect body (`succeed`, `refuse`,
/// `drip`); transport-level modes (`httpError`, `neverAnswer`, `closeConnection`,
/// `garbage`, `empty`) ignore the token, as a broken gateway would.
public final class FakeGateway: Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel
    private let state: FakeGatewayState
    private let stopped = NIOLockedValueBox(false)
    private let flapping = NIOLockedValueBox<[FlappingListener]>([])

    /// The TCP port the server listens on.
    public let port: Int

    private init(group: MultiThreadedEventLoopGroup, channel: any Channel, state: FakeGatewayState, port: Int) {
        self.group = group
        self.channel = channel
        self.state = state
        self.port = port
    }

    /// Starts the server on 127.0.0.1 (`port` 0 picks a free one), every provider succeeding.
    public static func start(port: Int = 0) async throws -> FakeGateway {
        try await start(port: port, behaviours: [:])
    }

    /// Starts the server with initial behaviours; ``reset()`` and `/_control/reset` return to them.
    public static func start(port: Int = 0, behaviours: [Provider: FakeBehaviour]) async throws -> FakeGateway {
        // One thread is plenty for test traffic and the machines have few cores.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let state = FakeGatewayState(initial: behaviours)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
            .childChannelInitializer { channel in serve(channel, state: state, closeEachConnection: false) }
        do {
            let channel = try await bootstrap.bind(host: "127.0.0.1", port: port).get()
            guard let bound = channel.localAddress?.port else {
                try? await channel.close()
                throw FakeGatewayError("listening socket has no port")
            }
            return FakeGateway(group: group, channel: channel, state: state, port: bound)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// Sets up the HTTP pipeline of one accepted connection.
    static func serve(_ channel: any Channel, state: FakeGatewayState, closeEachConnection: Bool) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
            try channel.pipeline.syncOperations.addHandler(
                FakeGatewayHandler(state: state, closeEachConnection: closeEachConnection))
        }
    }

    /// Opens a second port serving the same providers and records, closed and bound again in a cycle so
    /// that about `closed / (open + closed)` of connection attempts meet no listener and are refused by
    /// the kernel (ECONNREFUSED, not a reset).
    ///
    /// Every answer on it says `Connection: close`: a keep-alive client would otherwise connect once
    /// and never meet a closed phase again. Connections accepted during an open phase are independent
    /// sockets and live on through the closed phases. ``stop()`` closes it.
    public func openFlappingListener(
        open: ClosedRange<Int> = 4...10, closed: ClosedRange<Int> = 2...4
    ) throws -> FlappingListener {
        let state = self.state
        let group = self.group
        let listener = try FlappingListener(openMs: open, closedMs: closed) { fd in
            _ = ClientBootstrap(group: group)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .channelInitializer { FakeGateway.serve($0, state: state, closeEachConnection: true) }
                .withConnectedSocket(fd)
        }
        flapping.withLockedValue { $0.append(listener) }
        return listener
    }

    /// `http://127.0.0.1:<port>`.
    public var baseURL: String { "http://127.0.0.1:\(port)" }

    /// The send URL of a provider's dialect (Woowa: the personal-number endpoint).
    public func url(_ provider: Provider) -> String {
        switch provider {
        case .fonnte: "\(baseURL)/fonnte/send"
        case .wablas: "\(baseURL)/wablas/api/send-message"
        case .woowa: "\(baseURL)/woowa/send_message"
        }
    }

    /// The behaviour currently set for a provider.
    public func behaviour(for provider: Provider) -> FakeBehaviour {
        state.behaviour(for: provider)
    }

    /// Sets how a provider answers from the next request on (restarts its failure-fraction count).
    public func setBehaviour(_ b: FakeBehaviour, for provider: Provider) {
        state.setBehaviour(b, for: provider)
    }

    /// Requests received so far, oldest first, optionally for one provider only.
    public func requests(_ provider: Provider? = nil) -> [RecordedRequest] {
        state.records(provider)
    }

    /// How many requests got the success body, optionally for one provider only.
    public func acceptedCount(_ provider: Provider? = nil) -> Int {
        state.records(provider).count(where: \.accepted)
    }

    /// Per-provider counters since start or the last reset.
    public func stats() -> [Provider: FakeGatewayStats] {
        state.stats()
    }

    /// Restores the starting behaviours and forgets every record and counter.
    public func reset() {
        state.reset()
    }

    /// Waits until `condition(requests)` is true or the deadline passes (returns false). Polls every 20 ms.
    public func waitFor(timeout: Duration, _ condition: @Sendable ([RecordedRequest]) -> Bool) async -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while true {
            if condition(requests()) { return true }
            if clock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Closes the listening socket and every open connection; safe to call twice.
    public func stop() async throws {
        let first = stopped.withLockedValue { was in
            defer { was = true }
            return !was
        }
        guard first else { return }
        // Before the loop goes: a flapping listener hands its connections to it.
        for listener in flapping.withLockedValue({ $0 }) { listener.stop() }
        try? await channel.close()
        // Shutting the loop down also closes connections held open by neverAnswer/drip.
        try await group.shutdownGracefully()
    }
}

/// A fake gateway failed to start.
public struct FakeGatewayError: Error, CustomStringConvertible {
    /// One line saying what went wrong.
    public var description: String

    init(_ description: String) { self.description = description }
}
