import KurirCore
import KurirHTTP
import KurirJSON

/// Moves one gateway request over HTTP and turns the answer into KurirCore's terms.
///
/// Shared by the daemon's delivery loop and `kurir send`, so both classify exactly alike.
struct GatewayCaller: Sendable {
    let http: HTTPClient
    let timeout: Duration
    let connectTimeout: Duration

    /// Sends `request` and returns the reply with its latency in milliseconds.
    func call(_ request: GatewayRequest) async -> (reply: GatewayReply, latencyMs: Int64) {
        let body: [UInt8]
        switch request.body {
        case .form:
            body = request.formEncodedBody() ?? []
        case .json(let value):
            body = JSONCodec.encode(value)
        }
        var headers = request.headers.map { (name: $0.name, value: $0.value) }
        headers.append((name: "Content-Type", value: request.contentType))
        let httpRequest = HTTPRequest(
            url: request.url, headers: headers, body: body,
            timeout: timeout, connectTimeout: connectTimeout)
        let (response, elapsed) = await http.post(httpRequest)
        return (Self.reply(from: response), Self.milliseconds(elapsed))
    }

    static func reply(from response: HTTPResponse) -> GatewayReply {
        switch response {
        case .answered(let status, let body, let truncated):
            let json = truncated ? nil : try? JSONCodec.decode(body)
            return .answered(status: status, body: body, json: json, truncated: truncated)
        case .notSent(let reason):
            return .notSent(reason: reason)
        case .noAnswer(let reason):
            return .noAnswer(reason: reason)
        }
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
