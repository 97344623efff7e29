/// A gateway request body.
public enum GatewayBody: Sendable, Equatable {
    /// `application/x-www-form-urlencoded` fields, in order.
    case form([FormField])
    /// An `application/json` document.
    case json(JSONValue)
}

/// A name/value pair: a form field or an HTTP header.
public struct FormField: Sendable, Equatable {
    /// The name.
    public var name: String
    /// The value (may be a token: never log headers).
    public var value: String

    /// Creates a pair.
    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// One HTTP POST to a gateway, built by `Dialect.makeRequest`.
public struct GatewayRequest: Sendable, Equatable {
    /// The URL to POST to.
    public var url: String
    /// Headers (e.g. `Authorization`), not including `Content-Type`.
    public var headers: [FormField]
    /// The body.
    public var body: GatewayBody

    /// Creates a request.
    public init(url: String, headers: [FormField], body: GatewayBody) {
        self.url = url
        self.headers = headers
        self.body = body
    }

    /// `application/x-www-form-urlencoded` or `application/json`.
    public var contentType: String {
        switch body {
        case .form: "application/x-www-form-urlencoded"
        case .json: "application/json"
        }
    }

    /// The form body percent-encoded as `application/x-www-form-urlencoded`; `nil` for a JSON body.
    public func formEncodedBody() -> [UInt8]? {
        guard case .form(let fields) = body else { return nil }
        var out: [UInt8] = []
        for (index, field) in fields.enumerated() {
            if index > 0 { out.append(UInt8(ascii: "&")) }
            Self.formEncode(field.name, into: &out)
            out.append(UInt8(ascii: "="))
            Self.formEncode(field.value, into: &out)
        }
        return out
    }

    /// WHATWG urlencoded serialiser: alphanumerics and `*-._` kept, space as `+`, the rest `%XX` of UTF-8.
    static func formEncode(_ text: String, into out: inout [UInt8]) {
        let hex = Array("0123456789ABCDEF".utf8)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "*"), UInt8(ascii: "-"), UInt8(ascii: "."),
                UInt8(ascii: "_"):
                out.append(byte)
            case UInt8(ascii: " "):
                out.append(UInt8(ascii: "+"))
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0x0F)])
            }
        }
    }
}

/// What came back from one POST, as the HTTP adapter saw it.
public enum GatewayReply: Sendable, Equatable {
    /// The gateway answered; `json` is the body parsed by the caller (`nil` if not JSON).
    case answered(status: Int, body: [UInt8], json: JSONValue?, truncated: Bool)
    /// Connect refused, DNS, TLS: the gateway never got the request.
    case notSent(reason: String)
    /// Timeout or reset after sending: the gateway may have acted on it.
    case noAnswer(reason: String)
}

/// How one attempt ended.
public enum AttemptOutcome: String, Sendable {
    /// The gateway took the message.
    case accepted
    /// The gateway said no, or never got the request: safe to fail over.
    case refused
    /// Sent, no usable answer: the message may still go out.
    case unknown
}

/// One classified gateway attempt.
public struct AttemptResult: Sendable, Equatable {
    /// The gateway's provider.
    public var provider: Provider
    /// How it ended.
    public var outcome: AttemptOutcome
    /// One-line error, `nil` when accepted.
    public var error: String?
    /// The HTTP status when the gateway answered.
    public var httpStatus: Int?
    /// Time the attempt took.
    public var latencyMs: Int64

    /// Creates a result.
    public init(provider: Provider, outcome: AttemptOutcome, error: String?, httpStatus: Int?, latencyMs: Int64) {
        self.provider = provider
        self.outcome = outcome
        self.error = error
        self.httpStatus = httpStatus
        self.latencyMs = latencyMs
    }
}

/// Why a gateway cannot take a message (e.g. too long for it); the round records it as refused.
public struct SkipReason: Error, Sendable, Equatable {
    /// One line.
    public var message: String

    /// Creates a reason.
    public init(message: String) {
        self.message = message
    }
}

/// The three gateways' HTTP dialects (providers.md): building requests and reading replies.
public enum Dialect {
    /// Longest message a provider takes, in Unicode scalars: wablas 1024, fonnte 60000, woowa no known limit.
    public static func maxMessageCharacters(_ p: Provider) -> Int? {
        switch p {
        case .fonnte: 60_000
        case .wablas: 1024
        case .woowa: nil
        }
    }

    /// nil + reason when this gateway cannot take the message (too long) → the round records a refused attempt with that reason.
    ///
    /// Returns `.failure` with the reason in that case.
    public static func makeRequest(gateway: GatewayConfig, target: Target, message: String, referenceID: String)
        -> Result<GatewayRequest, SkipReason>
    {
        if let limit = maxMessageCharacters(gateway.provider), message.unicodeScalars.count > limit {
            return .failure(
                SkipReason(message: "message longer than \(limit) characters (\(gateway.provider.rawValue) limit)"))
        }
        let token = gateway.token.reveal()
        switch gateway.provider {
        case .fonnte:
            // countryCode=0: the target is already normalised, Fonnte must not rewrite it.
            return .success(
                GatewayRequest(
                    url: gateway.url, headers: [FormField(name: "Authorization", value: token)],
                    body: .form([
                        FormField(name: "target", value: target.value),
                        FormField(name: "message", value: message),
                        FormField(name: "countryCode", value: "0"),
                    ])))
        case .wablas:
            var fields: [FormField] = []
            if target.isGroup {
                fields.append(FormField(name: "phone", value: String(target.value.dropLast("@g.us".count))))
            } else {
                fields.append(FormField(name: "phone", value: target.value))
            }
            fields.append(FormField(name: "message", value: message))
            if target.isGroup { fields.append(FormField(name: "isGroup", value: "true")) }
            fields.append(FormField(name: "ref_id", value: referenceID))
            return .success(
                GatewayRequest(
                    url: gateway.url, headers: [FormField(name: "Authorization", value: token)], body: .form(fields)))
        case .woowa:
            if target.isGroup {
                guard let url = woowaGroupURL(gateway.url) else {
                    return .failure(
                        SkipReason(
                            message: "woowa URL does not end in send_message: cannot derive send_message_group_id"))
                }
                return .success(
                    GatewayRequest(
                        url: url, headers: [],
                        body: .json(
                            .object([
                                JSONMember("group_id", .string(target.value)), JSONMember("key", .string(token)),
                                JSONMember("message", .string(message)),
                            ]))))
            }
            return .success(
                GatewayRequest(
                    url: gateway.url, headers: [],
                    body: .json(
                        .object([
                            JSONMember("phone_no", .string("+" + target.value)), JSONMember("key", .string(token)),
                            JSONMember("message", .string(message)),
                        ]))))
        }
    }

    /// The Woowa group endpoint: the URL's path ending `send_message` becomes `send_message_group_id`.
    static func woowaGroupURL(_ url: String) -> String? {
        var path = Substring(url)
        var query: Substring = ""
        if let question = url.firstIndex(of: "?") {
            path = url[..<question]
            query = url[question...]
        }
        if path.hasSuffix("/") { path = path.dropLast() }
        guard path.hasSuffix("/send_message") else { return nil }
        return path + "_group_id" + query
    }

    /// Classifies a reply with the provider's dialect: accepted, refused or unknown, with a one-line error.
    public static func classify(provider: Provider, reply: GatewayReply, latencyMs: Int64) -> AttemptResult {
        func result(_ outcome: AttemptOutcome, _ error: String?, _ status: Int?) -> AttemptResult {
            AttemptResult(
                provider: provider, outcome: outcome, error: error.map { OneLine.sanitise($0, limit: 200) },
                httpStatus: status, latencyMs: latencyMs)
        }
        // Found by fuzzing: a success body under an HTTP error status is not a success. A 4xx is a
        // refusal (contract §3) and a 5xx a reply kurir cannot trust, whatever the body says.
        func accepted(_ status: Int) -> AttemptResult {
            switch status {
            case 200...299: return result(.accepted, nil, status)
            case 300...499: return result(.refused, "HTTP \(status)", status)
            default: return result(.unknown, "HTTP \(status)", status)
            }
        }
        switch reply {
        case .notSent(let reason):
            return result(.refused, reason.isEmpty ? "not sent" : reason, nil)
        case .noAnswer(let reason):
            return result(.unknown, reason.isEmpty ? "no answer" : reason, nil)
        case .answered(let status, let body, let json, let truncated):
            if truncated { return result(.unknown, "response larger than 64 KiB", status) }
            guard let json, case .object = json else {
                switch status {
                case 500...599: return result(.unknown, "HTTP \(status)", status)
                case 400...499: return result(.refused, "HTTP \(status)", status)
                case 200...299: return result(.unknown, "unparsable response (HTTP \(status))", status)
                case 300...399: return result(.refused, "HTTP \(status) (redirects are not followed)", status)
                default: return result(.unknown, "HTTP \(status)", status)
                }
            }
            switch provider {
            case .fonnte, .wablas:
                guard let statusValue = json.member(caseInsensitive: "status") else {
                    if (500...599).contains(status) { return result(.unknown, "HTTP \(status)", status) }
                    return result(.refused, "unexpected response", status)
                }
                if isTrue(statusValue) { return accepted(status) }
                for key in ["reason", "message", "detail"] {
                    if case .string(let text)? = json.member(caseInsensitive: key),
                        !OneLine.sanitise(text).isEmpty
                    {
                        return result(.refused, text, status)
                    }
                }
                return result(.refused, "status false", status)
            case .woowa:
                if woowaAccepted(json) { return accepted(status) }
                let looksLikeRefusal = ["code", "message", "results", "status"].contains {
                    json.member(caseInsensitive: $0) != nil
                }
                if !looksLikeRefusal && (500...599).contains(status) {
                    return result(.unknown, "HTTP \(status)", status)
                }
                return result(.refused, woowaError(json, body: body), status)
            }
        }
    }

    static func isTrue(_ value: JSONValue) -> Bool {
        switch value {
        case .bool(let flag): flag
        case .string(let text): text.trimmingSpaces().lowercased() == "true"
        default: false
        }
    }

    static func woowaAccepted(_ json: JSONValue) -> Bool {
        let codeIs200: Bool
        switch json["code"] {
        case .integer(200)?: codeIs200 = true
        case .real(200)?: codeIs200 = true
        case .string(let text)?: codeIs200 = text.trimmingSpaces() == "200"
        default: codeIs200 = false
        }
        guard codeIs200, let id = json["results"]?["id_message"] else { return false }
        switch id {
        case .null: return false
        case .string(let text): return !text.isEmpty
        default: return true
        }
    }

    static func woowaError(_ json: JSONValue, body: [UInt8]) -> String {
        let candidates: [JSONValue?] = [json["message"], json["results"], json["results"]?["message"]]
        for candidate in candidates {
            if case .string(let text)? = candidate, !OneLine.sanitise(text).isEmpty { return text }
        }
        let text = OneLine.sanitise(String(decoding: body, as: UTF8.self), limit: 200)
        return text.isEmpty ? "unexpected response" : text
    }
}
