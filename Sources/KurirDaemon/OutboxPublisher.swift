import KurirCore
import KurirMQTT
import KurirStore
import Logging
import ServiceLifecycle
import Synchronization

/// Publishes the event outbox and deletes each row only once the broker acknowledged it.
///
/// libmosquitto keeps outgoing QoS 1 messages only in memory, so the outbox row is the durable copy:
/// after a crash or a reconnect every remaining row is published again with its same `event_id`.
final class OutboxPublisher: Service {
    private let store: Store
    private let mqtt: MQTTClient
    private let qos: Int
    private let logger: Logger
    private let wakeup: Wakeup
    private let state = Mutex(OutboxFlight())
    private let batchSize = 256
    /// Matches libmosquitto's in-flight window (MQTTClient): acknowledgements can lag a second behind
    /// a burst of incoming requests on the same connection, and the window must cover that second.
    private let maxInFlight = 4096
    private let drainDeadline: Duration = .seconds(5)

    init(store: Store, mqtt: MQTTClient, qos: Int, logger: Logger, wakeup: Wakeup) {
        self.store = store
        self.mqtt = mqtt
        self.qos = qos
        self.logger = logger
        self.wakeup = wakeup
    }

    /// The connection is up: start again from the oldest row (duplicates carry the same event_id).
    func connected() {
        state.withLock { $0.connectionUp() }
        wakeup.signal()
    }

    /// The connection is down: stop publishing until it is back.
    func disconnected() {
        state.withLock { $0.connectionDown() }
    }

    /// The broker acknowledged message `mid`.
    ///
    /// Wakes the publishing loop only when this acknowledgement opens a full window: otherwise the loop
    /// already published everything it read, and new rows wake it themselves.
    func acknowledged(_ mid: Int32) {
        let maxInFlight = maxInFlight
        guard
            let (row, windowWasFull) = state.withLock({ flight -> (Int64, Bool)? in
                let wasFull = flight.inFlightCount >= maxInFlight
                return flight.acknowledged(mid).map { ($0, wasFull) }
            })
        else { return }
        CrashPoints.reach(.afterPublish)
        delete(row)
        if windowWasFull { wakeup.signal() }
    }

    func run() async throws {
        await withGracefulShutdownHandler {
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                await publishBatch()
                await wakeup.wait(upTo: .seconds(1))
            }
        } onGracefulShutdown: {
            self.wakeup.signal()
        }
        await drain()
    }

    /// On shutdown: publish what is left and wait a little for the acknowledgements; the rest stays for next start.
    private func drain() async {
        let deadline = ContinuousClock.now.advanced(by: drainDeadline)
        while ContinuousClock.now < deadline {
            await publishBatch()
            let remaining = (try? store.outboxCount()) ?? 0
            if remaining == 0 { return }
            await wakeup.wait(upTo: .milliseconds(50))
        }
        let remaining = (try? store.outboxCount()) ?? 0
        if remaining > 0 { logger.notice("\(remaining) event(s) left in the outbox, published at next start") }
    }

    private func publishBatch() async {
        while true {
            let (connection, cursor, room) = state.withLock {
                ($0.connection, $0.cursor, maxInFlight - $0.inFlightCount)
            }
            guard let connection, room > 0 else { return }
            let limit = min(batchSize, room)
            let rows: [(id: Int64, event: OutboxEvent)]
            do {
                rows = try await store.outboxGrouped(after: cursor, limit: limit)
            } catch {
                logger.error("outbox read failed: \(error)")
                return
            }
            let published = publish(rows, on: connection)
            // One wake-up of the events connection's network thread for the page, which then writes it
            // in one go: with libmosquitto's loop, woken for each publish, that thread spent about a
            // fifth more CPU per event (docs/performance.md, change 41).
            if published > 0 { mqtt.flush() }
            // A short page was everything committed at the time of the read; whatever commits later
            // signals `wakeup`. Reading again at once found nothing, one read in three at low load.
            if published < rows.count || rows.count < limit { return }
        }
    }

    /// Publishes `rows` in order on `connection` until one cannot go; returns how many went.
    private func publish(_ rows: [(id: Int64, event: OutboxEvent)], on connection: Int) -> Int {
        var published = 0
        for row in rows {
            guard publish(row, on: connection) else { break }
            published += 1
        }
        return published
    }

    /// Publishes one row on `connection`; false when the batch should stop (not connected, or a reconnect
    /// since the batch was read, which starts again from the oldest row).
    ///
    /// The lock is held across `mqtt.publish`, so the message id is registered before its PUBACK (or, at
    /// QoS 0, its written-out callback) can be handled: `acknowledged` waits for the lock. No deadlock:
    /// libmosquitto's network thread calls `acknowledged` and `disconnected` holding its callback mutex
    /// (and, for QoS 0 and disconnects, its current-packet mutex), and `mosquitto_publish` on a threaded
    /// client takes neither: it only queues the packet under the message and packet-queue mutexes.
    private func publish(_ row: (id: Int64, event: OutboxEvent), on connection: Int) -> Bool {
        let outcome = state.withLock { flight -> Result<Bool, MQTTError> in
            guard flight.connection == connection else { return .success(false) }
            do throws(MQTTError) {
                let mid = try mqtt.publish(topic: row.event.topic, payload: row.event.payload, qos: qos)
                flight.published(mid, row: row.id)
                return .success(true)
            } catch {
                return .failure(error)
            }
        }
        do {
            return try outcome.get()
        } catch {
            logger.debug("event publish deferred: \(error)")
            return false
        }
    }

    private func delete(_ row: Int64) {
        // Group-committed: a commit per PUBACK was one of the five transactions of every delivery.
        store.deleteOutboxLater(id: row)
    }
}

/// Which outbox rows are on the wire, by libmosquitto message id, for one broker connection at a time.
///
/// After a reconnect libmosquitto sends its unacknowledged publishes again under their old message ids,
/// while the publisher publishes every remaining row again under new ones. Acknowledgements for ids this
/// connection did not hand out are ignored: remembering them (as an earlier version did, for PUBACKs that
/// beat `publish`'s return) let a later publish that drew the same id, once libmosquitto's 16-bit
/// counter wrapped, count as acknowledged before the broker had it.
struct OutboxFlight {
    /// Increases with every connection; nil while disconnected.
    private(set) var connection: Int?
    private var connections = 0
    /// Highest outbox id handed to libmosquitto on this connection.
    private(set) var cursor: Int64 = 0
    /// Message id → outbox row, for publishes not yet acknowledged.
    private var inFlight: [Int32: Int64] = [:]

    var inFlightCount: Int { inFlight.count }

    /// A new connection: everything in flight is forgotten and the outbox is published from its start.
    mutating func connectionUp() {
        connections += 1
        connection = connections
        cursor = 0
        inFlight = [:]
    }

    mutating func connectionDown() {
        connection = nil
    }

    /// `row` went to libmosquitto as message `mid`.
    mutating func published(_ mid: Int32, row: Int64) {
        cursor = max(cursor, row)
        inFlight[mid] = row
    }

    /// The outbox row message `mid` carried, if it was handed out on this connection and not yet acknowledged.
    mutating func acknowledged(_ mid: Int32) -> Int64? {
        inFlight.removeValue(forKey: mid)
    }
}
