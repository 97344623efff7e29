import CMosquitto

/// How to reach and authenticate to the MQTT broker.
///
/// `password` is a plain `String` because libmosquitto needs the bytes; this type has no
/// `description` of its own and nothing in this module prints it.
public struct MQTTConnectOptions: Sendable {
    /// Broker host name or address.
    public var host: String
    /// Broker TCP port.
    public var port: Int
    /// Connect with TLS (`mqtts://`); then `caFile` is required and the certificate and host name are verified.
    public var useTLS: Bool
    /// PEM file with the certificate authorities trusted for the broker's certificate.
    public var caFile: String?
    /// PEM client certificate, for brokers that require one (needs `keyFile`).
    public var certFile: String?
    /// PEM private key of `certFile`.
    public var keyFile: String?
    /// User name sent in CONNECT, if any.
    public var username: String?
    /// Password sent in CONNECT, if any (a secret: never logged).
    public var password: String?
    /// Client identifier; must be fixed and unique for a persistent session to survive restarts.
    public var clientID: String
    /// `false` (the default) keeps the session on the broker, so QoS 1 messages published while the
    /// client is away are queued for it.
    public var cleanSession: Bool
    /// MQTT keep-alive interval (whole seconds, at least 5 s are used).
    public var keepAlive: Duration
    /// At most this many unacknowledged outgoing QoS 1 publishes on the wire; more wait inside
    /// libmosquitto and go out as PUBACKs return.
    ///
    /// libmosquitto walks its list of outgoing messages from the head on every PUBACK, up to the first
    /// one still waiting for a slot, so each PUBACK costs time in proportion to this window once it is full.
    public var maxInflightMessages: Int = 4096
    /// Name of the network thread as `top -H` and `/proc/<pid>/task/*/comm` show it (at most 15 bytes
    /// are kept).
    public var threadName: String = "mqtt"
    /// `true`: publishes are queued and written together when `MQTTClient.flush()` is called, by the
    /// client's own network loop: one wake-up of the network thread per batch instead of one per publish.
    /// `false` (the default): each publish goes out at once through libmosquitto's loop.
    public var publishesOnFlush: Bool = false

    /// Creates options with a persistent session and a 30 s keep-alive.
    public init(
        host: String, port: Int, clientID: String,
        useTLS: Bool = false, caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil,
        username: String? = nil, password: String? = nil,
        cleanSession: Bool = false, keepAlive: Duration = .seconds(30)
    ) {
        self.host = host
        self.port = port
        self.clientID = clientID
        self.useTLS = useTLS
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.username = username
        self.password = password
        self.cleanSession = cleanSession
        self.keepAlive = keepAlive
    }
}

/// One message received from the broker; the bytes are a copy owned by Swift.
public struct MQTTMessage: Sendable {
    /// Topic the message was published on.
    public var topic: String
    /// Payload bytes, unvalidated (libmosquitto does not limit their size).
    public var payload: [UInt8]
    /// QoS the message was delivered with.
    public var qos: Int
    /// Whether the broker delivered it as a retained message.
    public var retain: Bool

    /// Creates a message value.
    public init(topic: String, payload: [UInt8], qos: Int, retain: Bool) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
    }
}

/// A libmosquitto result code with the operation that produced it.
///
/// The description comes from `mosquitto_strerror`; it never contains a password or payload.
public struct MQTTError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The `MOSQ_ERR_*` code (or `invalidConfiguration` for checks made in Swift).
    public var code: Int32
    /// What was being done, e.g. "connect" or "publish".
    public var operation: String
    /// Extra detail written by this module (never a secret), or nil.
    public var detail: String?

    /// Creates an error from a libmosquitto result code.
    public init(code: Int32, operation: String, detail: String? = nil) {
        self.code = code
        self.operation = operation
        self.detail = detail
    }

    /// One line: operation, the library's text for the code, and the code.
    public var description: String {
        let text = detail ?? String(cString: mosquitto_strerror(code))
        return "mqtt \(operation) failed: \(text) (mosquitto error \(code))"
    }

    /// `MOSQ_ERR_INVAL`: invalid arguments or options.
    public static let invalid: Int32 = Int32(MOSQ_ERR_INVAL.rawValue)
    /// `MOSQ_ERR_NOMEM`: out of memory.
    public static let noMemory: Int32 = Int32(MOSQ_ERR_NOMEM.rawValue)
    /// `MOSQ_ERR_NO_CONN`: not connected to a broker.
    public static let noConnection: Int32 = Int32(MOSQ_ERR_NO_CONN.rawValue)
    /// `MOSQ_ERR_PAYLOAD_SIZE`: payload too large.
    public static let payloadSize: Int32 = Int32(MOSQ_ERR_PAYLOAD_SIZE.rawValue)
    /// `MOSQ_ERR_ERRNO`: a system call failed.
    public static let systemError: Int32 = Int32(MOSQ_ERR_ERRNO.rawValue)
    /// `MOSQ_ERR_TLS`: TLS setup or handshake failed.
    public static let tls: Int32 = Int32(MOSQ_ERR_TLS.rawValue)
    /// `MOSQ_ERR_CONN_REFUSED`: the broker refused the connection.
    public static let connectionRefused: Int32 = Int32(MOSQ_ERR_CONN_REFUSED.rawValue)
    /// `MOSQ_ERR_NOT_SUPPORTED`: the operation is not supported (e.g. QoS out of range).
    public static let notSupported: Int32 = Int32(MOSQ_ERR_NOT_SUPPORTED.rawValue)
    /// `MOSQ_ERR_MALFORMED_UTF8`: a topic is not valid UTF-8.
    public static let malformedUTF8: Int32 = Int32(MOSQ_ERR_MALFORMED_UTF8.rawValue)
}

/// Process-wide libmosquitto set-up.
public enum MQTTGlobal {
    // A Swift static is initialised exactly once, thread-safely, so repeated calls are harmless.
    private static let initialized: Int32 = mosquitto_lib_init()

    /// Initialises libmosquitto (`mosquitto_lib_init`); call once in `main` before any thread starts.
    ///
    /// Idempotent; `MQTTClient.init` also calls it so a forgotten call cannot crash.
    public static func initialize() {
        _ = initialized
    }
}
