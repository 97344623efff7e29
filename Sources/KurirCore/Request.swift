/// One recipient: a normalised phone number (`62…` digits) or a group id (`…@g.us`).
public struct Target: Sendable, Hashable {
    /// `62…` digits for a number, the group id as given (with `@g.us`) for a group.
    public var value: String
    /// Whether `value` is a WhatsApp group id.
    public var isGroup: Bool

    /// Creates a target from an already normalised value.
    public init(value: String, isGroup: Bool) {
        self.value = value
        self.isGroup = isGroup
    }
}

/// A request that passed validation.
public struct NotificationRequest: Sendable, Equatable {
    /// The producer's id; `nil` when the payload had none.
    public var id: String?
    /// The topic after the subscription's fixed prefix, e.g. `tickets/assigned`.
    public var route: String
    /// Normalised targets, duplicates removed, order kept.
    public var targets: [Target]
    /// The text, as given.
    public var message: String
    /// `priority`, default `normal`.
    public var priority: Priority
    /// `reply_to`: also publish the final event here.
    public var replyTo: String?

    /// Creates a request.
    public init(
        id: String?, route: String, targets: [Target], message: String, priority: Priority = .normal,
        replyTo: String? = nil
    ) {
        self.id = id
        self.route = route
        self.targets = targets
        self.message = message
        self.priority = priority
        self.replyTo = replyTo
    }
}

/// What to do with an incoming payload.
public enum RequestDecision: Sendable, Equatable {
    /// Valid: deliver it.
    case accepted(NotificationRequest)
    /// Invalid: nothing is sent; `reason` is one line, `id` the payload's `id` when it was a usable string.
    case rejected(reason: String, id: String?)
}

/// The JSON decoder's error text, handed to the validator when a payload is not JSON.
public struct JSONParseFailure: Error, Sendable, Equatable {
    /// The parse error, one line.
    public var message: String

    /// Wraps a parse error text.
    public init(_ message: String) {
        self.message = message
    }
}

/// Validates decoded request payloads (contract §3).
public struct RequestValidator: Sendable {
    /// Largest accepted payload in bytes.
    public static let maxPayloadBytes = 65_536
    /// Largest accepted message in Unicode scalars.
    public static let maxMessageCharacters = 4096
    /// Most targets one request may name.
    public static let maxTargets = 100
    /// Longest accepted `id`, in Unicode scalars.
    public static let maxIDCharacters = 200

    /// Country code put in place of a leading `0`.
    public let defaultCountryCode: String
    /// The request subscription (a `$share/<group>/` prefix is allowed and ignored).
    public let topicFilter: String
    /// Where events go.
    public let resultPrefix: String

    /// Creates a validator for one subscription.
    public init(defaultCountryCode: String, subscription topicFilter: String, resultPrefix: String) {
        self.defaultCountryCode = defaultCountryCode
        self.topicFilter = topicFilter
        self.resultPrefix = resultPrefix
        self.routePrefix = String(TopicFilter.fixedPrefix(topicFilter))
    }

    /// The subscription's fixed part, cut from every topic to leave the route (computed once, not per message).
    private let routePrefix: String

    /// `decoded` is the jansson result: .success(value) or .failure(one-line parse error text).
    public func validate(topic: String, payloadSize: Int, decoded: Result<JSONValue, JSONParseFailure>)
        -> RequestDecision
    {
        let value: JSONValue
        switch decoded {
        case .success(let decodedValue): value = decodedValue
        case .failure(let failure):
            if payloadSize > Self.maxPayloadBytes { return reject("payload larger than \(Self.maxPayloadBytes) bytes") }
            return reject("not JSON: \(OneLine.sanitise(failure.message, limit: 200))")
        }
        let echoedID = Self.usableID(value["id"])
        if payloadSize > Self.maxPayloadBytes {
            return reject("payload larger than \(Self.maxPayloadBytes) bytes", id: echoedID)
        }
        guard case .object = value else { return reject("payload is not a JSON object") }
        func no(_ reason: String) -> RequestDecision { reject(reason, id: echoedID) }

        var id: String?
        if let idValue = value["id"], idValue != .null {
            guard let usable = echoedID else {
                return no("id must be a non-empty string of at most \(Self.maxIDCharacters) characters")
            }
            id = usable
        }

        var forceGroup = false
        if let groupValue = value["group"] {
            switch groupValue {
            case .bool(let flag): forceGroup = flag
            case .null: break
            default: return no("group must be true or false")
            }
        }

        // Targets: a string or an array of strings, each possibly a comma list.
        var pieces: [String] = []
        switch value["target"] {
        case nil, .null?:
            return no("target is required")
        case .string(let text)?:
            pieces = Self.split(text)
        case .array(let items)?:
            for item in items {
                guard case .string(let text) = item else {
                    return no("target must be a string or an array of strings")
                }
                pieces += Self.split(text)
                if pieces.count > Self.maxTargets { break }
            }
        default:
            return no("target must be a string or an array of strings")
        }
        guard !pieces.isEmpty else { return no("target is empty") }
        guard pieces.count <= Self.maxTargets else { return no("more than \(Self.maxTargets) targets") }
        var targets: [Target] = []
        var seen = Set<Target>()
        for piece in pieces {
            guard let target = TargetNormaliser.normalise(piece, forceGroup: forceGroup, defaultCountryCode: defaultCountryCode)
            else {
                return no("invalid target \"\(OneLine.sanitise(piece, limit: 64))\"")
            }
            if seen.insert(target).inserted { targets.append(target) }
        }

        guard let messageValue = value["message"], messageValue != .null else { return no("message is required") }
        guard case .string(let message) = messageValue else { return no("message must be a string") }
        if message.isBlank { return no("message is empty") }
        if message.unicodeScalars.count > Self.maxMessageCharacters {
            return no("message longer than \(Self.maxMessageCharacters) characters")
        }
        if message.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\n" && $0 != "\r" && $0 != "\t" }) {
            return no("message contains a control character")
        }

        var priority = Priority.normal
        if let priorityValue = value["priority"], priorityValue != .null {
            guard case .string(let text) = priorityValue, let parsed = Priority(rawValue: text.lowercased()) else {
                return no("priority must be critical, normal or bulk")
            }
            priority = parsed
        }

        var replyTo: String?
        if let replyValue = value["reply_to"], replyValue != .null {
            guard case .string(let topicName) = replyValue, TopicFilter.isValidTopicName(topicName) else {
                return no("reply_to must be a non-empty topic without + or #")
            }
            if TopicFilter.matches(topicFilter, topic: topicName) {
                return no("reply_to matches the request subscription (it would loop)")
            }
            replyTo = topicName
        }

        return .accepted(
            NotificationRequest(
                id: id, route: route(forTopic: topic), targets: targets, message: message, priority: priority,
                replyTo: replyTo))
    }

    /// The topic without the subscription's fixed prefix: `notify/whatsapp/tickets/assigned` → `tickets/assigned`.
    public func route(forTopic topic: String) -> String {
        let prefix = routePrefix
        if topic.hasPrefix(prefix) { return String(topic.dropFirst(prefix.count)) }
        // `a/#` also matches `a` itself: nothing is left.
        if prefix.hasSuffix("/") && topic == String(prefix.dropLast()) { return "" }
        return topic
    }

    private func reject(_ reason: String, id: String? = nil) -> RequestDecision {
        .rejected(reason: OneLine.sanitise(reason, limit: 300), id: id)
    }

    static func usableID(_ value: JSONValue?) -> String? {
        guard case .string(let text)? = value, !text.isEmpty, text.unicodeScalars.count <= maxIDCharacters else {
            return nil
        }
        return text
    }

    static func split(_ text: String) -> [String] {
        text.split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmingSpaces() }
            .filter { !$0.isEmpty }
    }
}

/// Turns one raw target into its normalised form (contract §3, providers.md "Numbers and groups").
public enum TargetNormaliser {
    /// The normalised target, or `nil` when `raw` is not a valid number or group id.
    ///
    /// Numbers: spaces, tabs, dashes, dots and parentheses dropped; one leading `+` dropped; a leading
    /// `0` becomes `defaultCountryCode`; then 8–15 ASCII digits. Groups (ending in `@g.us`, or every
    /// target when `forceGroup`): `digits@g.us` or `digits-digits@g.us`, kept as given.
    public static func normalise(_ raw: String, forceGroup: Bool, defaultCountryCode: String) -> Target? {
        let text = raw.trimmingSpaces()
        if forceGroup || text.hasSuffix("@g.us") {
            let id = text.hasSuffix("@g.us") ? text : text + "@g.us"
            return isGroupID(id) ? Target(value: id, isGroup: true) : nil
        }
        var digits = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            switch scalar {
            case " ", "\t", "-", ".", "(", ")": continue
            default: digits.append(scalar)
            }
        }
        var number = String(digits)
        if number.hasPrefix("+") {
            number.removeFirst()
        } else if number.hasPrefix("0") {
            number = defaultCountryCode + number.dropFirst()
        }
        guard (8...15).contains(number.utf8.count), number.utf8.allSatisfy(isDigit) else { return nil }
        return Target(value: number, isGroup: false)
    }

    /// Whether `id` is `digits@g.us` or `digits-digits@g.us`.
    public static func isGroupID(_ id: String) -> Bool {
        guard id.hasSuffix("@g.us") else { return false }
        let body = id.utf8.dropLast(5)
        let parts = body.split(separator: UInt8(ascii: "-"), omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2 else { return false }
        return parts.allSatisfy { !$0.isEmpty && $0.allSatisfy(isDigit) }
    }
}
