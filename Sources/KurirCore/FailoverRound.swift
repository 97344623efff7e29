/// A gateway failed and the next one is about to be tried (becomes a `failover` event).
public struct FailoverNotice: Sendable, Equatable {
    /// The gateway that failed.
    public var from: Provider
    /// The gateway tried next.
    public var to: Provider
    /// Why `from` failed, one line.
    public var error: String

    /// Creates a notice.
    public init(from: Provider, to: Provider, error: String) {
        self.from = from
        self.to = to
        self.error = error
    }
}

/// How one round through the chain ended.
public struct RoundResult: Sendable, Equatable {
    /// Whether a gateway accepted the message.
    public var delivered: Bool
    /// The gateway that delivered; when nothing delivered, the primary (chain[0]).
    public var provider: Provider
    /// Delivered by a gateway other than chain[0].
    public var failover: Bool
    /// Every attempt of this round, in the order tried.
    public var attempts: [AttemptResult]
    /// When not delivered: the contract §5 `error_message`.
    public var errorMessage: String?

    /// Creates a result.
    public init(
        delivered: Bool, provider: Provider, failover: Bool, attempts: [AttemptResult], errorMessage: String?
    ) {
        self.delivered = delivered
        self.provider = provider
        self.failover = failover
        self.attempts = attempts
        self.errorMessage = errorMessage
    }
}

/// One delivery's pass through the gateway chain, as a state machine with no I/O.
///
/// The caller loops: `next()` says which request to send; the caller sends it and hands the reply
/// to `record(_:latencyMs:)`; repeat until `.finished`. Operator log lines and failover notices
/// pile up and are drained by the caller.
public struct FailoverRound: Sendable {
    /// What the caller does next.
    public enum Step: Sendable {
        /// POST `request` to `chain[gatewayIndex]`, then call `record`.
        case send(gatewayIndex: Int, request: GatewayRequest)
        /// The round is over.
        case finished(RoundResult)
    }

    /// The chain, primary first.
    public let chain: [GatewayConfig]
    /// The one target of this delivery.
    public let target: Target
    /// Every attempt so far, in the order tried.
    public private(set) var attempts: [AttemptResult] = []

    private let message: String
    private let referenceID: String
    private var nextIndex = 0
    private var pending: (index: Int, request: GatewayRequest)?
    private var result: RoundResult?
    private var logLines: [String] = []
    private var notices: [FailoverNotice] = []

    /// Starts a round; `chain` must not be empty.
    public init(chain: [GatewayConfig], target: Target, message: String, referenceID: String) {
        precondition(!chain.isEmpty, "a gateway chain has at least the primary")
        self.chain = chain
        self.target = target
        self.message = message
        self.referenceID = referenceID
    }

    /// Next thing to do. Gateways that cannot take the message are skipped here: a refused AttemptResult with the skip
    /// reason is appended (latency 0, no http status) and its log lines produced, exactly as if it had refused.
    ///
    /// Calling it again before `record` returns the same `.send`.
    public mutating func next() -> Step {
        if let result { return .finished(result) }
        if let pending { return .send(gatewayIndex: pending.index, request: pending.request) }
        while nextIndex < chain.count {
            let index = nextIndex
            let gateway = chain[index]
            switch Dialect.makeRequest(gateway: gateway, target: target, message: message, referenceID: referenceID) {
            case .success(let request):
                pending = (index, request)
                return .send(gatewayIndex: index, request: request)
            case .failure(let skip):
                let attempt = AttemptResult(
                    provider: gateway.provider, outcome: .refused, error: OneLine.sanitise(skip.message),
                    httpStatus: nil, latencyMs: 0)
                attempts.append(attempt)
                failed(index: index, attempt: attempt)
                nextIndex = index + 1
            }
        }
        return .finished(finish())
    }

    /// Records the reply to the last `.send`; classifies it with the gateway's dialect.
    ///
    /// Calling it with no `.send` outstanding is a programming error and traps.
    public mutating func record(_ reply: GatewayReply, latencyMs: Int64) -> AttemptResult {
        guard let pending else { preconditionFailure("record(_:latencyMs:) without a pending .send") }
        self.pending = nil
        let gateway = chain[pending.index]
        let attempt = Dialect.classify(provider: gateway.provider, reply: reply, latencyMs: latencyMs)
        attempts.append(attempt)
        nextIndex = pending.index + 1
        if attempt.outcome == .accepted {
            let failover = pending.index != 0
            logLines.append(OperatorLines.sent(target: target.value, provider: gateway.provider, failover: failover))
            result = RoundResult(
                delivered: true, provider: gateway.provider, failover: failover, attempts: attempts, errorMessage: nil)
        } else {
            failed(index: pending.index, attempt: attempt)
        }
        return attempt
    }

    /// Operator lines and failover notices produced since the last call (drained).
    public mutating func drainLogLines() -> [String] {
        defer { logLines.removeAll() }
        return logLines
    }

    /// Failover notices produced since the last call (drained).
    public mutating func drainFailoverNotices() -> [FailoverNotice] {
        defer { notices.removeAll() }
        return notices
    }

    private mutating func failed(index: Int, attempt: AttemptResult) {
        guard index + 1 < chain.count else { return }
        let from = chain[index].provider
        let to = chain[index + 1].provider
        logLines.append(OperatorLines.failingOver(position: index, from: from, to: to))
        notices.append(FailoverNotice(from: from, to: to, error: attempt.error ?? "unknown error"))
    }

    private mutating func finish() -> RoundResult {
        if let result { return result }
        logLines += OperatorLines.allFailed(target: target.value, attempts: attempts)
        let finished = RoundResult(
            delivered: false, provider: chain[0].provider, failover: false, attempts: attempts,
            errorMessage: OperatorLines.errorMessage(attempts))
        result = finished
        return finished
    }
}

/// The operator log lines of contract §6 and the `error_message` formats of §5, character for character.
///
/// Outside text (targets, gateway errors) is made one-line first, so a gateway cannot forge log lines.
public enum OperatorLines {
    /// `✅ WhatsApp sent to T via P (primary)` or `… (failover)`.
    public static func sent(target: String, provider: Provider, failover: Bool) -> String {
        "✅ WhatsApp sent to \(clean(target)) via \(provider.rawValue) (\(failover ? "failover" : "primary"))"
    }

    /// `⚠️ Primary provider P failed, attempting failover to Q...` (position 0), `Backup` (1), `Tertiary` (2).
    public static func failingOver(position: Int, from: Provider, to: Provider) -> String {
        let name: String
        switch position {
        case 0: name = "Primary"
        case 1: name = "Backup"
        case 2: name = "Tertiary"
        default: name = "Gateway \(position + 1)"
        }
        return "⚠️ \(name) provider \(from.rawValue) failed, attempting failover to \(to.rawValue)..."
    }

    /// The lines when every gateway failed: one gateway gives two lines (`❌ WhatsApp failed to T via P`,
    /// `Error: e`), two give `❌ Both providers failed. Primary: e1, Backup: e2`, three or more
    /// `❌ All providers failed. p1: e1, p2: e2, p3: e3`.
    public static func allFailed(target: String, attempts: [AttemptResult]) -> [String] {
        switch attempts.count {
        case 0: return ["❌ WhatsApp failed to \(clean(target))"]
        case 1:
            return [
                "❌ WhatsApp failed to \(clean(target)) via \(attempts[0].provider.rawValue)",
                "Error: \(errorText(attempts[0]))",
            ]
        case 2:
            return ["❌ Both providers failed. Primary: \(errorText(attempts[0])), Backup: \(errorText(attempts[1]))"]
        default:
            let parts = attempts.map { "\($0.provider.rawValue): \(errorText($0))" }
            return ["❌ All providers failed. " + parts.joined(separator: ", ")]
        }
    }

    /// The `error_message` of a delivery no gateway took: `e`; `Both failed: Primary (e1), Backup (e2)`;
    /// `All failed: p1 (e1), p2 (e2), p3 (e3)`.
    public static func errorMessage(_ attempts: [AttemptResult]) -> String {
        switch attempts.count {
        case 0: return "no gateway tried"
        case 1: return errorText(attempts[0])
        case 2: return "Both failed: Primary (\(errorText(attempts[0]))), Backup (\(errorText(attempts[1])))"
        default:
            return "All failed: " + attempts.map { "\($0.provider.rawValue) (\(errorText($0)))" }.joined(separator: ", ")
        }
    }

    static func errorText(_ attempt: AttemptResult) -> String {
        let text = clean(attempt.error ?? "")
        return text.isEmpty ? "unknown error" : text
    }

    static func clean(_ text: String) -> String { OneLine.sanitise(text, limit: 200) }
}
