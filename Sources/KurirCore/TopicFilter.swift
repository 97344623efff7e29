/// MQTT topic names and topic filters (`+` one level, `#` the rest), as MQTT 3.1.1 §4.7 defines them.
public enum TopicFilter {
    /// Whether `topic` (a topic name) matches `filter` (a topic filter).
    ///
    /// A filter starting with a wildcard does not match a topic starting with `$`.
    /// A `$share/<group>/` prefix on the filter is ignored, since it only selects the subscriber.
    public static func matches(_ filter: String, topic: String) -> Bool {
        let filterLevels = withoutSharePrefix(filter).split(separator: "/", omittingEmptySubsequences: false)
        let topicLevels = topic.split(separator: "/", omittingEmptySubsequences: false)
        if topic.hasPrefix("$"), let first = filterLevels.first, first == "+" || first == "#" {
            return false
        }
        var i = 0
        while i < filterLevels.count {
            let level = filterLevels[i]
            if level == "#" { return true }  // also matches the parent level itself
            guard i < topicLevels.count else { return false }
            if level != "+" && level != topicLevels[i] { return false }
            i += 1
        }
        return topicLevels.count == filterLevels.count
    }

    /// Whether `filter` is a valid topic filter: non-empty, no NUL, `#` only as the whole
    /// last level, `+` only as a whole level.
    public static func isValidFilter(_ filter: String) -> Bool {
        guard !filter.isEmpty, filter.utf8.count <= 65_535, !filter.unicodeScalars.contains("\0") else {
            return false
        }
        let levels = withoutSharePrefix(filter).split(separator: "/", omittingEmptySubsequences: false)
        for (index, level) in levels.enumerated() {
            if level.contains("#") && (level != "#" || index != levels.count - 1) { return false }
            if level.contains("+") && level != "+" { return false }
        }
        return true
    }

    /// Whether `topic` is a valid topic name to publish to: non-empty, no wildcards, no control characters.
    public static func isValidTopicName(_ topic: String) -> Bool {
        !topic.isEmpty && topic.utf8.count <= 65_535
            && !topic.unicodeScalars.contains(where: { $0 == "+" || $0 == "#" || OneLine.isUnsafe($0) })
    }

    /// The filter without a leading `$share/<group>/`.
    public static func withoutSharePrefix(_ filter: String) -> Substring {
        guard filter.hasPrefix("$share/") else { return filter[...] }
        let rest = filter.dropFirst("$share/".count)
        guard let slash = rest.firstIndex(of: "/") else { return filter[...] }
        return rest[rest.index(after: slash)...]
    }

    /// The part of the filter before its first wildcard level, e.g. `notify/whatsapp/` for `notify/whatsapp/#`.
    public static func fixedPrefix(_ filter: String) -> Substring {
        let plain = withoutSharePrefix(filter)
        guard let wildcard = plain.firstIndex(where: { $0 == "+" || $0 == "#" }) else { return plain }
        return plain[..<wildcard]
    }
}
