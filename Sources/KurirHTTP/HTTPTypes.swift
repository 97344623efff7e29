/// One HTTP POST to a gateway.
public struct HTTPRequest: Sendable {
    /// Absolute `http://` or `https://` URL; any other scheme ends as ``HTTPResponse/notSent(reason:)``.
    public var url: String
    /// Request headers in the order given. Values may hold tokens: they are never logged or
    /// echoed in a reason. A name or value with CR, LF or NUL is refused before anything is sent.
    public var headers: [(name: String, value: String)]
    /// The request body, sent as is.
    public var body: [UInt8]
    /// Limit on the whole request: connecting, sending and reading the answer.
    public var timeout: Duration
    /// Limit on establishing the connection (TCP and TLS); the whole-request limit still applies.
    public var connectTimeout: Duration

    /// Creates a request; the timeouts default to the contract's 10 s gateway timeout and 5 s to connect.
    public init(
        url: String,
        headers: [(name: String, value: String)] = [],
        body: [UInt8] = [],
        timeout: Duration = .seconds(10),
        connectTimeout: Duration = .seconds(5)
    ) {
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.connectTimeout = connectTimeout
    }
}

/// How a POST ended. Every failure is a value, split by what it means for a possible duplicate.
public enum HTTPResponse: Sendable, Equatable {
    /// The server answered with `status` (any status, redirects included: they are not followed).
    /// `body` holds at most the client's `maxBodyBytes`; `bodyTruncated` says there was more.
    case answered(status: Int, body: [UInt8], bodyTruncated: Bool)
    /// The request never reached the server: connection refused, DNS, TLS, bad URL, unsupported
    /// scheme, connect timeout, or the client was shut down before it started. Safe to fail over.
    case notSent(reason: String)
    /// The request went out but no complete answer came back ("timeout", "connection reset",
    /// "empty reply", ...). The server may have acted on it.
    case noAnswer(reason: String)
}

/// Why an ``HTTPClient`` could not be created.
public struct HTTPClientError: Error, Sendable, CustomStringConvertible {
    /// Which kind of failure this is; more codes may be added.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: Sendable, Hashable {
            case invalidArgument
            case curlUnavailable
            case threadStart
        }

        private let base: Base

        /// An argument to the initialiser was out of range.
        public static let invalidArgument = Code(base: .invalidArgument)
        /// libcurl could not create or configure its multi handle.
        public static let curlUnavailable = Code(base: .curlUnavailable)
        /// The dedicated curl thread could not be started.
        public static let threadStart = Code(base: .threadStart)

        /// The code's name.
        public var description: String {
            switch base {
            case .invalidArgument: "invalid argument"
            case .curlUnavailable: "curl unavailable"
            case .threadStart: "thread start"
            }
        }
    }

    /// Which kind of failure this is.
    public var code: Code
    /// One line saying what went wrong.
    public var message: String

    /// Creates an error from a code and a one-line message.
    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    /// The one-line message.
    public var description: String { message }
}
