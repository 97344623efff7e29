/// Makes outside text safe to put into one log line, event or database reason.
///
/// Text from gateways, payloads and topics could carry line breaks or terminal
/// escape sequences that forge or hide operator log lines; those become spaces.
public enum OneLine {
    /// Replaces control characters, ANSI escape sequences, Unicode line/paragraph
    /// separators and bidirectional overrides with spaces, trims the ends and caps the
    /// result at `limit` Unicode scalars (the last one becoming `…` when cut).
    public static func sanitise(_ text: String, limit: Int = 200) -> String {
        var out = String.UnicodeScalarView()
        var scalars = Array(text.unicodeScalars)[...]
        while let scalar = scalars.popFirst() {
            if scalar == "\u{1B}" {
                // CSI: ESC [ parameters... final byte 0x40–0x7E; drop the whole sequence.
                if scalars.first == "[" {
                    scalars.removeFirst()
                    while let next = scalars.popFirst() {
                        if (0x40...0x7E).contains(next.value) { break }
                    }
                } else if let next = scalars.first, (0x40...0x5F).contains(next.value) {
                    scalars.removeFirst()
                }
                out.append(" ")
            } else if isUnsafe(scalar) {
                out.append(" ")
            } else {
                out.append(scalar)
            }
        }
        let trimmed = String(out).trimmingSpaces()
        return cap(trimmed, limit: limit)
    }

    /// Caps `text` at `limit` Unicode scalars, ending in `…` when it was cut.
    public static func cap(_ text: String, limit: Int) -> String {
        let scalars = text.unicodeScalars
        guard scalars.count > limit else { return text }
        guard limit > 0 else { return "" }
        var out = String.UnicodeScalarView(scalars.prefix(limit - 1))
        out.append("…")
        return String(out)
    }

    static func isUnsafe(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F: return true  // C0, DEL, C1 (includes NEL)
        case 0x2028, 0x2029: return true  // line and paragraph separators
        case 0x202A...0x202E, 0x2066...0x2069: return true  // bidi overrides can disguise text
        default: return false
        }
    }
}

extension String {
    /// The string without leading and trailing spaces, tabs and line breaks.
    func trimmingSpaces() -> String {
        let scalars = unicodeScalars
        guard let start = scalars.firstIndex(where: { !$0.isSpace }) else { return "" }
        let end = scalars.lastIndex(where: { !$0.isSpace })!
        return String(scalars[start...end])
    }

    /// True when the string is empty or holds only spaces, tabs and line breaks (what `trimmingSpaces`
    /// removes), without building the trimmed copy.
    var isBlank: Bool { unicodeScalars.allSatisfy(\.isSpace) }
}

extension Unicode.Scalar {
    /// Unicode's White_Space property, answered without a property lookup for ASCII (every request's
    /// targets and message are trimmed).
    var isSpace: Bool {
        if isASCII { return value == 0x20 || (0x09...0x0D).contains(value) }
        return properties.isWhitespace
    }
}
