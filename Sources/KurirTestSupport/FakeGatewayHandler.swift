import Foundation
import KurirCore
import NIOCore
import NIOHTTP1

/// Serves one connection of a fake gateway: routes each complete request to a dialect or
/// to the control endpoints and answers it the way the provider's behaviour says.
///
/// Runs entirely on the connection's event loop; the pipelining handler in front of it
/// holds a further keep-alive request back until the current answer is complete.
final class FakeGatewayHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// What to do with a gateway request once its latency has passed.
    private enum Action {
        case respond(FakeAnswer)
        case drip(FakeAnswer)
        case close
        case never
    }

    private let state: FakeGatewayState
    /// Answer every request with `Connection: close`, so each request of a client needs a fresh connect.
    private let closeEachConnection: Bool
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    /// The latency timer or the next drip tick; cancelled when the connection goes away.
    private var pending: Scheduled<Void>?

    init(state: FakeGatewayState, closeEachConnection: Bool = false) {
        self.state = state
        self.closeEachConnection = closeEachConnection
    }

    /// Whether the connection stays open after answering `head`.
    private func keepAlive(_ head: HTTPRequestHead) -> Bool {
        head.isKeepAlive && !closeEachConnection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = context.channel.allocator.buffer(capacity: 0)
        case .body(var chunk):
            body?.writeBuffer(&chunk)
        case .end:
            guard let h = head else { return }
            let bytes = body.map { Array($0.readableBytesView) } ?? []
            head = nil
            body = nil
            handle(context: context, head: h, body: bytes)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        pending?.cancel()
        pending = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: Routing

    private func handle(context: ChannelHandlerContext, head: HTTPRequestHead, body: [UInt8]) {
        let parts = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = String(parts[0])
        let query = parts.count > 1 ? FakeFields.parseForm(String(parts[1])) : [:]

        if let provider = Self.provider(forPath: path) {
            guard head.method == .POST else {
                return write(
                    context: context, head: head, status: 405, contentType: "text/plain", body: Array("Method Not Allowed".utf8))
            }
            return handleGateway(context: context, head: head, path: path, provider: provider, body: body)
        }
        switch (head.method, path) {
        case (.POST, "/_control/reset"):
            state.reset()
            writeJSON(context: context, head: head, status: 200, .object([("ok", .bool(true))]))
        case (.POST, _) where path.hasPrefix("/_control/"):
            let name = String(path.dropFirst("/_control/".count))
            guard let provider = Provider(rawValue: name) else {
                return writeJSON(context: context, head: head, status: 404, Self.error("unknown provider \(name)"))
            }
            do {
                let behaviour = try Self.behaviour(overriding: state.initialBehaviour(for: provider), with: body)
                state.setBehaviour(behaviour, for: provider)
                writeJSON(context: context, head: head, status: 200, .object([("ok", .bool(true))]))
            } catch {
                writeJSON(context: context, head: head, status: 400, Self.error("invalid behaviour: \(error)"))
            }
        case (.GET, "/_requests"):
            var provider: Provider? = nil
            if let name = query["provider"] {
                guard let p = Provider(rawValue: name) else {
                    return writeJSON(context: context, head: head, status: 404, Self.error("unknown provider \(name)"))
                }
                provider = p
            }
            let records = state.records(provider).map(Self.json)
            writeJSON(context: context, head: head, status: 200, .array(records))
        case (.GET, "/_stats"):
            let stats = state.stats()
            let members: [(String, FakeJSON)] = Provider.allCases.map { p in
                let s = stats[p] ?? FakeGatewayStats()
                return (
                    p.rawValue,
                    .object([
                        ("received", .int(Int64(s.received))), ("accepted", .int(Int64(s.accepted))),
                        ("refused", .int(Int64(s.refused))),
                    ])
                )
            }
            writeJSON(context: context, head: head, status: 200, .object(members))
        default:
            write(context: context, head: head, status: 404, contentType: "text/plain", body: Array("Not Found".utf8))
        }
    }

    static func provider(forPath path: String) -> Provider? {
        switch path {
        case "/fonnte/send": .fonnte
        case "/wablas/api/send-message": .wablas
        case "/woowa/send_message", "/woowa/send_message_group_id": .woowa
        default: nil
        }
    }

    // MARK: Gateway requests

    private func handleGateway(
        context: ChannelHandlerContext, head: HTTPRequestHead, path: String, provider: Provider, body: [UInt8]
    ) {
        let now = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
        let fields = FakeFields.parse(body: body, contentType: head.headers.first(name: "content-type"))
        let (behaviour, mode) = state.decide(provider, nowMs: now)

        var answeredAs = mode
        let action: Action
        switch mode {
        case .succeed, .refuse, .drip:
            let token = FakeDialect.presentedToken(
                provider, authorization: head.headers.first(name: "authorization"), fields: fields ?? [:])
            let answer: FakeAnswer
            if let expected = behaviour.expectedToken,
                !FakeDialect.tokenMatches(provider, presented: token, expected: expected)
            {
                answer = FakeDialect.invalidToken(provider)
            } else if mode == .refuse {
                answer = FakeDialect.refusal(provider, reason: behaviour.reason, status: behaviour.httpStatus)
            } else if let invalid = FakeDialect.validationFailure(provider, path: path, fields: fields) {
                answer = invalid
            } else {
                answer = FakeDialect.success(provider, path: path, fields: fields ?? [:], nextSequence: state.nextSequence)
            }
            if mode == .succeed, answer.kind == .refused { answeredAs = .refuse }
            action = mode == .drip ? .drip(answer) : .respond(answer)
        case .httpError:
            let status = behaviour.httpStatus >= 400 ? behaviour.httpStatus : 500
            let phrase = HTTPResponseStatus(statusCode: status).reasonPhrase
            action = .respond(FakeAnswer(kind: .broken, status: status, contentType: "text/plain", body: Array(phrase.utf8)))
        case .garbage:
            action = .respond(
                FakeAnswer(kind: .broken, status: 200, contentType: "text/html", body: Array("<html>oops</html>".utf8)))
        case .empty:
            action = .respond(FakeAnswer(kind: .broken, status: 200, contentType: "application/json", body: []))
        case .closeConnection:
            action = .close
        case .neverAnswer:
            action = .never
        }

        let kind: FakeAnswer.Kind? =
            switch action {
            case .respond(let a), .drip(let a): a.kind
            case .close, .never: nil
            }
        state.record(
            RecordedRequest(
                provider: provider, method: head.method.rawValue, path: path,
                headers: head.headers.map { HeaderField(name: $0.name, value: $0.value) }, body: body,
                fields: fields ?? [:], accepted: kind == .accepted, answeredAs: answeredAs, receivedAtMs: now),
            refused: kind == .refused)

        if behaviour.latencyMs > 0 {
            pending = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(behaviour.latencyMs))) {
                self.pending = nil
                self.perform(action, context: context, head: head)
            }
        } else {
            perform(action, context: context, head: head)
        }
    }

    private func perform(_ action: Action, context: ChannelHandlerContext, head: HTTPRequestHead) {
        switch action {
        case .respond(let a):
            write(context: context, head: head, status: a.status, contentType: a.contentType, body: a.body)
        case .drip(let a):
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: a.contentType)
            headers.add(name: "Content-Length", value: String(a.body.count))
            headers.add(name: "Connection", value: keepAlive(head) ? "keep-alive" : "close")
            context.writeAndFlush(
                wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))),
                promise: nil)
            dripTick(context: context, head: head, remaining: a.body[...])
        case .close:
            context.close(promise: nil)
        case .never:
            break
        }
    }

    /// Sends the next body byte a second from now; the last tick ends the response.
    private func dripTick(context: ChannelHandlerContext, head: HTTPRequestHead, remaining: ArraySlice<UInt8>) {
        pending = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) {
            self.pending = nil
            guard let byte = remaining.first else { return }
            var buffer = context.channel.allocator.buffer(capacity: 1)
            buffer.writeInteger(byte)
            context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            let rest = remaining.dropFirst()
            if rest.isEmpty {
                self.finish(context: context, keepAlive: self.keepAlive(head))
            } else {
                self.dripTick(context: context, head: head, remaining: rest)
            }
        }
    }

    // MARK: Writing

    private func writeJSON(context: ChannelHandlerContext, head: HTTPRequestHead, status: Int, _ json: FakeJSON) {
        write(context: context, head: head, status: status, contentType: "application/json", body: json.bytes)
    }

    private func write(
        context: ChannelHandlerContext, head: HTTPRequestHead, status: Int, contentType: String, body: [UInt8]
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Connection", value: keepAlive(head) ? "keep-alive" : "close")
        let responseHead = HTTPResponseHead(
            version: head.version, status: HTTPResponseStatus(statusCode: status), headers: headers)
        context.write(wrapOutboundOut(.head(responseHead)), promise: nil)
        if !body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: body.count)
            buffer.writeBytes(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        finish(context: context, keepAlive: keepAlive(head))
    }

    private func finish(context: ChannelHandlerContext, keepAlive: Bool) {
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
        if !keepAlive {
            // Close only once the answer is on the wire, or the client would see a reset.
            written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    // MARK: JSON of the control endpoints

    /// The fields present in a control body laid over `base` (the provider's starting
    /// behaviour, which holds tokens and latency given on the command line); `null` clears.
    static func behaviour(overriding base: FakeBehaviour, with body: [UInt8]) throws -> FakeBehaviour {
        let isBlank = body.allSatisfy { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }
        guard !isBlank else { return base }
        guard let overrides = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw FakeGatewayError("a behaviour is a JSON object")
        }
        let known = Set([
            "mode", "reason", "httpStatus", "latencyMs", "failureFraction", "failureMode",
            "outageStartMs", "outageEndMs", "expectedToken",
        ])
        if let unknown = overrides.keys.first(where: { !known.contains($0) }) {
            throw FakeGatewayError("unknown field \(unknown)")
        }
        var merged = try JSONSerialization.jsonObject(with: JSONEncoder().encode(base)) as? [String: Any] ?? [:]
        for (key, value) in overrides { merged[key] = value }
        let data = try JSONSerialization.data(withJSONObject: merged)
        return try JSONDecoder().decode(FakeBehaviour.self, from: data)
    }

    private static func error(_ message: String) -> FakeJSON {
        .object([("ok", .bool(false)), ("error", .string(message))])
    }

    private static func json(_ request: RecordedRequest) -> FakeJSON {
        let m = request.masked()
        return .object([
            ("provider", .string(m.provider.rawValue)),
            ("method", .string(m.method)),
            ("path", .string(m.path)),
            ("headers", .array(m.headers.map { .object([("name", .string($0.name)), ("value", .string($0.value))]) })),
            ("body", .string(m.bodyText)),
            ("fields", .object(m.fields.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })),
            ("accepted", .bool(m.accepted)),
            ("answeredAs", .string(m.answeredAs.rawValue)),
            ("receivedAtMs", .int(m.receivedAtMs)),
        ])
    }
}
