import Testing

@testable import KurirCore

struct FileMissing: Error, CustomStringConvertible {
    var description: String { "No such file or directory" }
}

/// Secret values used in tests; none of them may ever show up in output.
let primarySecret = "PRIMARY-s3cret-token"
let backupSecret = "BACKUP-s3cret-token"
let tertiarySecret = "TERTIARY-s3cret-token"
let mqttSecret = "MQTT-s3cret-pass"
let allSecrets = [primarySecret, backupSecret, tertiarySecret, mqttSecret, "URLPASS-s3cret"]

let files: [String: String] = [
    "/run/secrets/primary": primarySecret + "\n",
    "/run/secrets/crlf": primarySecret + "\r\n",
    "/run/secrets/two-lines": primarySecret + "\nsecond-line\n",
    "/run/secrets/mqtt": mqttSecret,
    "/run/secrets/empty": "\n",
]

func readFile(_ path: String) throws -> String {
    guard let content = files[path] else { throw FileMissing() }
    return content
}

func parse(_ env: [String: String]) throws(ConfigurationError) -> KurirConfiguration {
    try KurirConfiguration.parse(environment: env, readFile: readFile)
}

func parseError(_ env: [String: String]) -> ConfigurationError? {
    do {
        _ = try parse(env)
        return nil
    } catch {
        return error
    }
}

@Suite struct ConfigurationTests {
    @Test func defaults() throws {
        let config = try parse(["WHATSAPP_API_TOKEN": primarySecret])
        #expect(config.enabled)
        #expect(config.failoverEnabled)
        #expect(config.chain.count == 1)
        #expect(config.chain[0].provider == .fonnte)
        #expect(config.chain[0].role == .primary)
        #expect(config.chain[0].url == "https://api.fonnte.com/send")
        #expect(config.chain[0].token.reveal() == primarySecret)
        #expect(config.timeout == .seconds(10))
        #expect(config.connectTimeout == .seconds(5))
        #expect(config.retry == RetryPolicy(firstDelay: .seconds(300), maxDelay: .seconds(3600), maxRetries: 8))
        #expect(config.defaultCountryCode == "62")
        #expect(config.mqtt == MQTTSettings())
        #expect(config.mqtt.host == "127.0.0.1")
        #expect(config.mqtt.port == 1883)
        #expect(!config.mqtt.useTLS)
        #expect(config.mqtt.clientID == "kurir")
        #expect(config.mqtt.topic == "notify/whatsapp/#")
        #expect(config.mqtt.subscription == "notify/whatsapp/#")
        #expect(config.mqtt.resultPrefix == "notify/result/whatsapp")
        #expect(config.mqtt.qos == 1)
        #expect(config.databasePath == "./kurir.db")
        #expect(config.databaseSync == .full)
        #expect(config.logLevel == "info")
        #expect(config.notices.isEmpty)
    }

    @Test func fullChainWithFailover() throws {
        let config = try parse([
            "WHATSAPP_PROVIDER": "fonnte", "WHATSAPP_API_TOKEN": primarySecret,
            "WHATSAPP_BACKUP_PROVIDER": "wablas", "WHATSAPP_BACKUP_API_TOKEN": backupSecret,
            "WHATSAPP_BACKUP_API_URL": "https://kudus.wablas.com/api/send-message",
            "WHATSAPP_TERTIARY_PROVIDER": "Woowa", "WHATSAPP_TERTIARY_API_TOKEN": tertiarySecret,
        ])
        #expect(config.chain.map(\.provider) == [.fonnte, .wablas, .woowa])
        #expect(config.chain.map(\.role) == [.primary, .backup, .tertiary])
        #expect(config.chain[1].url == "https://kudus.wablas.com/api/send-message")
        #expect(config.chain[2].url == "https://notifapi.com/send_message")
        #expect(config.gateways == config.chain)
    }

    @Test func failoverDisabledKeepsOnlyPrimary() throws {
        let config = try parse([
            "WHATSAPP_API_TOKEN": primarySecret, "WHATSAPP_ENABLE_FAILOVER": "no",
            "WHATSAPP_BACKUP_PROVIDER": "woowa", "WHATSAPP_BACKUP_API_TOKEN": backupSecret,
        ])
        #expect(!config.failoverEnabled)
        #expect(config.chain.map(\.provider) == [.fonnte])
        #expect(config.gateways.map(\.provider) == [.fonnte, .woowa])
        #expect(config.notices.contains { $0.contains("only the primary") })
    }

    @Test func backupWithoutTokenIsLeftOutWithNotice() throws {
        let config = try parse([
            "WHATSAPP_API_TOKEN": primarySecret,
            "WHATSAPP_BACKUP_PROVIDER": "wablas",
            "WHATSAPP_TERTIARY_PROVIDER": "woowa", "WHATSAPP_TERTIARY_API_TOKEN": tertiarySecret,
        ])
        #expect(config.chain.map(\.provider) == [.fonnte, .woowa])
        #expect(config.chain[1].role == .tertiary)
        #expect(config.notices == ["WHATSAPP_BACKUP_PROVIDER wablas has no WHATSAPP_BACKUP_API_TOKEN: not in the chain"])
        #expect(config.gateways.map(\.provider) == [.fonnte, .wablas, .woowa])
    }

    @Test func tertiaryWithoutTokenIsLeftOutWithNotice() throws {
        let config = try parse([
            "WHATSAPP_API_TOKEN": primarySecret,
            "WHATSAPP_BACKUP_PROVIDER": "fonnte", "WHATSAPP_BACKUP_API_TOKEN": backupSecret,
            "WHATSAPP_TERTIARY_PROVIDER": "woowa",
        ])
        #expect(config.chain.map(\.provider) == [.fonnte, .fonnte])
        #expect(config.notices == ["WHATSAPP_TERTIARY_PROVIDER woowa has no WHATSAPP_TERTIARY_API_TOKEN: not in the chain"])
    }

    @Test func disabledNeedsNoToken() throws {
        let config = try parse(["WHATSAPP_ENABLED": "false"])
        #expect(!config.enabled)
        #expect(config.chain.count == 1)
        #expect(config.chain[0].token.isEmpty)
    }

    @Test(arguments: [
        ("true", true), ("TRUE", true), ("1", true), ("yes", true), ("Yes", true),
        ("false", false), ("False", false), ("0", false), ("no", false), ("NO", false),
    ])
    func booleans(text: String, expected: Bool) throws {
        let config = try parse(["WHATSAPP_API_TOKEN": primarySecret, "WHATSAPP_ENABLE_FAILOVER": text])
        #expect(config.failoverEnabled == expected)
    }

    @Test func secretFromFileIsTrimmedOfTrailingNewline() throws {
        let config = try parse([
            "WHATSAPP_API_TOKEN_FILE": "/run/secrets/primary", "MQTT_PASSWORD_FILE": "/run/secrets/mqtt",
        ])
        #expect(config.chain[0].token.reveal() == primarySecret)
        #expect(config.mqtt.password?.reveal() == mqttSecret)
        let crlf = try parse(["WHATSAPP_API_TOKEN_FILE": "/run/secrets/crlf"])
        #expect(crlf.chain[0].token.reveal() == primarySecret)
    }

    @Test func mqttURLWithCredentialsAndOverrides() throws {
        let fromURL = try parse([
            "WHATSAPP_API_TOKEN": primarySecret, "MQTT_URL": "mqtts://alice:URLPASS-s3cret@broker.example:9999",
        ])
        #expect(fromURL.mqtt.host == "broker.example")
        #expect(fromURL.mqtt.port == 9999)
        #expect(fromURL.mqtt.useTLS)
        #expect(fromURL.mqtt.username == "alice")
        #expect(fromURL.mqtt.password?.reveal() == "URLPASS-s3cret")

        let overridden = try parse([
            "WHATSAPP_API_TOKEN": primarySecret, "MQTT_URL": "mqtts://alice:URLPASS-s3cret@broker.example",
            "MQTT_USERNAME": "bob", "MQTT_PASSWORD": mqttSecret,
        ])
        #expect(overridden.mqtt.port == 8883)
        #expect(overridden.mqtt.username == "bob")
        #expect(overridden.mqtt.password?.reveal() == mqttSecret)

        let encoded = try parse(["WHATSAPP_API_TOKEN": primarySecret, "MQTT_URL": "mqtt://a%40b:p%3Aw@[::1]:1884/"])
        #expect(encoded.mqtt.username == "a@b")
        #expect(encoded.mqtt.password?.reveal() == "p:w")
        #expect(encoded.mqtt.host == "::1")
        #expect(encoded.mqtt.port == 1884)
    }

    @Test func mqttOptions() throws {
        let config = try parse([
            "WHATSAPP_API_TOKEN": primarySecret, "MQTT_CLIENT_ID": "kurir-2", "MQTT_TOPIC": "alerts/+/wa/#",
            "MQTT_RESULT_PREFIX": "alerts-result/", "MQTT_QOS": "0", "MQTT_SHARE_GROUP": "relays",
            "MQTT_URL": "mqtts://broker", "MQTT_CA_FILE": "/etc/ca.pem", "MQTT_CERT_FILE": "/etc/c.pem",
            "MQTT_KEY_FILE": "/etc/k.pem", "KURIR_DB_PATH": "/var/lib/kurir/kurir.db", "KURIR_DB_SYNC": "NORMAL",
            "KURIR_LOG_LEVEL": "Debug", "WHATSAPP_TIMEOUT_SECONDS": "3", "WHATSAPP_RETRY_DELAY_SECONDS": "60",
            "WHATSAPP_RETRY_MAX_DELAY_SECONDS": "600", "WHATSAPP_MAX_RETRIES": "0",
            "WHATSAPP_DEFAULT_COUNTRY_CODE": "+1",
        ])
        #expect(config.mqtt.clientID == "kurir-2")
        #expect(config.mqtt.subscription == "$share/relays/alerts/+/wa/#")
        #expect(config.mqtt.resultPrefix == "alerts-result")
        #expect(config.mqtt.qos == 0)
        #expect(config.mqtt.caFile == "/etc/ca.pem")
        #expect(config.mqtt.certFile == "/etc/c.pem")
        #expect(config.mqtt.keyFile == "/etc/k.pem")
        #expect(config.databasePath == "/var/lib/kurir/kurir.db")
        #expect(config.databaseSync == .normal)
        #expect(config.logLevel == "debug")
        #expect(config.timeout == .seconds(3))
        #expect(config.connectTimeout == .seconds(3))
        #expect(config.retry == RetryPolicy(firstDelay: .seconds(60), maxDelay: .seconds(600), maxRetries: 0))
        #expect(config.defaultCountryCode == "1")
    }

    @Test func emptyValuesCountAsUnset() throws {
        let config = try parse([
            "WHATSAPP_API_TOKEN": primarySecret, "WHATSAPP_BACKUP_PROVIDER": "", "WHATSAPP_API_URL": " ",
            "MQTT_QOS": "",
        ])
        #expect(config.chain.count == 1)
        #expect(config.chain[0].url == "https://api.fonnte.com/send")
        #expect(config.mqtt.qos == 1)
    }

    static let errorCases: [(String, [String: String], String, String)] = [
        ("missing primary token", [:], "WHATSAPP_API_TOKEN", "required"),
        ("unknown provider", ["WHATSAPP_PROVIDER": "twilio"], "WHATSAPP_PROVIDER", "unknown provider"),
        (
            "unknown backup provider", ["WHATSAPP_BACKUP_PROVIDER": "whatsapp-web", "WHATSAPP_BACKUP_API_TOKEN": backupSecret],
            "WHATSAPP_BACKUP_PROVIDER", "unknown provider"
        ),
        ("ftp URL", ["WHATSAPP_API_URL": "ftp://api.fonnte.com/send"], "WHATSAPP_API_URL", "http"),
        ("URL without host", ["WHATSAPP_API_URL": "https:///send"], "WHATSAPP_API_URL", "host"),
        ("URL not a URL", ["WHATSAPP_API_URL": "api.fonnte.com/send"], "WHATSAPP_API_URL", "http"),
        ("URL with space", ["WHATSAPP_API_URL": "https://api.fonnte.com/se nd"], "WHATSAPP_API_URL", "http"),
        ("URL bad port", ["WHATSAPP_API_URL": "https://api.fonnte.com:99999/send"], "WHATSAPP_API_URL", "http"),
        ("URL with credentials", ["WHATSAPP_API_URL": "https://u:p@api.fonnte.com/send"], "WHATSAPP_API_URL", "credentials"),
        ("wablas primary without URL", ["WHATSAPP_PROVIDER": "wablas"], "WHATSAPP_API_URL", "required"),
        (
            "wablas backup without URL", ["WHATSAPP_BACKUP_PROVIDER": "wablas", "WHATSAPP_BACKUP_API_TOKEN": backupSecret],
            "WHATSAPP_BACKUP_API_URL", "required"
        ),
        (
            "wablas tertiary without URL",
            ["WHATSAPP_TERTIARY_PROVIDER": "wablas", "WHATSAPP_TERTIARY_API_TOKEN": tertiarySecret],
            "WHATSAPP_TERTIARY_API_URL", "required"
        ),
        (
            "token both ways", ["WHATSAPP_API_TOKEN_FILE": "/run/secrets/primary"], "WHATSAPP_API_TOKEN",
            "both"
        ),
        (
            "backup token both ways",
            [
                "WHATSAPP_BACKUP_PROVIDER": "fonnte", "WHATSAPP_BACKUP_API_TOKEN": backupSecret,
                "WHATSAPP_BACKUP_API_TOKEN_FILE": "/run/secrets/primary",
            ], "WHATSAPP_BACKUP_API_TOKEN", "both"
        ),
        (
            "mqtt password both ways", ["MQTT_PASSWORD": mqttSecret, "MQTT_PASSWORD_FILE": "/run/secrets/mqtt"], "MQTT_PASSWORD",
            "both"
        ),
        (
            "unreadable file", ["WHATSAPP_API_TOKEN": "", "WHATSAPP_API_TOKEN_FILE": "/nope"], "WHATSAPP_API_TOKEN_FILE",
            "cannot read /nope"
        ),
        (
            "unreadable backup file",
            ["WHATSAPP_BACKUP_PROVIDER": "fonnte", "WHATSAPP_BACKUP_API_TOKEN_FILE": "/nope"],
            "WHATSAPP_BACKUP_API_TOKEN_FILE", "cannot read"
        ),
        ("token with newline", ["WHATSAPP_API_TOKEN": primarySecret + "\nx"], "WHATSAPP_API_TOKEN", "line break"),
        ("token with CR", ["WHATSAPP_API_TOKEN": primarySecret + "\r"], "WHATSAPP_API_TOKEN", "line break"),
        (
            "file token with inner newline", ["WHATSAPP_API_TOKEN": "", "WHATSAPP_API_TOKEN_FILE": "/run/secrets/two-lines"],
            "WHATSAPP_API_TOKEN_FILE", "line break"
        ),
        ("mqtt password newline", ["MQTT_PASSWORD": mqttSecret + "\n"], "MQTT_PASSWORD", "line break"),
        ("bad boolean", ["WHATSAPP_ENABLED": "maybe"], "WHATSAPP_ENABLED", "true or false"),
        ("bad failover boolean", ["WHATSAPP_ENABLE_FAILOVER": "on"], "WHATSAPP_ENABLE_FAILOVER", "true or false"),
        ("zero timeout", ["WHATSAPP_TIMEOUT_SECONDS": "0"], "WHATSAPP_TIMEOUT_SECONDS", "positive"),
        ("negative timeout", ["WHATSAPP_TIMEOUT_SECONDS": "-5"], "WHATSAPP_TIMEOUT_SECONDS", "positive"),
        ("fractional delay", ["WHATSAPP_RETRY_DELAY_SECONDS": "1.5"], "WHATSAPP_RETRY_DELAY_SECONDS", "positive"),
        ("zero max delay", ["WHATSAPP_RETRY_MAX_DELAY_SECONDS": "0"], "WHATSAPP_RETRY_MAX_DELAY_SECONDS", "positive"),
        ("negative retries", ["WHATSAPP_MAX_RETRIES": "-1"], "WHATSAPP_MAX_RETRIES", "0 or more"),
        ("huge retries", ["WHATSAPP_MAX_RETRIES": "99999999999999999999"], "WHATSAPP_MAX_RETRIES", "0 or more"),
        ("letters country code", ["WHATSAPP_DEFAULT_COUNTRY_CODE": "ID"], "WHATSAPP_DEFAULT_COUNTRY_CODE", "digits"),
        ("long country code", ["WHATSAPP_DEFAULT_COUNTRY_CODE": "6262"], "WHATSAPP_DEFAULT_COUNTRY_CODE", "digits"),
        ("qos 2", ["MQTT_QOS": "2"], "MQTT_QOS", "QoS 2 is refused"),
        ("qos 3", ["MQTT_QOS": "3"], "MQTT_QOS", "0 or 1"),
        ("mqtt scheme", ["MQTT_URL": "tcp://127.0.0.1:1883"], "MQTT_URL", "mqtt://"),
        ("mqtt no host", ["MQTT_URL": "mqtt://:1883"], "MQTT_URL", "host"),
        ("mqtt path", ["MQTT_URL": "mqtt://broker/path"], "MQTT_URL", "no path"),
        ("mqtt bad port", ["MQTT_URL": "mqtt://broker:0"], "MQTT_URL", "port"),
        ("prefix overlaps default topic", ["MQTT_RESULT_PREFIX": "notify/whatsapp/results"], "MQTT_RESULT_PREFIX", "overlaps"),
        ("prefix overlaps hash topic", ["MQTT_TOPIC": "#"], "MQTT_RESULT_PREFIX", "overlaps"),
        (
            "prefix overlaps plus topic", ["MQTT_TOPIC": "notify/+/#", "MQTT_RESULT_PREFIX": "notify/result"],
            "MQTT_RESULT_PREFIX", "overlaps"
        ),
        ("prefix with wildcard", ["MQTT_RESULT_PREFIX": "notify/+/x"], "MQTT_RESULT_PREFIX", "without +"),
        ("topic filter invalid", ["MQTT_TOPIC": "notify/#/x"], "MQTT_TOPIC", "topic filter"),
        ("topic filter share prefix", ["MQTT_TOPIC": "$share/g/notify/#"], "MQTT_TOPIC", "MQTT_SHARE_GROUP"),
        ("share group with slash", ["MQTT_SHARE_GROUP": "a/b"], "MQTT_SHARE_GROUP", "must not contain"),
        ("cert without key", ["MQTT_CERT_FILE": "/c.pem"], "MQTT_KEY_FILE", "together"),
        ("db sync", ["KURIR_DB_SYNC": "off"], "KURIR_DB_SYNC", "full or normal"),
        ("log level", ["KURIR_LOG_LEVEL": "verbose"], "KURIR_LOG_LEVEL", "one of"),
    ]

    @Test(arguments: errorCases)
    func configurationErrors(name: String, overrides: [String: String], variable: String, fragment: String) {
        var env = ["WHATSAPP_API_TOKEN": primarySecret]
        env.merge(overrides) { _, new in new }
        if name == "missing primary token" { env.removeValue(forKey: "WHATSAPP_API_TOKEN") }
        guard let error = parseError(env) else {
            Issue.record("\(name): expected an error naming \(variable)")
            return
        }
        #expect(error.variable == variable, "\(name)")
        #expect(error.message.contains(fragment), "\(name): \(error.message)")
        #expect(error.description == "\(variable): \(error.message)")
        #expect(!error.description.contains("\n"))
        for secret in allSecrets {
            #expect(!error.description.contains(secret), "\(name) leaks a secret")
        }
    }

    @Test func mqttURLErrorsNeverEchoThePassword() {
        let error = parseError(["WHATSAPP_API_TOKEN": primarySecret, "MQTT_URL": "mqtt://u:URLPASS-s3cret@broker/x"])
        #expect(error?.variable == "MQTT_URL")
        #expect(error.map { !$0.description.contains("URLPASS") } == true)
    }

    @Test func summaryMasksSecrets() throws {
        let config = try parse([
            "WHATSAPP_API_TOKEN": primarySecret,
            "WHATSAPP_BACKUP_PROVIDER": "wablas", "WHATSAPP_BACKUP_API_TOKEN": backupSecret,
            "WHATSAPP_BACKUP_API_URL": "https://kudus.wablas.com/api/send-message?token=" + backupSecret,
            "WHATSAPP_TERTIARY_PROVIDER": "woowa",
            "MQTT_URL": "mqtts://alice:URLPASS-s3cret@broker.example", "MQTT_PASSWORD": mqttSecret,
        ])
        let lines = config.summaryLines
        let text = lines.joined(separator: "\n")
        for secret in allSecrets {
            #expect(!text.contains(secret))
        }
        #expect(lines.allSatisfy { !$0.contains("\n") })
        #expect(lines.contains("chain: fonnte (primary) -> wablas (backup)"))
        #expect(lines.contains("gateway primary: fonnte url https://api.fonnte.com/send token ****"))
        #expect(lines.contains("gateway backup: wablas url https://kudus.wablas.com/api/send-message?**** token ****"))
        #expect(lines.contains("gateway tertiary: woowa url https://notifapi.com/send_message token (none), not in the chain"))
        #expect(lines.contains("MQTT broker: mqtts://broker.example:8883 user alice password ****"))
        #expect(lines.contains("notice: WHATSAPP_TERTIARY_PROVIDER woowa has no WHATSAPP_TERTIARY_API_TOKEN: not in the chain"))
    }
}

@Suite struct EnvFileTests {
    @Test func parsesTheUsualForms() throws {
        let text = """
            # kurir settings
            WHATSAPP_PROVIDER=fonnte

            export WHATSAPP_API_TOKEN = abc#123   # inline comment
            WHATSAPP_BACKUP_PROVIDER='wablas'  
            QUOTED="a \\"b\\" c\\nd"
            SINGLE='keep \\n # as is'
            EMPTY=
            WINDOWS=yes\r
              INDENTED=1
            DUP=first
            DUP=second
            """
        let env = try EnvFile.parse(text)
        #expect(env["WHATSAPP_PROVIDER"] == "fonnte")
        #expect(env["WHATSAPP_API_TOKEN"] == "abc#123")
        #expect(env["WHATSAPP_BACKUP_PROVIDER"] == "wablas")
        #expect(env["QUOTED"] == "a \"b\" c\nd")
        #expect(env["SINGLE"] == "keep \\n # as is")
        #expect(env["EMPTY"] == "")
        #expect(env["WINDOWS"] == "yes")
        #expect(env["INDENTED"] == "1")
        #expect(env["DUP"] == "second")
        #expect(env.count == 9)
    }

    @Test(arguments: [
        ("A=1\nno equals sign here", ".env line 2", "KEY=VALUE"),
        ("1BAD=x", ".env line 1", "variable name"),
        ("BAD-NAME=x", ".env line 1", "variable name"),
        ("A=\"unterminated \(primarySecret)", ".env line 1", "unterminated"),
        ("A='x' trailing", ".env line 1", "after the closing quote"),
    ])
    func errorsNameTheLine(text: String, variable: String, fragment: String) {
        do {
            _ = try EnvFile.parse(text)
            Issue.record("expected an error")
        } catch {
            #expect(error.variable == variable)
            #expect(error.message.contains(fragment))
            #expect(!error.description.contains(primarySecret))
        }
    }

    @Test func emptyTextIsEmpty() throws {
        #expect(try EnvFile.parse("").isEmpty)
        #expect(try EnvFile.parse("\n# only comments\n\n").isEmpty)
    }
}
