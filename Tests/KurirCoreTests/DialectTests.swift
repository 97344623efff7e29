import Testing

@testable import KurirCore

let fonnte = GatewayConfig(provider: .fonnte, role: .primary, token: Secret("F-TOKEN"), url: "https://api.fonnte.com/send")
let wablas = GatewayConfig(
    provider: .wablas, role: .backup, token: Secret("W-TOKEN.secret"), url: "https://kudus.wablas.com/api/send-message")
let woowa = GatewayConfig(
    provider: .woowa, role: .tertiary, token: Secret("K-TOKEN"), url: "https://notifapi.com/send_message")
let person = Target(value: "6281234567890", isGroup: false)
let group = Target(value: "120363064449269123@g.us", isGroup: true)

func request(_ gateway: GatewayConfig, _ target: Target, _ message: String = "Halo & selamat pagi") -> GatewayRequest? {
    try? Dialect.makeRequest(gateway: gateway, target: target, message: message, referenceID: "req-1/6281234567890")
        .get()
}

@Suite struct DialectRequestTests {
    @Test func fonnteNumber() throws {
        let r = try #require(request(fonnte, person))
        #expect(r.url == "https://api.fonnte.com/send")
        #expect(r.headers == [FormField(name: "Authorization", value: "F-TOKEN")])
        #expect(
            r.body
                == .form([
                    FormField(name: "target", value: "6281234567890"),
                    FormField(name: "message", value: "Halo & selamat pagi"),
                    FormField(name: "countryCode", value: "0"),
                ]))
        #expect(r.contentType == "application/x-www-form-urlencoded")
        #expect(
            r.formEncodedBody().map { String(decoding: $0, as: UTF8.self) }
                == "target=6281234567890&message=Halo+%26+selamat+pagi&countryCode=0")
    }

    @Test func fonnteGroupKeepsSuffix() throws {
        let r = try #require(request(fonnte, group))
        guard case .form(let fields) = r.body else {
            Issue.record("expected form")
            return
        }
        #expect(fields.first == FormField(name: "target", value: "120363064449269123@g.us"))
    }

    @Test func wablasNumber() throws {
        let r = try #require(request(wablas, person))
        #expect(r.url == "https://kudus.wablas.com/api/send-message")
        #expect(r.headers == [FormField(name: "Authorization", value: "W-TOKEN.secret")])
        #expect(
            r.body
                == .form([
                    FormField(name: "phone", value: "6281234567890"),
                    FormField(name: "message", value: "Halo & selamat pagi"),
                    FormField(name: "ref_id", value: "req-1/6281234567890"),
                ]))
    }

    @Test func wablasGroupUsesBareIDAndIsGroup() throws {
        let old = Target(value: "6281218444-1632192971@g.us", isGroup: true)
        let r = try #require(request(wablas, old))
        #expect(
            r.body
                == .form([
                    FormField(name: "phone", value: "6281218444-1632192971"),
                    FormField(name: "message", value: "Halo & selamat pagi"),
                    FormField(name: "isGroup", value: "true"),
                    FormField(name: "ref_id", value: "req-1/6281234567890"),
                ]))
    }

    @Test func wablasSkipsOver1024Characters() throws {
        let fits = String(repeating: "a", count: 1024)
        #expect(request(wablas, person, fits) != nil)
        let result = Dialect.makeRequest(
            gateway: wablas, target: person, message: fits + "b", referenceID: "r")
        #expect(result == .failure(SkipReason(message: "message longer than 1024 characters (wablas limit)")))
        #expect(request(fonnte, person, fits + "b") != nil)
        #expect(Dialect.maxMessageCharacters(.wablas) == 1024)
        #expect(Dialect.maxMessageCharacters(.fonnte) == 60_000)
        #expect(Dialect.maxMessageCharacters(.woowa) == nil)
    }

    @Test func woowaNumber() throws {
        let r = try #require(request(woowa, person))
        #expect(r.url == "https://notifapi.com/send_message")
        #expect(r.headers.isEmpty)
        #expect(r.contentType == "application/json")
        #expect(r.formEncodedBody() == nil)
        #expect(
            r.body
                == .json(
                    .object([
                        JSONMember("phone_no", .string("+6281234567890")), JSONMember("key", .string("K-TOKEN")),
                        JSONMember("message", .string("Halo & selamat pagi")),
                    ])))
    }

    @Test func woowaGroup() throws {
        let r = try #require(request(woowa, group))
        #expect(r.url == "https://notifapi.com/send_message_group_id")
        #expect(
            r.body
                == .json(
                    .object([
                        JSONMember("group_id", .string("120363064449269123@g.us")),
                        JSONMember("key", .string("K-TOKEN")), JSONMember("message", .string("Halo & selamat pagi")),
                    ])))
        var legacy = woowa
        legacy.url = "http://116.203.191.58/api/send_message/"
        #expect(request(legacy, group)?.url == "http://116.203.191.58/api/send_message_group_id")
        legacy.url = "http://127.0.0.1:8080/custom"
        guard case .failure = Dialect.makeRequest(gateway: legacy, target: group, message: "x", referenceID: "r") else {
            Issue.record("a Woowa URL not ending in send_message cannot take groups")
            return
        }
    }

    @Test func formEncodingOfUnicodeAndReserved() {
        let r = GatewayRequest(
            url: "u", headers: [], body: .form([FormField(name: "m", value: "é+/=?~ *-._\n")]))
        #expect(
            r.formEncodedBody().map { String(decoding: $0, as: UTF8.self) } == "m=%C3%A9%2B%2F%3D%3F%7E+*-._%0A")
    }
}

@Suite struct ClassificationTests {
    static func answered(_ status: Int, _ json: JSONValue?, body: String = "", truncated: Bool = false) -> GatewayReply {
        .answered(status: status, body: Array(body.utf8), json: json, truncated: truncated)
    }

    static func obj(_ members: (String, JSONValue)...) -> JSONValue {
        .object(members.map { JSONMember($0.0, $0.1) })
    }

    static let cases: [(String, Provider, GatewayReply, AttemptOutcome, String?, Int?)] = [
        (
            "fonnte success", .fonnte,
            answered(200, obj(("status", .bool(true)), ("detail", .string("success! message in queue")))),
            .accepted, nil, 200
        ),
        ("fonnte Status capitalised", .fonnte, answered(200, obj(("Status", .bool(true)))), .accepted, nil, 200),
        ("status string true", .wablas, answered(200, obj(("status", .string("true")))), .accepted, nil, 200),
        (
            "fonnte status false 200", .fonnte,
            answered(200, obj(("status", .bool(false)), ("reason", .string("invalid token")))), .refused,
            "invalid token", 200
        ),
        (
            "fonnte Status false capitalised", .fonnte,
            answered(200, obj(("Status", .bool(false)), ("reason", .string("target invalid")))), .refused,
            "target invalid", 200
        ),
        ("status false no reason", .fonnte, answered(200, obj(("status", .bool(false)))), .refused, "status false", 200),
        (
            "wablas message", .wablas,
            answered(200, obj(("status", .bool(false)), ("message", .string("token invalid or device expired")))),
            .refused, "token invalid or device expired", 200
        ),
        (
            "wablas 500 with JSON refusal", .wablas,
            answered(500, obj(("status", .bool(false)), ("message", .string("device disconnected, need to scan qr code again")))),
            .refused, "device disconnected, need to scan qr code again", 500
        ),
        (
            "wablas 400 with JSON refusal", .wablas,
            answered(400, obj(("status", .bool(false)), ("message", .string("secret key invalid")))), .refused,
            "secret key invalid", 400
        ),
        (
            "reason with line break", .fonnte,
            answered(200, obj(("status", .bool(false)), ("reason", .string("bad\n✅ WhatsApp sent to x\u{1B}[2K")))),
            .refused, "bad ✅ WhatsApp sent to x", 200
        ),
        ("502 non-JSON", .fonnte, answered(502, nil, body: "<html>Bad Gateway</html>"), .unknown, "HTTP 502", 502),
        ("404 non-JSON", .wablas, answered(404, nil, body: "not found"), .refused, "HTTP 404", 404),
        ("200 non-JSON", .fonnte, answered(200, nil, body: "OK"), .unknown, "unparsable response (HTTP 200)", 200),
        ("200 empty", .wablas, answered(200, nil), .unknown, "unparsable response (HTTP 200)", 200),
        ("200 JSON array", .fonnte, answered(200, .array([])), .unknown, "unparsable response (HTTP 200)", 200),
        (
            "truncated", .fonnte, answered(200, nil, body: "{", truncated: true), .unknown,
            "response larger than 64 KiB", 200
        ),
        ("JSON without status 200", .fonnte, answered(200, obj(("ok", .bool(true)))), .refused, "unexpected response", 200),
        ("JSON without status 503", .wablas, answered(503, obj(("error", .string("x")))), .unknown, "HTTP 503", 503),
        ("not sent", .fonnte, .notSent(reason: "connection refused"), .refused, "connection refused", nil),
        ("no answer", .wablas, .noAnswer(reason: "timeout"), .unknown, "timeout", nil),
        ("woowa no answer", .woowa, .noAnswer(reason: "connection reset"), .unknown, "connection reset", nil),
        (
            "woowa success", .woowa,
            answered(
                200,
                obj(
                    ("code", .integer(200)),
                    ("results", obj(("id_message", .string("WOWA123")), ("type_chat", .string("group")))))),
            .accepted, nil, 200
        ),
        (
            "woowa success string code", .woowa,
            answered(200, obj(("code", .string("200")), ("results", obj(("id_message", .string("WOWA1")))))),
            .accepted, nil, 200
        ),
        (
            "woowa code 200 without id", .woowa, answered(200, obj(("code", .integer(200)), ("results", obj()))),
            .refused, #"{"code":200}"#, 200
        ),
        (
            "woowa failure message", .woowa,
            answered(200, obj(("code", .integer(400)), ("message", .string("invalid key")))), .refused, "invalid key",
            200
        ),
        (
            "woowa results text", .woowa,
            answered(200, obj(("code", .integer(404)), ("results", .string("phone not registered")))), .refused,
            "phone not registered", 200
        ),
        (
            "woowa results message", .woowa,
            answered(200, obj(("code", .integer(500)), ("results", obj(("message", .string("device offline")))))),
            .refused, "device offline", 200
        ),
        ("woowa non-JSON 200", .woowa, answered(200, nil, body: "error"), .unknown, "unparsable response (HTTP 200)", 200),
        ("woowa 502 non-JSON", .woowa, answered(502, nil), .unknown, "HTTP 502", 502),
    ]

    @Test(arguments: cases)
    func classify(name: String, provider: Provider, reply: GatewayReply, outcome: AttemptOutcome, error: String?, status: Int?) {
        var reply = reply
        // The "code 200 without id" case checks that the trimmed body text is kept as the error.
        if name == "woowa code 200 without id", case .answered(let s, _, let json, let t) = reply {
            reply = .answered(status: s, body: Array("  {\"code\":200}\n".utf8), json: json, truncated: t)
        }
        let result = Dialect.classify(provider: provider, reply: reply, latencyMs: 42)
        #expect(
            result == AttemptResult(provider: provider, outcome: outcome, error: error, httpStatus: status, latencyMs: 42),
            "\(name)")
    }

    @Test func longErrorsAreCapped() {
        let long = String(repeating: "x", count: 1000)
        let result = Dialect.classify(
            provider: .fonnte,
            reply: Self.answered(200, Self.obj(("status", .bool(false)), ("reason", .string(long)))), latencyMs: 1)
        #expect(result.error?.unicodeScalars.count == 200)
    }
}
