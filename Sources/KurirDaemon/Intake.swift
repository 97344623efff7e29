import Foundation
import KurirCore
import KurirJSON
import KurirMQTT
import KurirStore
import Logging

/// Turns MQTT requests into committed rows before libmosquitto acknowledges them.
///
/// kurir's network thread reads every request waiting on the socket (up to 64), calls `handle` with
/// them, and writes their QoS 1 PUBACKs only after it returned. `handle` validates each request and
/// commits the rows of all of them in one transaction (in FULL also fsyncs it), so when a PUBACK leaves,
/// its request is in SQLite: an acknowledged request is never only in memory. One transaction per read
/// instead of one per request took about a ninth off kurir's CPU per delivery in a burst
/// (docs/performance.md, change 40); a lone request is a read of one. If the commit or the fsync fails,
/// kurir must not acknowledge, so it says why in one line and exits at once; the broker redelivers
/// after restart.
final class Intake: Sendable {
    private let configuration: KurirConfiguration
    private let validator: RequestValidator
    private let store: Store
    private let clock: any WallClock
    private let logger: Logger
    private let deliveryWakeup: Wakeup
    private let outboxWakeup: Wakeup

    init(
        configuration: KurirConfiguration, store: Store, clock: any WallClock, logger: Logger,
        deliveryWakeup: Wakeup, outboxWakeup: Wakeup
    ) {
        self.configuration = configuration
        self.validator = RequestValidator(
            defaultCountryCode: configuration.defaultCountryCode,
            subscription: configuration.mqtt.topic,
            resultPrefix: configuration.mqtt.resultPrefix)
        self.store = store
        self.clock = clock
        self.logger = logger
        self.deliveryWakeup = deliveryWakeup
        self.outboxWakeup = outboxWakeup
    }

    /// The message callback: runs on the network thread with the requests of one read, before their
    /// PUBACKs are written. Commits the rows of every request in one transaction, in message order (so
    /// `INSERT OR IGNORE` keeps the first of two repeats), and puts them on disk, then wakes the delivery
    /// loop and the outbox publisher for them (a claim already under way may still pick one up before its
    /// fsync; a power loss then sends it again, at least once).
    func handle(_ messages: [MQTTMessage]) {
        let requests = messages.map { deliveries(for: $0, at: clock.now()) }.filter { !$0.isEmpty }
        guard !requests.isEmpty else { return }
        let rows = requests.flatMap { $0 }
        let inserted: [Bool]
        do {
            CrashPoints.reach(.intakeBeforeCommit)
            inserted = try store.accept(rows, deferringSync: true)
            CrashPoints.reach(.intakeAfterCommit)
        } catch {
            FatalExit.now("store failed while accepting requests, not acknowledging them: \(error)")
        }
        do {
            try store.syncAccepted()
        } catch {
            FatalExit.now("store failed to fsync accepted requests, not acknowledging them: \(error)")
        }
        logDuplicates(requests, inserted: inserted)
        let new = zip(rows, inserted).filter { $1 }.map { $0.0 }
        if new.contains(where: { $0.status == .pending }) { deliveryWakeup.signal() }
        if new.contains(where: { !$0.events.isEmpty }) { outboxWakeup.signal() }
    }

    /// One line per request that was (partly) a repeat of one already stored.
    private func logDuplicates(_ requests: [[NewDelivery]], inserted: [Bool]) {
        guard inserted.contains(false) else { return }
        var offset = 0
        for rows in requests {
            if inserted[offset..<offset + rows.count].contains(false) {
                logger.debug("duplicate request ignored", metadata: ["route": "\(rows.first?.route ?? "")"])
            }
            offset += rows.count
        }
    }

    /// The rows one request becomes: one per target, or one `rejected` row.
    func deliveries(for message: MQTTMessage, at now: Timestamp) -> [NewDelivery] {
        let decoded: Result<JSONValue, JSONParseFailure>
        if message.payload.count > RequestValidator.maxPayloadBytes {
            decoded = .failure(JSONParseFailure("payload too large to decode"))
        } else {
            do {
                decoded = .success(try JSONCodec.decode(message.payload))
            } catch {
                decoded = .failure(JSONParseFailure(error.description))
            }
        }
        switch validator.validate(topic: message.topic, payloadSize: message.payload.count, decoded: decoded) {
        case .accepted(let request):
            if message.retain && request.id == nil { return ignoringRetainedReplay(message) }
            return accepted(request, at: now)
        case .rejected(let reason, let id):
            if message.retain && id == nil { return ignoringRetainedReplay(message) }
            let route = validator.route(forTopic: message.topic)
            let requestID = id ?? Identifiers.make()
            let replyTo = try? decoded.get()["reply_to"].flatMap(replyTopic)
            logger.info("request rejected: \(reason)", metadata: ["route": "\(route)"])
            let event = Event.rejected(
                eventID: Identifiers.make(), requestID: requestID, route: route, at: now, reason: reason)
            return [
                NewDelivery(
                    requestID: requestID, route: route, target: "", message: "", priority: .normal,
                    replyTo: replyTo, provider: primaryName, status: .rejected, errorMessage: reason,
                    createdAt: now,
                    events: OutboxEvents.make(event, prefix: configuration.mqtt.resultPrefix, replyTo: replyTo))
            ]
        }
    }

    /// A message the broker marks retained is the copy it stored, sent again because kurir subscribed, which
    /// it does on every (re)connect. With an `id` the repeat is dropped as a duplicate; without one it would
    /// be a new request every time, sent again after each reconnect (found in review). A live publish with
    /// the retain flag reaches a subscribed kurir unmarked and is handled as usual.
    private func ignoringRetainedReplay(_ message: MQTTMessage) -> [NewDelivery] {
        logger.notice(
            "retained request without an id ignored: the broker sends it again on every reconnect; publish requests without retain, or give them an id",
            metadata: ["route": "\(validator.route(forTopic: message.topic))"])
        return []
    }

    private func accepted(_ request: NotificationRequest, at now: Timestamp) -> [NewDelivery] {
        let requestID = request.id ?? Identifiers.make()
        return request.targets.map { target in
            var events: [OutboxEvent] = []
            if !configuration.enabled {
                let event = Event.skipped(
                    eventID: Identifiers.make(), requestID: requestID, route: request.route, at: now,
                    target: target.value)
                events = OutboxEvents.make(event, prefix: configuration.mqtt.resultPrefix, replyTo: request.replyTo)
            }
            return NewDelivery(
                requestID: requestID, route: request.route, target: target.value, message: request.message,
                priority: request.priority, replyTo: request.replyTo, provider: primaryName,
                status: configuration.enabled ? .pending : .disabled, errorMessage: nil,
                createdAt: now, events: events)
        }
    }

    /// A `reply_to` worth answering on even when the request itself was invalid.
    private func replyTopic(_ value: JSONValue) -> String? {
        guard case .string(let topic) = value, !topic.isEmpty, topic.utf8.count <= 1024,
            !topic.contains("+"), !topic.contains("#"), !topic.unicodeScalars.contains(where: { $0.value < 0x20 }),
            TopicFilter.isValidTopicName(topic), !TopicFilter.matches(configuration.mqtt.topic, topic: topic)
        else { return nil }
        return topic
    }

    private var primaryName: String {
        (configuration.chain.first ?? configuration.gateways.first)?.provider.rawValue ?? Provider.fonnte.rawValue
    }
}

/// Outbox rows for one event: its result topic, and `reply_to` too when the event is final.
enum OutboxEvents {
    static func make(_ event: Event, prefix: String, replyTo: String?) -> [OutboxEvent] {
        let payload = JSONCodec.encode(event.json)
        var rows = [OutboxEvent(eventID: event.eventID, topic: event.topic(prefix: prefix), payload: payload)]
        if let replyTo {
            rows.append(OutboxEvent(eventID: event.eventID, topic: replyTo, payload: payload))
        }
        return rows
    }
}

/// Ends the process at once with one line on standard error, without acknowledging anything more.
enum FatalExit {
    static func now(_ line: String) -> Never {
        FileHandle.standardError.write(Data("kurir: \(line)\n".utf8))
        _exit(1)
    }
}
