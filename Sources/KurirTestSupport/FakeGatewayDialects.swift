import Foundation
import KurirCore

/// A JSON value with object key order kept, so fake answers look exactly like the
/// providers' documented examples (Foundation's writer reorders keys).
enum FakeJSON {
    case string(String)
    case int(Int64)
    case bool(Bool)
    case null
    case array([FakeJSON])
    case object([(String, FakeJSON)])

    /// Compact JSON text.
    var text: String {
        var out = ""
        write(to: &out)
        return out
    }

    var bytes: [UInt8] { Array(text.utf8) }

    private func write(to out: inout String) {
        switch self {
        case .string(let s): FakeJSON.writeString(s, to: &out)
        case .int(let i): out += String(i)
        case .bool(let b): out += b ? "true" : "false"
        case .null: out += "null"
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(to: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (i, (key, value)) in members.enumerated() {
                if i > 0 { out += "," }
                FakeJSON.writeString(key, to: &out)
                out += ":"
                value.write(to: &out)
            }
            out += "}"
        }
    }

    private static func writeString(_ s: String, to out: inout String) {
        out += "\""
        // Most strings need no escape; appending them whole keeps the fake cheap under `make bench`.
        if !s.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            out += s
            out += "\""
            return
        }
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let c where c.value < 0x20:
                out += "\\u" + String(repeating: "0", count: 4 - String(c.value, radix: 16).count) + String(c.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}

/// Body field parsing shared by the three dialects.
enum FakeFields {
    /// Fields of a form-urlencoded body or a JSON object body, flattened to strings.
    ///
    /// Lenient like the providers: a body starting with `{` is read as JSON whatever the
    /// content type says (clients often send JSON labelled as a form). Returns nil for a
    /// body that is labelled or shaped as JSON but is not a JSON object.
    static func parse(body: [UInt8], contentType: String?) -> [String: String]? {
        if body.isEmpty { return [:] }
        let type = contentType?.lowercased() ?? ""
        // A plain byte search: Foundation's `contains` (through CFString) and the standard library's
        // generic `firstRange(of:)` each cost the fake a tenth of its CPU under `make bench`.
        let typeBytes = Array(type.utf8)
        func mentions(_ word: String) -> Bool {
            let needle = Array(word.utf8)
            guard typeBytes.count >= needle.count else { return false }
            return (0...(typeBytes.count - needle.count)).contains { start in
                typeBytes[start..<start + needle.count].elementsEqual(needle)
            }
        }
        let firstNonSpace = body.first { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) }
        if firstNonSpace == UInt8(ascii: "{") {
            if let fields = parseJSON(body) { return fields }
            return mentions("form") ? parseForm(String(decoding: body, as: UTF8.self)) : nil
        }
        if mentions("json") { return nil }
        return parseForm(String(decoding: body, as: UTF8.self))
    }

    static func parseForm(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in text.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let kv = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            let key = decodeComponent(kv[0])
            let value = kv.count > 1 ? decodeComponent(kv[1]) : ""
            if fields[key] == nil { fields[key] = value }
        }
        return fields
    }

    /// `+` as a space and `%XX` as a byte, on bytes (Foundation's string search cost the fake a third of
    /// its CPU under `make bench`). Like `removingPercentEncoding`: a malformed escape or bytes that are
    /// not UTF-8 leave the component as it came, `+` still turned into a space.
    static func decodeComponent(_ component: Substring.UTF8View) -> String {
        func spaced(_ byte: UInt8) -> UInt8 { byte == UInt8(ascii: "+") ? UInt8(ascii: " ") : byte }
        if !component.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) {
            return String(Substring(component))
        }
        var decoded: [UInt8] = []
        decoded.reserveCapacity(component.count)
        var index = component.startIndex
        while index < component.endIndex {
            let byte = component[index]
            index = component.index(after: index)
            guard byte == UInt8(ascii: "%") else {
                decoded.append(spaced(byte))
                continue
            }
            let rest = component[index...]
            guard let high = rest.first.flatMap(hexValue), let low = rest.dropFirst().first.flatMap(hexValue) else {
                return String(decoding: component.map(spaced), as: UTF8.self)
            }
            decoded.append(high << 4 | low)
            index = component.index(index, offsetBy: 2)
        }
        return String(validating: decoded, as: UTF8.self) ?? String(decoding: component.map(spaced), as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    static func parseJSON(_ body: [UInt8]) -> [String: String]? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed]),
            let dict = object as? [String: Any]
        else { return nil }
        var fields: [String: String] = [:]
        for (key, value) in dict { fields[key] = flatten(value) }
        return fields
    }

    private static func flatten(_ value: Any) -> String {
        switch value {
        case let s as String: return s
        case is NSNull: return "null"
        case let n as NSNumber:
            // Foundation hands JSON booleans over as NSNumber with type code "c"
            // (its JSON reader never uses that code for integers).
            if String(cString: n.objCType) == "c" { return n.boolValue ? "true" : "false" }
            return n.stringValue
        default:
            if JSONSerialization.isValidJSONObject(value),
                let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])
            {
                return String(decoding: data, as: UTF8.self)
            }
            return String(describing: value)
        }
    }
}

/// What a provider path answers, before latency and delivery style are applied.
struct FakeAnswer {
    enum Kind {
        case accepted
        case refused
        case broken
    }
    var kind: Kind
    var status: Int
    var contentType: String
    var body: [UInt8]
}

/// The three dialects: token check, field validation, success and refusal bodies.
enum FakeDialect {
    /// The token a request presents: the Authorization header for Fonnte and Wablas, the `key` field for Woowa.
    static func presentedToken(_ provider: Provider, authorization: String?, fields: [String: String]) -> String? {
        switch provider {
        case .fonnte, .wablas: authorization
        case .woowa: fields["key"]
        }
    }

    /// Whether a presented token matches the configured one.
    ///
    /// Wablas accepts `token.secret` and, for old accounts, the bare token: configured
    /// `tok` accepts `tok` and `tok.anything`; configured `tok.sec` needs exactly that.
    static func tokenMatches(_ provider: Provider, presented: String?, expected: String) -> Bool {
        guard let presented else { return false }
        if presented == expected { return true }
        if provider == .wablas, !expected.contains("."), presented.hasPrefix(expected + ".") { return true }
        return false
    }

    static func invalidToken(_ provider: Provider) -> FakeAnswer {
        switch provider {
        case .fonnte:
            refusal(provider, reason: "token invalid", status: 200)
        case .wablas:
            refusal(provider, reason: "token invalid or device expired", status: 200)
        case .woowa:
            FakeAnswer(
                kind: .refused, status: 200, contentType: "application/json",
                body: FakeJSON.object([("code", .int(401)), ("message", .string("invalid key"))]).bytes)
        }
    }

    /// The dialect's refusal body; Woowa's `code` is the HTTP status when that is an error, else 400.
    static func refusal(_ provider: Provider, reason: String, status: Int) -> FakeAnswer {
        let body: FakeJSON
        switch provider {
        case .fonnte:
            body = .object([("status", .bool(false)), ("reason", .string(reason))])
        case .wablas:
            body = .object([("status", .bool(false)), ("message", .string(reason))])
        case .woowa:
            body = .object([("code", .int(Int64(status >= 400 ? status : 400))), ("message", .string(reason))])
        }
        return FakeAnswer(kind: .refused, status: status, contentType: "application/json", body: body.bytes)
    }

    /// A refusal for a request the real gateway would reject for its fields, or nil when the fields are usable.
    static func validationFailure(_ provider: Provider, path: String, fields: [String: String]?) -> FakeAnswer? {
        guard let fields else {
            return refusal(provider, reason: provider == .fonnte ? "JSON format invalid" : "invalid json", status: 200)
        }
        func missing(_ key: String) -> Bool { (fields[key] ?? "").unicodeScalars.allSatisfy(isSpace) }
        switch provider {
        case .fonnte:
            if missing("target") { return refusal(provider, reason: "target invalid", status: 200) }
            if missing("message") { return refusal(provider, reason: "input invalid", status: 200) }
        case .wablas:
            if missing("phone") || missing("message") {
                return refusal(provider, reason: "phone and message are required", status: 200)
            }
        case .woowa:
            let targetKey = path.hasSuffix("_group_id") ? "group_id" : "phone_no"
            if missing(targetKey) || missing("message") {
                return refusal(provider, reason: "\(targetKey) and message are required", status: 200)
            }
        }
        return nil
    }

    /// Number of entries in a comma-separated target list.
    static func targets(_ list: String) -> [String] {
        list.split(separator: ",").map(trimmed).filter { !$0.isEmpty }
    }

    /// What `CharacterSet.whitespaces` holds (tab and the Unicode space separators), without Foundation's
    /// bridging, which cost the fake more than the rest of an answer.
    static func isSpace(_ scalar: Unicode.Scalar) -> Bool {
        // In ASCII the only space separator is the space itself; the property lookup is for the rest.
        scalar == " " || scalar == "\t" || (scalar.value >= 0x80 && scalar.properties.generalCategory == .spaceSeparator)
    }

    static func trimmed(_ text: Substring) -> String {
        let scalars = text.unicodeScalars
        guard let first = scalars.firstIndex(where: { !isSpace($0) }),
            let last = scalars.lastIndex(where: { !isSpace($0) })
        else { return "" }
        return String(scalars[first...last])
    }

    /// The dialect's success body; `nextSequence` hands out unique numbers for message ids.
    static func success(
        _ provider: Provider, path: String, fields: [String: String], nextSequence: (Int) -> Int
    ) -> FakeAnswer {
        let body: FakeJSON
        switch provider {
        case .fonnte:
            let countryCode = fields["countryCode"] ?? "62"
            let targets = targets(fields["target"] ?? "").map { target -> String in
                // Fonnte replaces a leading 0 with the country code unless countryCode is "0".
                if countryCode != "0", target.hasPrefix("0"), !target.contains("@") {
                    return countryCode + target.dropFirst()
                }
                return target
            }
            let first = nextSequence(targets.count)
            body = .object([
                ("status", .bool(true)),
                ("detail", .string("success! message in queue")),
                ("id", .array(targets.indices.map { .string(String(80_367_170 + first + $0)) })),
                ("process", .string("pending")),
                ("requestid", .int(Int64(2_937_124 + first))),
                ("target", .array(targets.map { .string($0) })),
            ])
        case .wablas:
            let phones = targets(fields["phone"] ?? "")
            let first = nextSequence(phones.count)
            let message = fields["message"] ?? ""
            let refID: FakeJSON = fields["ref_id"].map { .string($0) } ?? .null
            body = .object([
                ("status", .bool(true)),
                ("message", .string("Message is pending and waiting to be processed")),
                (
                    "data",
                    .object([
                        ("device_id", .string("FAKE01")),
                        ("quota", .int(88)),
                        (
                            "messages",
                            .array(
                                phones.enumerated().map { i, phone in
                                    .object([
                                        ("id", .string(wablasID(first + i))),
                                        ("phone", .string(phone)),
                                        ("message", .string(message)),
                                        ("status", .string("pending")),
                                        ("ref_id", refID),
                                    ])
                                })
                        ),
                    ])
                ),
            ])
        case .woowa:
            let isGroup = path.hasSuffix("_group_id")
            let to = (isGroup ? fields["group_id"] : fields["phone_no"]) ?? ""
            let message = fields["message"] ?? ""
            let id = "WOWA\(1000 + nextSequence(1))"
            let chat = to.hasPrefix("+") ? String(to.dropFirst()) : to
            let serialized = isGroup ? "true_\(chat)_\(id)" : "true_\(chat)@c.us_\(id)"
            body = .object([
                ("code", .int(200)),
                ("query", .object([("to", .string(to)), ("message", .string(message))])),
                (
                    "results",
                    .object([
                        ("id_message", .string(id)),
                        ("serialized", .string(serialized)),
                        ("type_chat", .string(isGroup ? "group" : "personal")),
                        ("message", .string(message)),
                    ])
                ),
            ])
        }
        return FakeAnswer(kind: .accepted, status: 200, contentType: "application/json", body: body.bytes)
    }

    /// A UUID-shaped id that is unique per fake gateway and stable across runs.
    private static func wablasID(_ n: Int) -> String {
        let hex = String(n, radix: 16)
        return "5be46e84-0000-4000-8000-" + String(repeating: "0", count: max(0, 12 - hex.count)) + hex
    }
}
