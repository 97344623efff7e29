/// The WhatsApp HTTP gateways kurir can talk to.
public enum Provider: String, Sendable, CaseIterable {
    /// Fonnte (`api.fonnte.com`).
    case fonnte
    /// Wablas (per-customer `{region}.wablas.com`).
    case wablas
    /// Woowa (`notifapi.com`).
    case woowa

    /// The public send URL, `nil` for Wablas whose host is per customer.
    public var defaultURL: String? {
        switch self {
        case .fonnte: "https://api.fonnte.com/send"
        case .wablas: nil
        case .woowa: "https://notifapi.com/send_message"
        }
    }
}

/// The position a gateway was configured for.
public enum GatewayRole: String, Sendable {
    /// `WHATSAPP_PROVIDER`.
    case primary
    /// `WHATSAPP_BACKUP_PROVIDER`.
    case backup
    /// `WHATSAPP_TERTIARY_PROVIDER`.
    case tertiary
}

/// One configured gateway.
public struct GatewayConfig: Sendable, Equatable {
    /// Which dialect it speaks.
    public var provider: Provider
    /// Which position it was configured for.
    public var role: GatewayRole
    /// Its token; empty when none was configured (such a gateway is never in the chain).
    public var token: Secret
    /// Its send URL (validated http/https).
    public var url: String

    /// Creates a gateway configuration.
    public init(provider: Provider, role: GatewayRole, token: Secret, url: String) {
        self.provider = provider
        self.role = role
        self.token = token
        self.url = url
    }
}

/// `KURIR_DB_SYNC`: SQLite `synchronous` mode.
public enum DatabaseSync: String, Sendable {
    /// A commit survives power loss.
    case full
    /// A commit survives a crash of kurir, not of the machine.
    case normal
}

/// A request's priority.
public enum Priority: String, Sendable, CaseIterable {
    /// Alerts that must go first.
    case critical
    /// The default.
    case normal
    /// Mass notifications that may wait.
    case bulk
}

/// When deliveries that failed on every gateway are tried again.
public struct RetryPolicy: Sendable, Equatable {
    /// `WHATSAPP_RETRY_DELAY_SECONDS`, default 300 s.
    public var firstDelay: Duration
    /// `WHATSAPP_RETRY_MAX_DELAY_SECONDS`, default 3600 s.
    public var maxDelay: Duration
    /// `WHATSAPP_MAX_RETRIES`, default 8: retry rounds after the first round.
    public var maxRetries: Int

    /// Creates a policy; the defaults are the contract's.
    public init(firstDelay: Duration = .seconds(300), maxDelay: Duration = .seconds(3600), maxRetries: Int = 8) {
        self.firstDelay = firstDelay
        self.maxDelay = maxDelay
        self.maxRetries = maxRetries
    }

    /// Delay before retry round `retry` (1-based: 1 = first retry): firstDelay * 2^(retry-1), capped at maxDelay,
    /// then multiplied by (1 + 0.1 * jitter) where jitter ∈ [-1, 1] is supplied by the caller. Never negative.
    ///
    /// `retry` below 1 is treated as 1; jitter outside [-1, 1] is clamped and NaN counts as 0.
    public func delay(beforeRetry retry: Int, jitter: Double) -> Duration {
        let first = max(0, Double(firstDelay.wholeMilliseconds))
        let cap = max(0, Double(maxDelay.wholeMilliseconds))
        // 2^62 overflows nothing in Double and is far past any cap.
        let exponent = Double(min(max(retry, 1) - 1, 62))
        let base = min(first * pow2(exponent), cap)
        let j = jitter.isNaN ? 0 : min(max(jitter, -1), 1)
        let ms = (base * (1 + 0.1 * j)).rounded()
        return .milliseconds(Int64(max(0, min(ms, Double(Int64.max / 2)))))
    }

    private func pow2(_ e: Double) -> Double {
        var result = 1.0
        var i = 0.0
        while i < e {
            result *= 2
            i += 1
        }
        return result
    }
}

/// Broker connection and topic settings.
public struct MQTTSettings: Sendable, Equatable {
    /// Broker host from `MQTT_URL`.
    public var host: String
    /// Broker port from `MQTT_URL` (default 1883 for `mqtt://`, 8883 for `mqtts://`).
    public var port: Int
    /// `true` for `mqtts://`.
    public var useTLS: Bool
    /// From the URL's `user@`, overridden by `MQTT_USERNAME`.
    public var username: String?
    /// From the URL's `:password@`, overridden by `MQTT_PASSWORD` / `MQTT_PASSWORD_FILE`.
    public var password: Secret?
    /// `MQTT_CLIENT_ID`, default `kurir`.
    public var clientID: String
    /// `MQTT_TOPIC`, default `notify/whatsapp/#`.
    public var topic: String
    /// `MQTT_RESULT_PREFIX`, default `notify/result/whatsapp`.
    public var resultPrefix: String
    /// `MQTT_QOS`: 0 or 1, default 1.
    public var qos: Int
    /// `MQTT_SHARE_GROUP`.
    public var shareGroup: String?
    /// `MQTT_CA_FILE`.
    public var caFile: String?
    /// `MQTT_CERT_FILE`.
    public var certFile: String?
    /// `MQTT_KEY_FILE`.
    public var keyFile: String?

    /// Creates settings; the defaults are the contract's.
    public init(
        host: String = "127.0.0.1", port: Int = 1883, useTLS: Bool = false, username: String? = nil,
        password: Secret? = nil, clientID: String = "kurir", topic: String = "notify/whatsapp/#",
        resultPrefix: String = "notify/result/whatsapp", qos: Int = 1, shareGroup: String? = nil,
        caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil
    ) {
        self.host = host
        self.port = port
        self.useTLS = useTLS
        self.username = username
        self.password = password
        self.clientID = clientID
        self.topic = topic
        self.resultPrefix = resultPrefix
        self.qos = qos
        self.shareGroup = shareGroup
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }

    /// The filter to subscribe to: `$share/<group>/<topic>` when `shareGroup` is set, else `topic`.
    public var subscription: String {
        if let group = shareGroup { return "$share/\(group)/\(topic)" }
        return topic
    }
}
