import CJansson
import Glibc
import KurirCore

/// Converts between ``JSONValue`` and JSON bytes with jansson.
///
/// Decoding is strict on purpose: a request payload that jansson accepts only with a lenient
/// flag (duplicate keys, NUL in strings, trailing bytes) is rejected, so what kurir records is
/// exactly what the producer meant.
public enum JSONCodec {
    /// Decodes exactly one JSON value of any type from `bytes`.
    ///
    /// Rejects duplicate object keys, invalid UTF-8, `\u0000` in strings, integers that do not
    /// fit in 64 bits, nesting deeper than jansson's limit (2048) and anything after the value
    /// but whitespace. The error's description is one line, fit for a `rejected` reason.
    public static func decode(_ bytes: [UInt8]) throws(JSONDecodeError) -> JSONValue {
        // withUnsafeBytes rethrows untyped errors: carry the typed one out in a Result.
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(JSONDecodeError) -> JSONValue in try decode(buffer) }
        }
        return try result.get()
    }

    /// Decodes exactly one JSON value from memory the caller owns, without copying it first.
    ///
    /// Same rules as ``decode(_:)-([UInt8])``; `bytes` only needs to stay valid during the call.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(JSONDecodeError) -> JSONValue {
        var error = json_error_t()
        let flags = Int(JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)
        // json_loadb refuses a NULL buffer even for length 0 ("wrong arguments"); an empty
        // input must fail as JSON ("end of file"), so point it at a real byte.
        var placeholder: UInt8 = 0
        let loaded: UnsafeMutablePointer<json_t>? = withUnsafeMutablePointer(to: &placeholder) { fallback in
            let base = bytes.baseAddress ?? UnsafeRawPointer(fallback)
            return json_loadb(base.assumingMemoryBound(to: CChar.self), bytes.count, flags, &error)
        }
        guard let loaded else {
            throw JSONDecodeError(jansson: error)
        }
        let root = JanssonReference(owning: loaded)
        return withExtendedLifetime(root) { convert(root.pointer) }
    }

    /// Encodes `value` as compact JSON (no whitespace), keys in the order given, UTF-8.
    ///
    /// Never fails: non-finite reals become `null`. Should a value hold the same key twice,
    /// the first position is kept with the last value (jansson objects have unique keys).
    public static func encode(_ value: JSONValue) -> [UInt8] {
        let root = JanssonReference(owning: makeJansson(value))
        let flags = Int(JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER)
        guard let dumped = json_dumps(root.pointer, flags) else {
            // json_dumps fails only when malloc does, or on a reference cycle, which a tree
            // built from a Swift enum cannot have.
            fatalError("jansson could not encode a JSON value: out of memory")
        }
        defer { free(dumped) }
        let length = strlen(dumped)
        return [UInt8](UnsafeRawBufferPointer(start: dumped, count: length))
    }

    /// Encodes `value` like ``encode(_:)`` and returns the text as a `String`.
    public static func encodeString(_ value: JSONValue) -> String {
        String(decoding: encode(value), as: UTF8.self)
    }
}

/// Why a payload is not acceptable JSON, as one line of text.
public struct JSONDecodeError: Error, Sendable, Equatable, CustomStringConvertible {
    /// One line, e.g. `duplicate object key near 'target' at line 1 column 30`.
    public var description: String

    /// Creates an error with the given one-line description.
    public init(_ description: String) {
        self.description = description
    }

    init(jansson error: json_error_t) {
        var error = error
        let text = withUnsafeBytes(of: &error.text) { raw -> String in
            let bytes = raw.bindMemory(to: UInt8.self)
            // The last byte carries the error code, not text.
            let limit = bytes.count - 1
            let end = bytes[..<limit].firstIndex(of: 0) ?? limit
            return String(decoding: bytes[..<end], as: UTF8.self)
        }
        // jansson names its own flag; a producer only needs to know NUL is not accepted.
        let plain = text.replacing(" is not allowed without JSON_ALLOW_NUL", with: " is not allowed")
        var message = JSONDecodeError.oneLine(plain.isEmpty ? "invalid JSON" : plain)
        if error.line >= 0 && error.column >= 0 {
            message += " at line \(error.line) column \(error.column)"
        }
        self.description = message
    }

    /// jansson quotes the offending input after "near"; input can hold control characters
    /// (a raw line break inside a string), which must not split the reason over lines.
    private static func oneLine(_ text: String) -> String {
        var result = ""
        result.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7F || scalar == "\u{2028}" || scalar == "\u{2029}" {
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }
}

/// Owns one jansson reference and drops it in `deinit`, so every path (including a thrown
/// error or an early return) releases the tree exactly once.
private final class JanssonReference {
    let pointer: UnsafeMutablePointer<json_t>

    init(owning pointer: UnsafeMutablePointer<json_t>) {
        self.pointer = pointer
    }

    deinit {
        CJansson_decref(pointer)
    }
}

/// A container being converted, with what has been converted of it so far.
private enum PendingContainer {
    case array(UnsafeMutablePointer<json_t>, next: Int, count: Int, items: [JSONValue])
    case object(UnsafeMutablePointer<json_t>, iterator: UnsafeMutableRawPointer, key: String, members: [JSONMember])
}

/// Converts a borrowed jansson tree. Iterative with an explicit stack, so the depth of the
/// input costs heap, not the stack of whatever thread decodes (libmosquitto's, for one).
private func convert(_ root: UnsafeMutablePointer<json_t>) -> JSONValue {
    var stack: [PendingContainer] = []
    var node = root
    while true {
        var value: JSONValue
        switch CJansson_typeof(node) {
        case JSON_OBJECT:
            if let iterator = json_object_iter(node) {
                stack.append(.object(node, iterator: iterator, key: objectKey(iterator), members: []))
                node = json_object_iter_value(iterator)
                continue
            }
            value = .object([])
        case JSON_ARRAY:
            let count = json_array_size(node)
            if count > 0 {
                var items: [JSONValue] = []
                items.reserveCapacity(count)
                stack.append(.array(node, next: 1, count: count, items: items))
                node = json_array_get(node, 0)
                continue
            }
            value = .array([])
        case JSON_STRING:
            value = .string(string(json_string_value(node), length: json_string_length(node)))
        case JSON_INTEGER:
            value = .integer(Int64(json_integer_value(node)))
        case JSON_REAL:
            value = .real(json_real_value(node))
        case JSON_TRUE:
            value = .bool(true)
        case JSON_FALSE:
            value = .bool(false)
        default:
            value = .null
        }

        // Hand the finished value to its parent; climb while parents finish too.
        ascending: while true {
            guard let parent = stack.popLast() else { return value }
            switch parent {
            case .array(let array, let next, let count, var items):
                items.append(value)
                if next < count {
                    stack.append(.array(array, next: next + 1, count: count, items: items))
                    node = json_array_get(array, next)
                    break ascending
                }
                value = .array(items)
            case .object(let object, let iterator, let key, var members):
                members.append(JSONMember(key, value))
                if let following = json_object_iter_next(object, iterator) {
                    stack.append(.object(object, iterator: following, key: objectKey(following), members: members))
                    node = json_object_iter_value(following)
                    break ascending
                }
                value = .object(members)
            }
        }
    }
}

private func objectKey(_ iterator: UnsafeMutableRawPointer) -> String {
    string(json_object_iter_key(iterator), length: json_object_iter_key_len(iterator))
}

private func string(_ pointer: UnsafePointer<CChar>?, length: Int) -> String {
    guard let pointer else { return "" }
    return String(decoding: UnsafeRawBufferPointer(start: pointer, count: length), as: UTF8.self)
}

/// Builds a new jansson tree; the caller owns the returned reference.
private func makeJansson(_ value: JSONValue) -> UnsafeMutablePointer<json_t> {
    switch value {
    case .null:
        return json_null()
    case .bool(let flag):
        return flag ? json_true() : json_false()
    case .integer(let number):
        return json_integer(json_int_t(number))
    case .real(let number):
        // json_real refuses NaN and infinities (NULL); JSON has no spelling for them.
        return json_real(number) ?? json_null()
    case .string(let text):
        return withUTF8Bytes(text) { json_stringn_nocheck($0, $1) } ?? json_null()
    case .array(let items):
        let array = json_array()!
        for item in items {
            // _new steals the reference, even when it fails.
            json_array_append_new(array, makeJansson(item))
        }
        return array
    case .object(let members):
        let object = json_object()!
        for member in members {
            let child = makeJansson(member.value)
            // Keys come from Swift strings, so they are valid UTF-8: skip jansson's re-check.
            // _new steals the child's reference, even when it fails.
            withUTF8Bytes(member.key) { key, length in
                _ = json_object_setn_new_nocheck(object, key, length, child)
            }
        }
        return object
    }
}

private func withUTF8Bytes<Result>(
    _ text: String, _ body: (UnsafePointer<CChar>, Int) -> Result
) -> Result {
    var text = text
    return text.withUTF8 { utf8 in
        guard let base = utf8.baseAddress else {
            return "".withCString { body($0, 0) }
        }
        return UnsafeRawPointer(base).withMemoryRebound(to: CChar.self, capacity: utf8.count) {
            body($0, utf8.count)
        }
    }
}
