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
    private struct State {
        var connected = false
        /// Highest outbox id handed to libmosquitto on this connection.
        var cursor: Int64 = 0
        /// Message id → outbox row, for publishes not yet acknowledged.
        var inFlight: [Int32: Int64] = [:]
        /// Acknowledgements that arrived before `publish` returned their message id.
        var ackedEarly: Set<Int32> = []
    }

    private let store: Store
    private let mqtt: MQTTClient
    private let qos: Int
    private let logger: Logger
    private let wakeup: Wakeup
    private let state = Mutex(State())
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
        state.withLock { state in
            state = State()
            state.connected = true
        }
        wakeup.signal()
    }

    /// The connection is down: stop publishing until it is back.
    func disconnected() {
        state.withLock { $0.connected = false }
    }

    /// The broker acknowledged message `mid`.
    func acknowledged(_ mid: Int32) {
        let row = state.withLock { state -> Int64? in
            if let row = state.inFlight.removeValue(forKey: mid) { return row }
            state.ackedEarly.insert(mid)
            return nil
        }
        guard let row else { return }
        CrashPoints.reach(.afterPublish)
        delete(row)
        wakeup.signal()
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
            let (connected, cursor, room) = state.withLock { ($0.connected, $0.cursor, maxInFlight - $0.inFlight.count) }
            guard connected, room > 0 else { return }
            let rows: [(id: Int64, event: OutboxEvent)]
            do {
                rows = try await store.outboxGrouped(after: cursor, limit: min(batchSize, room))
            } catch {
                logger.error("outbox read failed: \(error)")
                return
            }
            if rows.isEmpty { return }
            for row in rows {
                guard publish(row) else { return }
            }
        }
    }

    private func publish(_ row: (id: Int64, event: OutboxEvent)) -> Bool {
        do {
            let mid = try mqtt.publish(topic: row.event.topic, payload: row.event.payload, qos: qos)
            let ackedAlready = state.withLock { state -> Bool in
                state.cursor = max(state.cursor, row.id)
                if state.ackedEarly.remove(mid) != nil { return true }
                state.inFlight[mid] = row.id
                return false
            }
            // QoS 0 too: libmosquitto reports a QoS 0 publish through the same callback once written.
            if ackedAlready { delete(row.id) }
            return true
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
