import Foundation
import KurirCore

/// How a fake gateway answers the requests of one provider.
///
/// Decoded leniently from the control endpoint: every field is optional there and
/// missing ones keep the defaults below, so `{"mode":"refuse"}` is a complete behaviour.
public struct FakeBehaviour: Sendable, Codable, Equatable {
    /// What the gateway does with a request.
    public enum Mode: String, Sendable, Codable, CaseIterable {
        /// Answer the dialect's success body (HTTP 200).
        case succeed
        /// Answer the dialect's refusal body with `reason`, HTTP `httpStatus`.
        case refuse
        /// Answer `httpStatus` (500 when it is below 400) with a plain-text reason phrase.
        case httpError
        /// Read the request and never reply; the socket stays open.
        case neverAnswer
        /// Close the connection right after reading the request.
        case closeConnection
        /// Answer 200 with `<html>oops</html>`.
        case garbage
        /// Answer 200 with an empty body.
        case empty
        /// Answer 200 headers at once, then the success body one byte per second.
        case drip
    }

    /// What the gateway does when neither `failureFraction` nor an outage applies.
    public var mode: Mode = .succeed
    /// Refusal text for `.refuse` (also when `failureMode` is `.refuse`).
    public var reason: String = "target invalid"
    /// HTTP status used with `.refuse` (e.g. Wablas 400/500 with the same JSON body) and `.httpError`.
    public var httpStatus: Int = 200
    /// Delay added before answering, in milliseconds.
    public var latencyMs: Int = 0
    /// Fraction (0…1) of requests that behave as `failureMode`.
    ///
    /// Deterministic: after `n` requests exactly `floor(n × failureFraction)` have failed,
    /// spread evenly (every k-th request for 1/k).
    public var failureFraction: Double = 0
    /// What a request hit by `failureFraction` or an outage does.
    public var failureMode: Mode = .refuse
    /// Start of an outage window (epoch milliseconds, inclusive); `nil` with an end set means "since forever".
    public var outageStartMs: Int64? = nil
    /// End of an outage window (epoch milliseconds, exclusive); `nil` with a start set means "until forever".
    public var outageEndMs: Int64? = nil
    /// When set, requests presenting another token get the dialect's invalid-token failure.
    public var expectedToken: String? = nil

    /// A behaviour that succeeds at once.
    public init() {}

    /// A behaviour from a command-line mode spec: a `Mode` raw value, `refuse:<reason>` or `httpError:<status>`.
    ///
    /// Returns nil for an unknown mode or a non-numeric status.
    public init?(modeSpec: String) {
        let parts = modeSpec.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard let mode = Mode(rawValue: String(parts[0])) else { return nil }
        self.init()
        self.mode = mode
        if parts.count == 2 {
            let argument = String(parts[1])
            switch mode {
            case .refuse:
                self.reason = argument
            case .httpError:
                guard let status = Int(argument), (100...599).contains(status) else { return nil }
                self.httpStatus = status
            default:
                return nil
            }
        }
    }

    /// Decodes a behaviour, taking the default for every missing field.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = FakeBehaviour()
        mode = try c.decodeIfPresent(Mode.self, forKey: .mode) ?? d.mode
        reason = try c.decodeIfPresent(String.self, forKey: .reason) ?? d.reason
        httpStatus = try c.decodeIfPresent(Int.self, forKey: .httpStatus) ?? d.httpStatus
        latencyMs = try c.decodeIfPresent(Int.self, forKey: .latencyMs) ?? d.latencyMs
        failureFraction = try c.decodeIfPresent(Double.self, forKey: .failureFraction) ?? d.failureFraction
        failureMode = try c.decodeIfPresent(Mode.self, forKey: .failureMode) ?? d.failureMode
        outageStartMs = try c.decodeIfPresent(Int64.self, forKey: .outageStartMs)
        outageEndMs = try c.decodeIfPresent(Int64.self, forKey: .outageEndMs)
        expectedToken = try c.decodeIfPresent(String.self, forKey: .expectedToken)
    }
}

/// One header line of a recorded request, as received (name case kept).
public struct HeaderField: Sendable, Equatable {
    /// The header name as the client spelled it.
    public var name: String
    /// The header value.
    public var value: String

    /// A header field.
    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// A request a fake gateway received on one of its provider paths.
///
/// Holds the token as sent, so tests can check what a client presented; its
/// `description` and the `/_requests` endpoint mask it.
public struct RecordedRequest: Sendable, Equatable, CustomStringConvertible {
    /// The dialect the request was addressed to.
    public var provider: Provider
    /// The HTTP method.
    public var method: String
    /// The request target without the query string.
    public var path: String
    /// Every header, in order.
    public var headers: [HeaderField]
    /// The raw body.
    public var body: [UInt8]
    /// Body fields (form-urlencoded or a JSON object), flattened to strings.
    ///
    /// JSON booleans become `"true"`/`"false"`, numbers their decimal text, nested
    /// values their compact JSON text.
    public var fields: [String: String]
    /// Whether the fake answered (or is dripping) the dialect's success body.
    public var accepted: Bool
    /// The mode the request was answered with, after failure fraction, outage and token checks.
    public var answeredAs: FakeBehaviour.Mode
    /// When the request was complete, in epoch milliseconds.
    public var receivedAtMs: Int64

    /// A recorded request.
    public init(
        provider: Provider, method: String, path: String, headers: [HeaderField], body: [UInt8],
        fields: [String: String], accepted: Bool, answeredAs: FakeBehaviour.Mode, receivedAtMs: Int64
    ) {
        self.provider = provider
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.fields = fields
        self.accepted = accepted
        self.answeredAs = answeredAs
        self.receivedAtMs = receivedAtMs
    }

    /// The first header with that name (case-insensitive), if any.
    public func header(_ name: String) -> String? {
        let wanted = name.lowercased()
        return headers.first { $0.name.lowercased() == wanted }?.value
    }

    /// The body decoded as UTF-8 (invalid sequences replaced).
    public var bodyText: String { String(decoding: body, as: UTF8.self) }

    /// The token values this request carries (Authorization header, `key`/`token`/`secret` fields).
    var secrets: [String] {
        var found: [String] = []
        for h in headers where h.name.lowercased() == "authorization" && !h.value.isEmpty {
            found.append(h.value)
            // Wablas sends "token.secret": each half is a secret on its own.
            found.append(contentsOf: h.value.split(separator: ".").map(String.init).filter { $0.count >= 4 })
        }
        for key in ["key", "token", "secret"] {
            if let v = fields[key], !v.isEmpty { found.append(v) }
        }
        // Longest first, so a whole "token.secret" is replaced before its halves.
        return found.sorted { $0.count > $1.count }
    }

    /// A copy with every token value replaced by `****` (headers, fields, body, path).
    public func masked() -> RecordedRequest {
        let secrets = self.secrets
        func mask(_ s: String) -> String {
            var out = s
            for secret in secrets { out = out.replacingOccurrences(of: secret, with: "****") }
            return out
        }
        var copy = self
        copy.headers = headers.map {
            $0.name.lowercased() == "authorization"
                ? HeaderField(name: $0.name, value: "****") : HeaderField(name: $0.name, value: mask($0.value))
        }
        copy.fields = fields.mapValues(mask)
        copy.body = Array(mask(bodyText).utf8)
        copy.path = mask(path)
        return copy
    }

    /// A one-line summary with tokens masked.
    public var description: String {
        let m = masked()
        return
            "\(m.provider.rawValue) \(m.method) \(m.path) accepted=\(m.accepted) as=\(m.answeredAs.rawValue) fields=\(m.fields.sorted { $0.key < $1.key })"
    }
}

/// Per-provider counters of a fake gateway.
public struct FakeGatewayStats: Sendable, Equatable {
    /// Requests received on the provider's send paths.
    public var received: Int = 0
    /// Requests answered (or being dripped) with the success body.
    public var accepted: Int = 0
    /// Requests answered with a dialect refusal (configured refusal, invalid token, missing field).
    public var refused: Int = 0

    /// Zero counters.
    public init() {}
}
