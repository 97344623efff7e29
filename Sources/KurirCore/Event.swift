/// The kinds of events kurir publishes (contract §4).
public enum EventKind: String, Sendable {
    /// A gateway accepted the message.
    case delivered
    /// A gateway failed and the next one is about to be tried.
    case failover
    /// Every gateway in the chain failed (this round).
    case failed
    /// The request was invalid.
    case rejected
    /// `WHATSAPP_ENABLED=false`: nothing was sent.
    case skipped
}

/// One event, ready to be stored in the outbox and published.
///
/// Never carries the message text or a token.
public struct Event: Sendable, Equatable {
    /// Which event.
    public var kind: EventKind
    /// Unique id; stays the same when the event is published again after a crash.
    public var eventID: String
    /// The request id (producer's or generated).
    public var requestID: String
    /// The request's route.
    public var route: String
    /// When it happened.
    public var at: Timestamp
    /// The kind-specific fields, in order, after the common ones.
    public var fields: [JSONMember]

    /// Creates an event from its parts; the factories below are the usual way.
    public init(kind: EventKind, eventID: String, requestID: String, route: String, at: Timestamp, fields: [JSONMember]) {
        self.kind = kind
        self.eventID = eventID
        self.requestID = requestID
        self.route = route
        self.at = at
        self.fields = fields
    }

    /// A `delivered` event: `target`, `provider`, `failover`, `attempts`, `latency_ms`, `possible_duplicate`.
    public static func delivered(
        eventID: String, requestID: String, route: String, at: Timestamp, target: String, provider: Provider,
        failover: Bool, attempts: [AttemptResult], latencyMs: Int64, possibleDuplicate: Bool
    ) -> Event {
        Event(
            kind: .delivered, eventID: eventID, requestID: requestID, route: route, at: at,
            fields: [
                JSONMember("target", .string(target)),
                JSONMember("provider", .string(provider.rawValue)),
                JSONMember("failover", .bool(failover)),
                JSONMember("attempts", attemptsJSON(attempts)),
                JSONMember("latency_ms", .integer(latencyMs)),
                JSONMember("possible_duplicate", .bool(possibleDuplicate)),
            ])
    }

    /// A `failover` event: `target`, `from`, `to`, `error`.
    public static func failover(
        eventID: String, requestID: String, route: String, at: Timestamp, target: String, notice: FailoverNotice
    ) -> Event {
        Event(
            kind: .failover, eventID: eventID, requestID: requestID, route: route, at: at,
            fields: [
                JSONMember("target", .string(target)),
                JSONMember("from", .string(notice.from.rawValue)),
                JSONMember("to", .string(notice.to.rawValue)),
                JSONMember("error", .string(notice.error)),
            ])
    }

    /// A `failed` event: `target`, `attempts`, `retry_at` (RFC 3339 or null), `retries_left`.
    public static func failed(
        eventID: String, requestID: String, route: String, at: Timestamp, target: String, attempts: [AttemptResult],
        retryAt: Timestamp?, retriesLeft: Int
    ) -> Event {
        Event(
            kind: .failed, eventID: eventID, requestID: requestID, route: route, at: at,
            fields: [
                JSONMember("target", .string(target)),
                JSONMember("attempts", attemptsJSON(attempts)),
                JSONMember("retry_at", retryAt.map { .string($0.rfc3339) } ?? .null),
                JSONMember("retries_left", .integer(Int64(retriesLeft))),
            ])
    }

    /// A `rejected` event: `reason`.
    public static func rejected(eventID: String, requestID: String, route: String, at: Timestamp, reason: String)
        -> Event
    {
        Event(
            kind: .rejected, eventID: eventID, requestID: requestID, route: route, at: at,
            fields: [JSONMember("reason", .string(reason))])
    }

    /// A `skipped` event: `target`.
    public static func skipped(eventID: String, requestID: String, route: String, at: Timestamp, target: String)
        -> Event
    {
        Event(
            kind: .skipped, eventID: eventID, requestID: requestID, route: route, at: at,
            fields: [JSONMember("target", .string(target))])
    }

    /// The payload: `{"event","event_id","id","route","at", ...fields}`.
    public var json: JSONValue {
        .object(
            [
                JSONMember("event", .string(kind.rawValue)),
                JSONMember("event_id", .string(eventID)),
                JSONMember("id", .string(requestID)),
                JSONMember("route", .string(route)),
                JSONMember("at", .string(at.rfc3339)),
            ] + fields)
    }

    /// `<prefix>/<event>/<route>`; `<prefix>/<event>` when the route is empty.
    public func topic(prefix: String) -> String {
        route.isEmpty ? "\(prefix)/\(kind.rawValue)" : "\(prefix)/\(kind.rawValue)/\(route)"
    }

    /// Attempts as `[{"provider","outcome","error","http_status","latency_ms"}]`, null for absent error/status.
    public static func attemptsJSON(_ attempts: [AttemptResult]) -> JSONValue {
        .array(
            attempts.map { attempt in
                .object([
                    JSONMember("provider", .string(attempt.provider.rawValue)),
                    JSONMember("outcome", .string(attempt.outcome.rawValue)),
                    JSONMember("error", attempt.error.map { .string($0) } ?? .null),
                    JSONMember("http_status", attempt.httpStatus.map { .integer(Int64($0)) } ?? .null),
                    JSONMember("latency_ms", .integer(attempt.latencyMs)),
                ])
            })
    }
}
