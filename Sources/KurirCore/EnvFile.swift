/// `.env` file parsing: KEY=VALUE lines, `#` comments, blank lines, optional `export `, single or double quotes.
public enum EnvFile {
    /// Parses `.env` text into variables; a later line wins over an earlier one.
    ///
    /// Unquoted values are trimmed and lose a trailing ` # comment`. Single quotes are literal;
    /// double quotes understand `\n`, `\r`, `\t`, `\"`, `\\` and `\$`. Errors name the line
    /// (`.env line N`) and never echo the value, which may be a secret.
    public static func parse(_ text: String) throws(ConfigurationError) -> [String: String] {
        var result: [String: String] = [:]
        var lineNumber = 0
        // `\r\n` is one Character in Swift, so split on any newline rather than on "\n".
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0.isNewline }) {
            lineNumber += 1
            var line = rawLine.drop(while: { $0 == " " || $0 == "\t" })
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") || line.hasPrefix("export\t") {
                line = line.dropFirst(7).drop(while: { $0 == " " || $0 == "\t" })
            }
            let variable = ".env line \(lineNumber)"
            guard let equals = line.firstIndex(of: "=") else {
                throw ConfigurationError(variable: variable, message: "expected KEY=VALUE")
            }
            let key = String(line[..<equals]).trimmingSpaces()
            guard isValidKey(key) else {
                throw ConfigurationError(variable: variable, message: "invalid variable name (letters, digits, _)")
            }
            let rest = line[line.index(after: equals)...].drop(while: { $0 == " " || $0 == "\t" })
            result[key] = try parseValue(rest, variable: variable)
        }
        return result
    }

    static func isValidKey(_ key: String) -> Bool {
        guard let first = key.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic)
        else { return false }
        return key.unicodeScalars.allSatisfy {
            $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || isDigit(UInt8($0.value))))
        }
    }

    static func parseValue(_ text: Substring, variable: String) throws(ConfigurationError) -> String {
        guard let quote = text.first, quote == "\"" || quote == "'" else {
            // Unquoted: a `#` starts a comment only after whitespace, so tokens may contain `#`.
            var value = ""
            var previous: Character = " "
            for character in text {
                if character == "#" && (previous == " " || previous == "\t") { break }
                value.append(character)
                previous = character
            }
            return value.trimmingSpaces()
        }
        var value = ""
        var index = text.index(after: text.startIndex)
        var closed = false
        while index < text.endIndex {
            let character = text[index]
            index = text.index(after: index)
            if character == quote {
                closed = true
                break
            }
            if quote == "\"" && character == "\\" && index < text.endIndex {
                let escaped = text[index]
                index = text.index(after: index)
                switch escaped {
                case "n": value.append("\n")
                case "r": value.append("\r")
                case "t": value.append("\t")
                case "\"", "\\", "$": value.append(escaped)
                default:
                    value.append("\\")
                    value.append(escaped)
                }
            } else {
                value.append(character)
            }
        }
        guard closed else {
            throw ConfigurationError(variable: variable, message: "unterminated \(quote) quote")
        }
        let trailing = text[index...].drop(while: { $0 == " " || $0 == "\t" })
        guard trailing.isEmpty || trailing.hasPrefix("#") else {
            throw ConfigurationError(variable: variable, message: "unexpected text after the closing quote")
        }
        return value
    }
}
