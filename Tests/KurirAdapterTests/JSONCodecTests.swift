import KurirCore
import KurirJSON
import Testing

@Suite("JSONCodec")
struct JSONCodecTests {
    private func decode(_ text: String) throws(JSONDecodeError) -> JSONValue {
        try JSONCodec.decode(Array(text.utf8))
    }

    private func decodeError(_ bytes: [UInt8]) -> JSONDecodeError? {
        do {
            _ = try JSONCodec.decode(bytes)
            return nil
        } catch {
            return error
        }
    }

    @Test("decodes every JSON type")
    func decodesEveryType() throws {
        let value = try decode(#"{"n":null,"t":true,"f":false,"i":-42,"r":1.5,"s":"h\u00e9 ✓","a":[1,"x"],"o":{}}"#)
        #expect(
            value
                == .object([
                    JSONMember("n", .null), JSONMember("t", .bool(true)), JSONMember("f", .bool(false)),
                    JSONMember("i", .integer(-42)), JSONMember("r", .real(1.5)), JSONMember("s", .string("hé ✓")),
                    JSONMember("a", .array([.integer(1), .string("x")])), JSONMember("o", .object([])),
                ]))
        #expect(value["s"] == .string("hé ✓"))
        #expect(value["missing"] == nil)
    }

    @Test(
        "any type is accepted at top level",
        arguments: [
            ("42", JSONValue.integer(42)), ("\"x\"", .string("x")), ("null", .null), ("[]", .array([])),
            (" true ", .bool(true)), ("-0.25", .real(-0.25)),
        ])
    func topLevelScalars(text: String, expected: JSONValue) throws {
        #expect(try decode(text) == expected)
    }

    @Test("round-trips: encode then decode gives the same value")
    func roundTrip() throws {
        let values: [JSONValue] = [
            .null, .bool(false), .integer(Int64.max), .integer(Int64.min), .real(0.1), .real(-1e300), .real(3.0),
            .string(""), .string("quote \" backslash \\ slash / newline \n tab \t bell \u{7} emoji 🎉"),
            .array([]), .object([]),
            .object([
                JSONMember("event", .string("delivered")),
                JSONMember(
                    "attempts",
                    .array([.object([JSONMember("provider", .string("fonnte")), JSONMember("http_status", .null)])])),
                JSONMember("latency_ms", .integer(12)),
            ]),
        ]
        for value in values {
            let encoded = JSONCodec.encode(value)
            #expect(try JSONCodec.decode(encoded) == value, "\(JSONCodec.encodeString(value))")
        }
    }

    @Test("encoding is compact and keeps key order as given")
    func compactAndOrdered() throws {
        let value = JSONValue.object([
            JSONMember("zeta", .integer(1)), JSONMember("alpha", .array([.bool(true), .null])),
            JSONMember("mid", .object([JSONMember("b", .string("é")), JSONMember("a", .real(2.5))])),
        ])
        #expect(JSONCodec.encodeString(value) == #"{"zeta":1,"alpha":[true,null],"mid":{"b":"é","a":2.5}}"#)
        #expect(JSONCodec.encode(value) == Array(#"{"zeta":1,"alpha":[true,null],"mid":{"b":"é","a":2.5}}"#.utf8))
    }

    @Test("decoding keeps key order of the document")
    func decodeKeepsOrder() throws {
        let keys = ["target", "message", "id", "a", "zz", "b"]
        let text = "{" + keys.map { "\"\($0)\":0" }.joined(separator: ",") + "}"
        guard case .object(let members) = try decode(text) else {
            Issue.record("not an object")
            return
        }
        #expect(members.map(\.key) == keys)
    }

    @Test("a Swift string holding NUL encodes as an escape (and is then refused by the decoder)")
    func nulEncodes() {
        let text = JSONCodec.encodeString(.string("a\u{0}b"))
        #expect(text == #""a\u0000b""#)
        #expect(decodeError(Array(text.utf8)) != nil)
    }

    @Test("non-finite reals encode as null")
    func nonFinite() {
        #expect(
            JSONCodec.encodeString(.array([.real(.nan), .real(.infinity), .real(-.infinity)])) == "[null,null,null]")
    }

    @Test("duplicate keys are rejected, naming the key")
    func duplicateKeys() {
        let error = decodeError(Array(#"{"target":"1","message":"x","target":"2"}"#.utf8))
        #expect(error?.description.contains("duplicate object key") == true)
        #expect(error?.description.contains("target") == true)
        #expect(error?.description.contains("line 1 column") == true)
    }

    @Test(
        "invalid UTF-8 is rejected",
        arguments: [
            [0x22, 0xFF, 0x22] as [UInt8],  // "\xFF"
            [0x22, 0xC3, 0x22],  // truncated two-byte sequence
            [0x22, 0xED, 0xA0, 0x80, 0x22],  // UTF-16 surrogate encoded as UTF-8
            [0x22, 0xC0, 0xAF, 0x22],  // overlong "/"
        ])
    func invalidUTF8(bytes: [UInt8]) {
        #expect(decodeError(bytes) != nil)
    }

    @Test("NUL in a string or a key is rejected")
    func nulRejected() {
        let error = decodeError(Array(#"{"message":"a\u0000b"}"#.utf8))
        #expect(error?.description.hasPrefix(#"\u0000 is not allowed near"#) == true, "\(String(describing: error))")
        #expect(decodeError(Array(#"{"a\u0000":1}"#.utf8)) != nil)
    }

    @Test("trailing garbage is rejected", arguments: [#"{"a":1} x"#, #"{"a":1}{"b":2}"#, "1 2", "[] ]"])
    func trailingGarbage(text: String) {
        #expect(decodeError(Array(text.utf8)) != nil)
    }

    @Test("malformed input is rejected", arguments: ["", "   ", "{", #"{"a"}"#, "[1,]", "tru", "'x'", #"{"a":01}"#])
    func malformed(text: String) {
        #expect(decodeError(Array(text.utf8)) != nil)
    }

    @Test("an integer beyond 64 bits is rejected")
    func hugeInteger() throws {
        #expect(try decode("9223372036854775807") == .integer(Int64.max))
        #expect(decodeError(Array("9223372036854775808".utf8)) != nil)
        #expect(decodeError(Array(#"{"id":123456789012345678901234567890}"#.utf8)) != nil)
    }

    @Test("nesting 1000 deep decodes and encodes")
    func deepNesting() throws {
        let depth = 1000
        let text = String(repeating: "[", count: depth) + "7" + String(repeating: "]", count: depth)
        var value = try decode(text)
        for _ in 0..<depth {
            guard case .array(let items) = value, items.count == 1 else {
                Issue.record("unexpected shape")
                return
            }
            value = items[0]
        }
        #expect(value == .integer(7))
        let objects = String(repeating: #"{"k":"#, count: depth) + "null" + String(repeating: "}", count: depth)
        let decoded = try decode(objects)
        #expect(JSONCodec.encodeString(decoded) == objects)
    }

    @Test("nesting beyond jansson's limit is an error, not a crash")
    func tooDeep() {
        let depth = 5000
        let text = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        #expect(decodeError(Array(text.utf8)) != nil)
    }

    @Test("a 64 KiB string decodes")
    func bigString() throws {
        let body = String(repeating: "abcdefgh", count: 8192)
        #expect(body.utf8.count == 65_536)
        let value = try decode(#"{"message":""# + body + #""}"#)
        #expect(value["message"] == .string(body))
    }

    @Test("decoding from a raw buffer gives the same result without a copy")
    func rawBuffer() throws {
        let bytes = Array(#"{"a":[1,2]}"#.utf8)
        let value = try bytes.withUnsafeBytes { buffer in try JSONCodec.decode(buffer) }
        #expect(value == .object([JSONMember("a", .array([.integer(1), .integer(2)]))]))
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        #expect(throws: JSONDecodeError.self) { try JSONCodec.decode(empty) }
    }

    @Test("error text is one line, even when the input quoted in it has line breaks")
    func errorIsOneLine() {
        let inputs: [[UInt8]] = [
            Array("{\"message\":\"line one\nline two\"}".utf8),
            Array("{\"a\":1,\n\"a\":2}".utf8),
            Array("[1,\r\n\u{2028}x]".utf8),
            [0x7B, 0x22, 0x61, 0x0D, 0x0A, 0x22, 0x3A, 0x31, 0x7D],
        ]
        for input in inputs {
            guard let error = decodeError(input) else {
                Issue.record("accepted invalid input")
                continue
            }
            let text = error.description
            #expect(!text.isEmpty)
            #expect(
                !text.unicodeScalars.contains { $0.value < 0x20 || $0 == "\u{2028}" || $0 == "\u{2029}" }, "\(text)")
        }
    }

    @Test("error names line and column")
    func errorPosition() {
        let error = decodeError(Array("{\n  \"a\": tru\n}".utf8))
        #expect(error?.description.contains("at line 2 column") == true, "\(String(describing: error))")
    }
}
