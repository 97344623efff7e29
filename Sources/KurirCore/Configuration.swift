/// A configuration problem: names the variable, never contains a secret value.
///
/// The executable turns it into one line on stderr and exit status 2.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The environment variable at fault (or `.env line N` for a malformed env file line).
    public var variable: String
    /// What is wrong, in one line.
    public var message: String

    /// Creates an error for `variable`.
    public init(variable: String, message: String) {
        self.variable = variable
        self.message = message
    }

    /// `<VARIABLE>: <message>` on one line.
    public var description: String {
        "\(OneLine.sanitise(variable, limit: 100)): \(OneLine.sanitise(message, limit: 400))"
    }
}

/// The whole effective configuration of kurir, parsed from the environment.
public struct KurirConfiguration: Sendable {
    /// `WHATSAPP_ENABLED`.
    public var enabled: Bool
    /// `WHATSAPP_ENABLE_FAILOVER`.
    public var failoverEnabled: Bool
    /// Every configured gateway, primary first (for `kurir check`), including ones left out of the chain.
    public var gateways: [GatewayConfig]
    /// The effective chain: primary, then backup/tertiary only if failover is enabled and they have a token.
    public var chain: [GatewayConfig]
    /// Startup notices, e.g. a backup without a token.
    public var notices: [String]
    /// `WHATSAPP_TIMEOUT_SECONDS`, default 10 s: whole-request timeout of one attempt.
    public var timeout: Duration
    /// min(timeout, 5 s).
    public var connectTimeout: Duration
    /// The retry schedule.
    public var retry: RetryPolicy
    /// `WHATSAPP_MAX_IN_FLIGHT`, default `defaultMaxInFlight`: gateway requests in flight at once.
    public var maxInFlight: Int
    /// `WHATSAPP_DEFAULT_COUNTRY_CODE`, default `62` (1–3 digits).
    public var defaultCountryCode: String
    /// Broker settings.
    public var mqtt: MQTTSettings
    /// `KURIR_DB_PATH`, default `./kurir.db`.
    public var databasePath: String
    /// `KURIR_DB_SYNC`, default `full`.
    public var databaseSync: DatabaseSync
    /// `KURIR_LOG_LEVEL`, default `info`: one of trace debug info notice warning error critical.
    public var logLevel: String

    /// Default of `WHATSAPP_MAX_IN_FLIGHT`: gateways answer in 0.5–2 s, so throughput is about
    /// in-flight ÷ latency; 256 drains ≈ 250 deliveries/s from 1 s gateways (measured: docs/performance.md)
    /// while costing only idle sockets and a few KiB per round.
    public static let defaultMaxInFlight = 256
    /// Upper bound of `WHATSAPP_MAX_IN_FLIGHT` (each request holds a socket and a libcurl handle).
    public static let maxInFlightLimit = 4096

    /// The log levels `KURIR_LOG_LEVEL` accepts.
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// Creates a configuration directly (tests, tools); `parse(environment:readFile:)` is the normal way.
    public init(
        enabled: Bool = true, failoverEnabled: Bool = true, gateways: [GatewayConfig], chain: [GatewayConfig]? = nil,
        notices: [String] = [], timeout: Duration = .seconds(10), connectTimeout: Duration? = nil,
        retry: RetryPolicy = RetryPolicy(), defaultCountryCode: String = "62", mqtt: MQTTSettings = MQTTSettings(),
        databasePath: String = "./kurir.db", databaseSync: DatabaseSync = .full, logLevel: String = "info",
        maxInFlight: Int = KurirConfiguration.defaultMaxInFlight
    ) {
        self.maxInFlight = maxInFlight
        self.enabled = enabled
        self.failoverEnabled = failoverEnabled
        self.gateways = gateways
        self.chain = chain ?? gateways
        self.notices = notices
        self.timeout = timeout
        self.connectTimeout = connectTimeout ?? min(timeout, .seconds(5))
        self.retry = retry
        self.defaultCountryCode = defaultCountryCode
        self.mqtt = mqtt
        self.databasePath = databasePath
        self.databaseSync = databaseSync
        self.logLevel = logLevel
    }

    /// Parses the environment. `readFile` returns a file's content (used for NAME_FILE secrets; trailing newline(s) trimmed by you).
    ///
    /// Empty values count as unset. Surrounding spaces are trimmed from every value.
    public static func parse(
        environment: [String: String], readFile: (String) throws -> String
    ) throws(ConfigurationError) -> KurirConfiguration {
        let env = environment
        var notices: [String] = []

        let enabled = try bool(env, "WHATSAPP_ENABLED", default: true)
        let failoverEnabled = try bool(env, "WHATSAPP_ENABLE_FAILOVER", default: true)

        let primaryProvider = try provider(env, "WHATSAPP_PROVIDER") ?? .fonnte
        let primaryToken = try secret(env, "WHATSAPP_API_TOKEN", readFile: readFile)
        if enabled && primaryToken == nil {
            throw ConfigurationError(
                variable: "WHATSAPP_API_TOKEN",
                message: "required when WHATSAPP_ENABLED is true (set it or WHATSAPP_API_TOKEN_FILE)")
        }
        let primaryURL = try gatewayURL(
            env, "WHATSAPP_API_URL", provider: primaryProvider, required: true)
        let primary = GatewayConfig(
            provider: primaryProvider, role: .primary, token: primaryToken ?? Secret(""), url: primaryURL ?? "")
        var gateways = [primary]
        var chain = [primary]

        for (role, prefix) in [(GatewayRole.backup, "WHATSAPP_BACKUP"), (.tertiary, "WHATSAPP_TERTIARY")] {
            let providerVariable = prefix + "_PROVIDER"
            let tokenVariable = prefix + "_API_TOKEN"
            let urlVariable = prefix + "_API_URL"
            let token = try secret(env, tokenVariable, readFile: readFile)
            guard let provider = try provider(env, providerVariable) else {
                if token != nil || value(env, urlVariable) != nil {
                    notices.append(
                        "\(tokenVariable) or \(urlVariable) is set but \(providerVariable) is not: no \(role.rawValue) gateway")
                }
                continue
            }
            let url = try gatewayURL(env, urlVariable, provider: provider, required: token != nil)
            let gateway = GatewayConfig(provider: provider, role: role, token: token ?? Secret(""), url: url ?? "")
            gateways.append(gateway)
            if token == nil {
                notices.append("\(providerVariable) \(provider.rawValue) has no \(tokenVariable): not in the chain")
            } else if failoverEnabled {
                chain.append(gateway)
            }
        }
        if !failoverEnabled && gateways.count > 1 {
            notices.append("WHATSAPP_ENABLE_FAILOVER is false: only the primary (\(primaryProvider.rawValue)) is tried")
        }

        let timeoutSeconds = try integer(env, "WHATSAPP_TIMEOUT_SECONDS", default: 10, minimum: 1)
        let firstDelay = try integer(env, "WHATSAPP_RETRY_DELAY_SECONDS", default: 300, minimum: 1)
        let maxDelay = try integer(env, "WHATSAPP_RETRY_MAX_DELAY_SECONDS", default: 3600, minimum: 1)
        let maxRetries = try integer(env, "WHATSAPP_MAX_RETRIES", default: 8, minimum: 0)
        let maxInFlight = try integer(env, "WHATSAPP_MAX_IN_FLIGHT", default: defaultMaxInFlight, minimum: 1)
        guard maxInFlight <= maxInFlightLimit else {
            throw ConfigurationError(
                variable: "WHATSAPP_MAX_IN_FLIGHT", message: "at most \(maxInFlightLimit), not \(maxInFlight)")
        }
        if maxDelay < firstDelay {
            notices.append(
                "WHATSAPP_RETRY_MAX_DELAY_SECONDS (\(maxDelay)) is below WHATSAPP_RETRY_DELAY_SECONDS (\(firstDelay)): every retry waits \(maxDelay) s"
            )
        }
        let timeout = Duration.seconds(timeoutSeconds)

        var countryCode = value(env, "WHATSAPP_DEFAULT_COUNTRY_CODE") ?? "62"
        if countryCode.hasPrefix("+") { countryCode.removeFirst() }
        guard (1...3).contains(countryCode.utf8.count), countryCode.utf8.allSatisfy(isDigit),
            !countryCode.hasPrefix("0")
        else {
            throw ConfigurationError(
                variable: "WHATSAPP_DEFAULT_COUNTRY_CODE", message: "must be 1 to 3 digits not starting with 0, e.g. 62")
        }

        let mqtt = try mqttSettings(env, readFile: readFile, notices: &notices)

        let databasePath = value(env, "KURIR_DB_PATH") ?? "./kurir.db"
        let syncText = value(env, "KURIR_DB_SYNC")?.lowercased() ?? "full"
        guard let databaseSync = DatabaseSync(rawValue: syncText) else {
            throw ConfigurationError(variable: "KURIR_DB_SYNC", message: "must be full or normal")
        }
        let logLevel = value(env, "KURIR_LOG_LEVEL")?.lowercased() ?? "info"
        guard logLevels.contains(logLevel) else {
            throw ConfigurationError(
                variable: "KURIR_LOG_LEVEL", message: "must be one of \(logLevels.joined(separator: ", "))")
        }

        return KurirConfiguration(
            enabled: enabled, failoverEnabled: failoverEnabled, gateways: gateways, chain: chain, notices: notices,
            timeout: timeout, connectTimeout: min(timeout, .seconds(5)),
            retry: RetryPolicy(
                firstDelay: .seconds(firstDelay), maxDelay: .seconds(maxDelay), maxRetries: maxRetries),
            defaultCountryCode: countryCode, mqtt: mqtt, databasePath: databasePath, databaseSync: databaseSync,
            logLevel: logLevel, maxInFlight: maxInFlight)
    }

    /// Human-readable effective configuration for `kurir check`, secrets masked as ****, one item per line.
    public var summaryLines: [String] {
        var lines: [String] = []
        lines.append("WHATSAPP_ENABLED: \(enabled)")
        lines.append("WHATSAPP_ENABLE_FAILOVER: \(failoverEnabled)")
        lines.append(
            "chain: " + chain.map { "\($0.provider.rawValue) (\($0.role.rawValue))" }.joined(separator: " -> "))
        for gateway in gateways {
            let token = gateway.token.isEmpty ? "(none)" : "\(gateway.token)"
            let url = gateway.url.isEmpty ? "(none)" : Self.displayURL(gateway.url)
            let inChain = chain.contains(gateway) ? "" : ", not in the chain"
            lines.append(
                "gateway \(gateway.role.rawValue): \(gateway.provider.rawValue) url \(url) token \(token)\(inChain)")
        }
        lines.append(
            "timeout: \(Self.seconds(timeout)) s (connect \(Self.seconds(connectTimeout)) s)")
        lines.append(
            "retry: first delay \(Self.seconds(retry.firstDelay)) s, max delay \(Self.seconds(retry.maxDelay)) s, max retries \(retry.maxRetries)"
        )
        lines.append("max in flight: \(maxInFlight)")
        lines.append("default country code: \(defaultCountryCode)")
        let scheme = mqtt.useTLS ? "mqtts" : "mqtt"
        let host = mqtt.host.contains(":") ? "[\(mqtt.host)]" : mqtt.host
        var broker = "MQTT broker: \(scheme)://\(host):\(mqtt.port)"
        if let user = mqtt.username { broker += " user \(OneLine.sanitise(user, limit: 100))" }
        if let password = mqtt.password { broker += " password \(password)" }
        lines.append(broker)
        lines.append("MQTT client id: \(mqtt.clientID)")
        lines.append("MQTT subscription: \(mqtt.subscription) (QoS \(mqtt.qos))")
        lines.append("MQTT result prefix: \(mqtt.resultPrefix)")
        if mqtt.caFile != nil || mqtt.certFile != nil || mqtt.keyFile != nil {
            lines.append(
                "MQTT TLS files: ca \(mqtt.caFile ?? "(none)"), cert \(mqtt.certFile ?? "(none)"), key \(mqtt.keyFile ?? "(none)")"
            )
        }
        lines.append("database: \(databasePath) (synchronous \(databaseSync.rawValue))")
        lines.append("log level: \(logLevel)")
        for notice in notices { lines.append("notice: \(notice)") }
        return lines
    }

    // MARK: - Parsing helpers

    static let secretVariables: Set<String> = [
        "WHATSAPP_API_TOKEN", "WHATSAPP_BACKUP_API_TOKEN", "WHATSAPP_TERTIARY_API_TOKEN", "MQTT_PASSWORD",
    ]

    /// The trimmed value, `nil` when unset or empty.
    static func value(_ env: [String: String], _ name: String) -> String? {
        guard let raw = env[name] else { return nil }
        let trimmed = raw.trimmingSpaces()
        return trimmed.isEmpty ? nil : trimmed
    }

    static func secret(
        _ env: [String: String], _ name: String, readFile: (String) throws -> String
    ) throws(ConfigurationError) -> Secret? {
        let fileVariable = name + "_FILE"
        let direct = env[name].flatMap { $0.isEmpty ? nil : $0 }
        let path = value(env, fileVariable)
        if direct != nil && path != nil {
            throw ConfigurationError(variable: name, message: "set both directly and as \(fileVariable); set only one")
        }
        var raw: String
        var source = name
        if let direct {
            raw = direct
        } else if let path {
            source = fileVariable
            do {
                raw = try readFile(path)
            } catch {
                throw ConfigurationError(
                    variable: fileVariable, message: "cannot read \(path): \(OneLine.sanitise("\(error)", limit: 200))")
            }
            // Files written by editors and `echo` end in a newline; that is not part of the secret.
            while let last = raw.unicodeScalars.last, last == "\n" || last == "\r" {
                raw.unicodeScalars.removeLast()
            }
        } else {
            return nil
        }
        if raw.unicodeScalars.contains(where: { $0 == "\n" || $0 == "\r" }) {
            throw ConfigurationError(variable: source, message: "contains a line break")
        }
        let trimmed = raw.trimmingSpaces()
        return trimmed.isEmpty ? nil : Secret(trimmed)
    }

    static func bool(_ env: [String: String], _ name: String, default defaultValue: Bool) throws(ConfigurationError)
        -> Bool
    {
        guard let text = value(env, name) else { return defaultValue }
        switch text.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default:
            throw ConfigurationError(
                variable: name, message: "must be true or false (also 1/0, yes/no), not \"\(OneLine.sanitise(text, limit: 64))\"")
        }
    }

    static func integer(_ env: [String: String], _ name: String, default defaultValue: Int, minimum: Int)
        throws(ConfigurationError) -> Int
    {
        guard let text = value(env, name) else { return defaultValue }
        let shown = OneLine.sanitise(text, limit: 64)
        guard text.utf8.allSatisfy(isDigit), let number = Int(text), number >= minimum else {
            let kind = minimum == 0 ? "a whole number (0 or more)" : "a positive whole number"
            throw ConfigurationError(variable: name, message: "must be \(kind), not \"\(shown)\"")
        }
        guard number <= 1_000_000_000 else {
            throw ConfigurationError(variable: name, message: "too large: \(shown)")
        }
        return number
    }

    static func provider(_ env: [String: String], _ name: String) throws(ConfigurationError) -> Provider? {
        guard let text = value(env, name) else { return nil }
        guard let provider = Provider(rawValue: text.lowercased()) else {
            throw ConfigurationError(
                variable: name,
                message: "unknown provider \"\(OneLine.sanitise(text, limit: 64))\" (expected fonnte, wablas or woowa)")
        }
        return provider
    }

    static func gatewayURL(_ env: [String: String], _ name: String, provider: Provider, required: Bool)
        throws(ConfigurationError) -> String?
    {
        guard let text = value(env, name) else {
            if let url = provider.defaultURL { return url }
            guard required else { return nil }
            throw ConfigurationError(
                variable: name,
                message:
                    "required for a \(provider.rawValue) gateway (its host is per customer, e.g. https://kudus.wablas.com/api/send-message)"
            )
        }
        if let problem = httpURLProblem(text) {
            throw ConfigurationError(variable: name, message: problem)
        }
        return text
    }

    /// Why `text` is not an acceptable gateway URL, `nil` when it is.
    static func httpURLProblem(_ text: String) -> String? {
        let generic = "must be an http:// or https:// URL with a host"
        if text.unicodeScalars.contains(where: { $0.properties.isWhitespace || OneLine.isUnsafe($0) }) {
            return generic + " (no spaces or control characters)"
        }
        let lower = text.lowercased()
        let rest: Substring
        if lower.hasPrefix("http://") {
            rest = text.dropFirst(7)
        } else if lower.hasPrefix("https://") {
            rest = text.dropFirst(8)
        } else {
            return generic
        }
        let authority = rest.prefix(while: { $0 != "/" && $0 != "?" && $0 != "#" })
        if authority.contains("@") { return "must not contain credentials (user:password@)" }
        guard let (_, _) = hostAndPort(authority, defaultPort: 0) else { return generic }
        return nil
    }

    /// Splits `host[:port]` or `[v6]:port`; `nil` when the host is empty or malformed or the port is not 1–65535.
    static func hostAndPort(_ authority: Substring, defaultPort: Int) -> (String, Int)? {
        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return nil }
                portText = after.dropFirst()
            }
            guard !host.isEmpty, host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return nil }
        } else {
            if let colon = authority.firstIndex(of: ":") {
                host = authority[..<colon]
                portText = authority[authority.index(after: colon)...]
            } else {
                host = authority
            }
            guard !host.isEmpty,
                host.unicodeScalars.allSatisfy({
                    ($0.isASCII && ($0.properties.isAlphabetic || isDigit(UInt8($0.value)))) || $0 == "-" || $0 == "."
                        || $0 == "_"
                })
            else { return nil }
        }
        var port = defaultPort
        if let portText {
            guard !portText.isEmpty, portText.utf8.allSatisfy(isDigit), let number = Int(portText),
                (1...65_535).contains(number)
            else { return nil }
            port = number
        }
        return (String(host), port)
    }

    static func mqttSettings(
        _ env: [String: String], readFile: (String) throws -> String, notices: inout [String]
    ) throws(ConfigurationError) -> MQTTSettings {
        var settings = MQTTSettings()
        // The URL may carry a password: never echo it.
        let urlText = value(env, "MQTT_URL") ?? "mqtt://127.0.0.1:1883"
        let lower = urlText.lowercased()
        var rest: Substring
        if lower.hasPrefix("mqtt://") {
            rest = urlText.dropFirst(7)
            settings.useTLS = false
        } else if lower.hasPrefix("mqtts://") {
            rest = urlText.dropFirst(8)
            settings.useTLS = true
        } else {
            throw ConfigurationError(variable: "MQTT_URL", message: "must start with mqtt:// or mqtts://")
        }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        if rest.contains(where: { $0 == "/" || $0 == "?" || $0 == "#" }) {
            throw ConfigurationError(
                variable: "MQTT_URL", message: "must be mqtt[s]://[user[:password]@]host[:port] with no path")
        }
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let user: Substring
            var password: Substring?
            if let colon = userInfo.firstIndex(of: ":") {
                user = userInfo[..<colon]
                password = userInfo[userInfo.index(after: colon)...]
            } else {
                user = userInfo
            }
            guard let decodedUser = percentDecode(user), let decodedPassword = password.map(percentDecode) ?? "" else {
                throw ConfigurationError(variable: "MQTT_URL", message: "user or password has a malformed %-escape")
            }
            if !decodedUser.isEmpty { settings.username = decodedUser }
            if !decodedPassword.isEmpty {
                if decodedPassword.unicodeScalars.contains(where: { $0 == "\n" || $0 == "\r" }) {
                    throw ConfigurationError(variable: "MQTT_URL", message: "password contains a line break")
                }
                settings.password = Secret(decodedPassword)
            }
        }
        guard let (host, port) = hostAndPort(rest, defaultPort: settings.useTLS ? 8883 : 1883) else {
            throw ConfigurationError(variable: "MQTT_URL", message: "must have a host and an optional port 1-65535")
        }
        settings.host = host
        settings.port = port

        if let user = value(env, "MQTT_USERNAME") { settings.username = user }
        if let password = try secret(env, "MQTT_PASSWORD", readFile: readFile) { settings.password = password }

        if let clientID = value(env, "MQTT_CLIENT_ID") {
            guard !clientID.unicodeScalars.contains(where: OneLine.isUnsafe), clientID.utf8.count <= 256 else {
                throw ConfigurationError(variable: "MQTT_CLIENT_ID", message: "must be printable and at most 256 bytes")
            }
            settings.clientID = clientID
        }

        if let topic = value(env, "MQTT_TOPIC") {
            if topic.hasPrefix("$share/") {
                throw ConfigurationError(variable: "MQTT_TOPIC", message: "use MQTT_SHARE_GROUP instead of a $share/ prefix")
            }
            guard TopicFilter.isValidFilter(topic), !topic.unicodeScalars.contains(where: OneLine.isUnsafe) else {
                throw ConfigurationError(
                    variable: "MQTT_TOPIC",
                    message: "not a valid MQTT topic filter (# only as the last level, + only as a whole level)")
            }
            settings.topic = topic
        }

        if var prefix = value(env, "MQTT_RESULT_PREFIX") {
            while prefix.hasSuffix("/") { prefix.removeLast() }
            guard TopicFilter.isValidTopicName(prefix) else {
                throw ConfigurationError(
                    variable: "MQTT_RESULT_PREFIX", message: "must be a topic without + or # or control characters")
            }
            settings.resultPrefix = prefix
        }
        // An event topic that matched the request filter would be consumed as a request: a loop.
        if TopicFilter.matches(settings.topic, topic: "\(settings.resultPrefix)/x/y")
            || TopicFilter.matches(settings.topic, topic: "\(settings.resultPrefix)/x")
        {
            throw ConfigurationError(
                variable: "MQTT_RESULT_PREFIX",
                message: "overlaps the request subscription \(settings.topic): events would be read back as requests")
        }

        if let qosText = value(env, "MQTT_QOS") {
            switch qosText {
            case "0": settings.qos = 0
            case "1": settings.qos = 1
            case "2":
                throw ConfigurationError(
                    variable: "MQTT_QOS",
                    message:
                        "QoS 2 is refused: libmosquitto keeps QoS 2 state only in memory, so a crash would lose messages; use 1")
            default:
                throw ConfigurationError(variable: "MQTT_QOS", message: "must be 0 or 1")
            }
        }

        if let group = value(env, "MQTT_SHARE_GROUP") {
            guard !group.contains(where: { $0 == "/" || $0 == "+" || $0 == "#" }),
                !group.unicodeScalars.contains(where: OneLine.isUnsafe)
            else {
                throw ConfigurationError(variable: "MQTT_SHARE_GROUP", message: "must not contain /, + or #")
            }
            settings.shareGroup = group
        }

        settings.caFile = value(env, "MQTT_CA_FILE")
        settings.certFile = value(env, "MQTT_CERT_FILE")
        settings.keyFile = value(env, "MQTT_KEY_FILE")
        if (settings.certFile == nil) != (settings.keyFile == nil) {
            throw ConfigurationError(
                variable: settings.certFile == nil ? "MQTT_CERT_FILE" : "MQTT_KEY_FILE",
                message: "MQTT_CERT_FILE and MQTT_KEY_FILE must be set together")
        }
        if !settings.useTLS && (settings.caFile != nil || settings.certFile != nil) {
            notices.append("MQTT_CA_FILE/MQTT_CERT_FILE are set but MQTT_URL is mqtt://: TLS files are not used")
        }
        return settings
    }

    static func percentDecode(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "%") {
                guard iterator.count >= 2, let high = hexValue(iterator.removeFirst()),
                    let low = hexValue(iterator.removeFirst())
                else { return nil }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The URL with any query replaced by `?****` (some gateways accept tokens in the query).
    static func displayURL(_ url: String) -> String {
        guard let question = url.firstIndex(of: "?") else { return url }
        return String(url[..<question]) + "?****"
    }

    static func seconds(_ d: Duration) -> String {
        let ms = d.wholeMilliseconds
        return ms % 1000 == 0 ? String(ms / 1000) : String(Double(ms) / 1000)
    }
}

@inline(__always) func isDigit(_ byte: UInt8) -> Bool {
    byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
}
