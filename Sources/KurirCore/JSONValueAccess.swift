extension JSONValue {
    /// The string when this is `.string`, else `nil`.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The boolean when this is `.bool`, else `nil`.
    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// The members when this is `.object`, else `nil`.
    public var objectMembers: [JSONMember]? {
        if case .object(let members) = self { return members }
        return nil
    }

    /// The value of the first member whose key equals `key` ignoring ASCII case; objects only.
    ///
    /// Gateways are inconsistent about key case (Fonnte documents `"Status"`), so the
    /// dialects look keys up this way.
    public func member(caseInsensitive key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        let wanted = key.lowercased()
        return members.first(where: { $0.key.lowercased() == wanted })?.value
    }
}
