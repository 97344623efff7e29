import Testing

@testable import KurirCore

@Suite struct TargetNormaliserTests {
    @Test(arguments: [
        ("+6281234567890", "6281234567890"),
        ("6281234567890", "6281234567890"),
        ("081234567890", "6281234567890"),
        ("0812-3456-7890", "6281234567890"),
        ("0812 3456 7890", "6281234567890"),
        ("0812.3456.7890", "6281234567890"),
        ("(0812) 3456-7890", "6281234567890"),
        ("+62 (812) 3456.7890", "6281234567890"),
        ("  081234567890  ", "6281234567890"),
        ("12345678", "12345678"),  // 8 digits: shortest accepted
        ("123456789012345", "123456789012345"),  // 15 digits: longest accepted
        ("+14155550123", "14155550123"),
    ])
    func numbers(raw: String, expected: String) {
        #expect(
            TargetNormaliser.normalise(raw, forceGroup: false, defaultCountryCode: "62")
                == Target(value: expected, isGroup: false))
    }

    @Test(arguments: [
        "0812", "1234567", "1234567890123456", "08123456789012345", "0812345678a", "62812|34567890",
        "6281234567890,", "abc", "", "++6281234567890", "62 812 3456 7890 x", "٦٢٨١٢٣٤٥٦٧٨٩٠",  // Arabic-Indic digits
        "+", "0", "62812345678@c.us", "6281234567890/1",
    ])
    func invalidNumbers(raw: String) {
        #expect(TargetNormaliser.normalise(raw, forceGroup: false, defaultCountryCode: "62") == nil)
    }

    @Test func otherCountryCode() {
        #expect(
            TargetNormaliser.normalise("0301234567", forceGroup: false, defaultCountryCode: "49")
                == Target(value: "49301234567", isGroup: false))
    }

    @Test(arguments: [
        ("120363064449269123@g.us", false, "120363064449269123@g.us"),
        ("6281218444-1632192971@g.us", false, "6281218444-1632192971@g.us"),
        ("120363064449269123", true, "120363064449269123@g.us"),
        ("6281218444-1632192971", true, "6281218444-1632192971@g.us"),
        ("120363064449269123@g.us", true, "120363064449269123@g.us"),
        (" 120363064449269123@g.us ", false, "120363064449269123@g.us"),
    ])
    func groups(raw: String, force: Bool, expected: String) {
        #expect(
            TargetNormaliser.normalise(raw, forceGroup: force, defaultCountryCode: "62")
                == Target(value: expected, isGroup: true))
    }

    @Test(arguments: [
        ("abc@g.us", false), ("@g.us", false), ("12-34-56@g.us", false), ("-123@g.us", false),
        ("123-@g.us", false), ("1203 6306@g.us", false), ("group-name", true), ("0812-3456-7890x", true),
        ("+6281234567890", true),
    ])
    func invalidGroups(raw: String, force: Bool) {
        #expect(TargetNormaliser.normalise(raw, forceGroup: force, defaultCountryCode: "62") == nil)
    }
}

@Suite struct RequestValidatorTests {
    let validator = RequestValidator(
        defaultCountryCode: "62", subscription: "notify/whatsapp/#", resultPrefix: "notify/result/whatsapp")

    func object(_ members: [(String, JSONValue)]) -> JSONValue {
        .object(members.map { JSONMember($0.0, $0.1) })
    }

    func decide(_ value: JSONValue, topic: String = "notify/whatsapp/tickets/assigned", size: Int = 100)
        -> RequestDecision
    {
        validator.validate(topic: topic, payloadSize: size, decoded: .success(value))
    }

    func rejectionReason(_ decision: RequestDecision) -> String? {
        if case .rejected(let reason, _) = decision { return reason }
        return nil
    }

    @Test func acceptsAFullRequest() throws {
        let decision = decide(
            object([
                ("id", .string("req-1")), ("target", .string("081234567890, +62 812-1111-2222,081234567890")),
                ("message", .string("Server down\nCheck it")), ("priority", .string("critical")),
                ("reply_to", .string("app/replies/1")), ("extra", .integer(5)),
            ]))
        guard case .accepted(let request) = decision else {
            Issue.record("expected accepted, got \(decision)")
            return
        }
        #expect(request.id == "req-1")
        #expect(request.route == "tickets/assigned")
        #expect(
            request.targets == [
                Target(value: "6281234567890", isGroup: false), Target(value: "6281211112222", isGroup: false),
            ])
        #expect(request.message == "Server down\nCheck it")
        #expect(request.priority == .critical)
        #expect(request.replyTo == "app/replies/1")
    }

    @Test func defaultsAndArrays() {
        let decision = decide(
            object([
                ("target", .array([.string("6281234567890"), .string("120363064449269123@g.us, 081234567890")])),
                ("message", .string("hi")),
            ]))
        #expect(
            decision
                == .accepted(
                    NotificationRequest(
                        id: nil, route: "tickets/assigned",
                        targets: [
                            Target(value: "6281234567890", isGroup: false),
                            Target(value: "120363064449269123@g.us", isGroup: true),
                        ], message: "hi", priority: .normal, replyTo: nil)))
    }

    @Test func groupTrueMakesEveryTargetAGroup() {
        let decision = decide(
            object([
                ("target", .string("120363064449269123, 6281218444-1632192971@g.us")), ("group", .bool(true)),
                ("message", .string("hi")),
            ]))
        guard case .accepted(let request) = decision else {
            Issue.record("expected accepted, got \(decision)")
            return
        }
        #expect(request.targets.map(\.value) == ["120363064449269123@g.us", "6281218444-1632192971@g.us"])
        #expect(request.targets.allSatisfy { $0.isGroup })
    }

    @Test(arguments: [
        ("notify/whatsapp/tickets/assigned", "tickets/assigned"), ("notify/whatsapp/x", "x"),
        ("notify/whatsapp/", ""), ("notify/whatsapp", ""),
    ])
    func routes(topic: String, route: String) {
        #expect(validator.route(forTopic: topic) == route)
    }

    @Test func routeWithShareGroupAndPlusFilter() {
        let shared = RequestValidator(
            defaultCountryCode: "62", subscription: "$share/g/notify/whatsapp/#", resultPrefix: "notify/result")
        #expect(shared.route(forTopic: "notify/whatsapp/a/b") == "a/b")
        let plus = RequestValidator(defaultCountryCode: "62", subscription: "alerts/+/wa", resultPrefix: "r")
        #expect(plus.route(forTopic: "alerts/db/wa") == "db/wa")
    }

    static let message4096 = String(repeating: "é", count: 4096)
    static let message4097 = String(repeating: "é", count: 4097)
    static let emoji4096 = String(repeating: "👍🏽", count: 2048)  // 2 scalars each

    static let rejections: [(String, [(String, JSONValue)], String)] = [
        ("target missing", [("message", .string("hi"))], "target is required"),
        ("target null", [("target", .null), ("message", .string("hi"))], "target is required"),
        ("target empty", [("target", .string("")), ("message", .string("hi"))], "target is empty"),
        ("target only commas", [("target", .string(" , ,")), ("message", .string("hi"))], "target is empty"),
        ("target empty array", [("target", .array([])), ("message", .string("hi"))], "target is empty"),
        (
            "target number", [("target", .integer(6_281_234_567_890)), ("message", .string("hi"))],
            "target must be a string or an array of strings"
        ),
        (
            "target array with number",
            [("target", .array([.string("6281234567890"), .integer(62_812)])), ("message", .string("hi"))],
            "target must be a string or an array of strings"
        ),
        ("target bool", [("target", .bool(true)), ("message", .string("hi"))], "target must be a string or an array of strings"),
        (
            "target object", [("target", .object([])), ("message", .string("hi"))],
            "target must be a string or an array of strings"
        ),
        ("target short", [("target", .string("0812")), ("message", .string("hi"))], "invalid target \"0812\""),
        (
            "one bad in list", [("target", .string("081234567890,62812|345678")), ("message", .string("hi"))],
            "invalid target \"62812|345678\""
        ),
        (
            "bad target echo capped", [("target", .string(String(repeating: "x", count: 500))), ("message", .string("hi"))],
            "invalid target \"" + String(repeating: "x", count: 63) + "…\""
        ),
        (
            "bad target with newline", [("target", .string("0812\n✅ WhatsApp sent")), ("message", .string("hi"))],
            "invalid target \"0812 ✅ WhatsApp sent\""
        ),
        (
            "bad group", [("target", .string("family@g.us")), ("message", .string("hi"))],
            "invalid target \"family@g.us\""
        ),
        (
            "too many",
            [
                ("target", .string((0..<101).map { "62812345\(String(format3($0)))" }.joined(separator: ","))),
                ("message", .string("hi")),
            ],
            "more than 100 targets"
        ),
        ("message missing", [("target", .string("081234567890"))], "message is required"),
        ("message number", [("target", .string("081234567890")), ("message", .integer(1))], "message must be a string"),
        ("message empty", [("target", .string("081234567890")), ("message", .string(""))], "message is empty"),
        ("message blank", [("target", .string("081234567890")), ("message", .string(" \n\t "))], "message is empty"),
        (
            "message 4097", [("target", .string("081234567890")), ("message", .string(message4097))],
            "message longer than 4096 characters"
        ),
        (
            "message NUL", [("target", .string("081234567890")), ("message", .string("a\u{0}b"))],
            "message contains a control character"
        ),
        (
            "message ESC", [("target", .string("081234567890")), ("message", .string("a\u{1B}[31mb"))],
            "message contains a control character"
        ),
        (
            "id empty", [("id", .string("")), ("target", .string("081234567890")), ("message", .string("hi"))],
            "id must be a non-empty string of at most 200 characters"
        ),
        (
            "id number", [("id", .integer(7)), ("target", .string("081234567890")), ("message", .string("hi"))],
            "id must be a non-empty string of at most 200 characters"
        ),
        (
            "id too long",
            [
                ("id", .string(String(repeating: "i", count: 201))), ("target", .string("081234567890")),
                ("message", .string("hi")),
            ],
            "id must be a non-empty string of at most 200 characters"
        ),
        (
            "group not bool", [("group", .string("true")), ("target", .string("081234567890")), ("message", .string("hi"))],
            "group must be true or false"
        ),
        (
            "priority unknown",
            [("priority", .string("urgent")), ("target", .string("081234567890")), ("message", .string("hi"))],
            "priority must be critical, normal or bulk"
        ),
        (
            "priority number", [("priority", .integer(1)), ("target", .string("081234567890")), ("message", .string("hi"))],
            "priority must be critical, normal or bulk"
        ),
        (
            "reply_to wildcard", [("reply_to", .string("a/#")), ("target", .string("081234567890")), ("message", .string("hi"))],
            "reply_to must be a non-empty topic without + or #"
        ),
        (
            "reply_to empty", [("reply_to", .string("")), ("target", .string("081234567890")), ("message", .string("hi"))],
            "reply_to must be a non-empty topic without + or #"
        ),
        (
            "reply_to loops",
            [("reply_to", .string("notify/whatsapp/again")), ("target", .string("081234567890")), ("message", .string("hi"))],
            "reply_to matches the request subscription (it would loop)"
        ),
    ]

    @Test(arguments: rejections)
    func rejectsWithOneLineReason(name: String, members: [(String, JSONValue)], reason: String) {
        let decision = decide(object(members))
        #expect(rejectionReason(decision) == reason, "\(name)")
        if let got = rejectionReason(decision) {
            #expect(!got.unicodeScalars.contains { $0.value < 0x20 }, "\(name)")
        }
    }

    @Test(arguments: [("critical", Priority.critical), ("Normal", .normal), ("BULK", .bulk)])
    func priorities(text: String, expected: Priority) {
        let decision = decide(
            object([("target", .string("081234567890")), ("message", .string("hi")), ("priority", .string(text))]))
        guard case .accepted(let request) = decision else {
            Issue.record("expected accepted for \(text)")
            return
        }
        #expect(request.priority == expected)
    }

    @Test func messageLimitIsInScalars() {
        for text in [Self.message4096, Self.emoji4096] {
            let decision = decide(object([("target", .string("081234567890")), ("message", .string(text))]))
            guard case .accepted = decision else {
                Issue.record("4096 scalars must be accepted")
                continue
            }
        }
        let over = decide(object([("target", .string("081234567890")), ("message", .string(Self.emoji4096 + "x"))]))
        #expect(rejectionReason(over) == "message longer than 4096 characters")
    }

    @Test func messageMayHoldTabsAndLineBreaks() {
        let decision = decide(object([("target", .string("081234567890")), ("message", .string("a\tb\r\nc"))]))
        guard case .accepted(let request) = decision else {
            Issue.record("expected accepted")
            return
        }
        #expect(request.message == "a\tb\r\nc")
    }

    @Test func payloadSizeLimit() {
        let value = object([("id", .string("big-1")), ("target", .string("081234567890")), ("message", .string("hi"))])
        guard case .accepted = validator.validate(topic: "notify/whatsapp/x", payloadSize: 65_536, decoded: .success(value))
        else {
            Issue.record("65536 bytes must be accepted")
            return
        }
        #expect(
            validator.validate(topic: "notify/whatsapp/x", payloadSize: 65_537, decoded: .success(value))
                == .rejected(reason: "payload larger than 65536 bytes", id: "big-1"))
        #expect(
            validator.validate(
                topic: "notify/whatsapp/x", payloadSize: 65_537, decoded: .failure(JSONParseFailure("too big")))
                == .rejected(reason: "payload larger than 65536 bytes", id: nil))
    }

    @Test func notJSONAndNotObject() {
        #expect(
            validator.validate(
                topic: "notify/whatsapp/x", payloadSize: 3,
                decoded: .failure(JSONParseFailure("'[' or '{' expected near 'abc'\nline 1")))
                == .rejected(reason: "not JSON: '[' or '{' expected near 'abc' line 1", id: nil))
        for value: JSONValue in [.array([]), .string("x"), .integer(1), .null] {
            #expect(decide(value) == .rejected(reason: "payload is not a JSON object", id: nil))
        }
    }

    @Test func rejectionEchoesTheID() {
        let decision = decide(object([("id", .string("req-9")), ("target", .string("0812")), ("message", .string("hi"))]))
        #expect(decision == .rejected(reason: "invalid target \"0812\"", id: "req-9"))
    }

    @Test func duplicatesRemovedKeepingOrder() {
        let decision = decide(
            object([
                ("target", .array([.string("081111111111"), .string("+6282222222222"), .string("6281111111111")])),
                ("message", .string("hi")),
            ]))
        guard case .accepted(let request) = decision else {
            Issue.record("expected accepted")
            return
        }
        #expect(request.targets.map(\.value) == ["6281111111111", "6282222222222"])
    }

    @Test func exactlyOneHundredTargetsAccepted() {
        let list = (0..<100).map { "62812345\(format3($0))" }.joined(separator: ",")
        guard case .accepted(let request) = decide(object([("target", .string(list)), ("message", .string("hi"))]))
        else {
            Issue.record("100 targets must be accepted")
            return
        }
        #expect(request.targets.count == 100)
    }
}

func format3(_ n: Int) -> String {
    let text = String(n)
    return String(repeating: "0", count: 3 - text.count) + text
}

@Suite struct TopicFilterTests {
    @Test(arguments: [
        ("notify/whatsapp/#", "notify/whatsapp/a/b", true),
        ("notify/whatsapp/#", "notify/whatsapp", true),
        ("notify/whatsapp/#", "notify/result/whatsapp/x/y", false),
        ("notify/+/x", "notify/a/x", true),
        ("notify/+/x", "notify/a/b/x", false),
        ("notify/+", "notify/", true),
        ("#", "anything/at/all", true),
        ("#", "$SYS/broker", false),
        ("+/x", "$SYS/x", false),
        ("$share/g/notify/#", "notify/a", true),
        ("a/b", "a/b", true),
        ("a/b", "a/b/c", false),
    ])
    func matching(filter: String, topic: String, expected: Bool) {
        #expect(TopicFilter.matches(filter, topic: topic) == expected)
    }

    @Test(arguments: [
        ("a/#", true), ("#", true), ("a/+/b", true), ("a/#/b", false), ("a/b#", false), ("a+/b", false), ("", false),
    ])
    func filterValidity(filter: String, valid: Bool) {
        #expect(TopicFilter.isValidFilter(filter) == valid)
    }
}
