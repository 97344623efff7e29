/// A JSON value as jansson gives it, with object key order kept.
public enum JSONValue: Sendable, Equatable {
    /// JSON `null`.
    case null
    /// JSON `true` or `false`.
    case bool(Bool)
    /// A JSON number without fraction or exponent that fits in 64 bits.
    case integer(Int64)
    /// A JSON number with a fraction or exponent.
    case real(Double)
    /// A JSON string (valid UTF-8, no NUL).
    case string(String)
    /// A JSON array.
    case array([JSONValue])
    /// A JSON object; members in document order, keys unique (the decoder rejects duplicates).
    case object([JSONMember])

    /// The value of the first member named `key` when this is an object; `nil` otherwise.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first(where: { $0.key == key })?.value
    }
}

/// One member of a JSON object: a key and its value.
public struct JSONMember: Sendable, Equatable {
    /// The member's key.
    public var key: String
    /// The member's value.
    public var value: JSONValue

    /// Creates a member from a key and a value.
    public init(_ key: String, _ value: JSONValue) {
        self.key = key
        self.value = value
    }
}
