import Synchronization
import KurirCore
import KurirStore
import Logging
import ServiceLifecycle

/// Claims due deliveries from SQLite and runs each through the gateway chain, up to `maxInFlight` at once.
///
/// The queue of waiting deliveries lives in the database, not in memory. On graceful shutdown it stops
/// claiming and lets the rounds in flight finish (each is bounded by the gateway timeouts).
final class DeliveryService: Service {
    private let configuration: KurirConfiguration
    private let store: Store
    private let caller: GatewayCaller
    private let clock: any WallClock
    private let logger: Logger
    private let wakeup: Wakeup
    private let outboxWakeup: Wakeup
    private let maxInFlight: Int
    private let idlePoll: Duration = .seconds(1)

    init(
        configuration: KurirConfiguration, store: Store, caller: GatewayCaller, clock: any WallClock,
        logger: Logger, wakeup: Wakeup, outboxWakeup: Wakeup, maxInFlight: Int
    ) {
        self.configuration = configuration
        self.store = store
        self.caller = caller
        self.clock = clock
        self.logger = logger
        self.wakeup = wakeup
        self.outboxWakeup = outboxWakeup
        self.maxInFlight = maxInFlight
    }

    func run() async throws {
        let recovered = try store.recoverInterrupted(now: clock.now())
        if recovered > 0 {
            logger.notice("\(recovered) gateway attempt(s) interrupted by the last stop recorded as unknown")
        }
        let inFlight = InFlightCounter()
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                while !Task.isShuttingDownGracefully && !Task.isCancelled {
                    let free = maxInFlight - inFlight.value
                    var claimed: [DeliveryRecord] = []
                    if free > 0 {
                        do {
                            claimed = try store.claimDue(now: clock.now(), limit: free)
                        } catch {
                            FatalExit.now("store failed while claiming deliveries: \(error)")
                        }
                    }
                    for record in claimed {
                        inFlight.add(1)
                        group.addTask {
                            await self.deliver(record)
                            inFlight.add(-1)
                            self.wakeup.signal()
                        }
                    }
                    if claimed.count == free && free > 0 { continue }
                    await wakeup.wait(upTo: sleepDuration())
                }
            }
        } onGracefulShutdown: {
            self.wakeup.signal()
        }
    }

    /// Until the next retry is due, but at most `idlePoll`, so rows written by other paths are seen.
    private func sleepDuration() -> Duration {
        guard let next = try? store.nextDueTime() else { return idlePoll }
        let wait = next.milliseconds(since: clock.now())
        return wait <= 0 ? .milliseconds(1) : min(.milliseconds(wait), idlePoll)
    }

    /// One round through the chain for one delivery, recorded attempt by attempt.
    func deliver(_ record: DeliveryRecord) async {
        do {
            try await runRound(record)
        } catch {
            FatalExit.now("store failed during a delivery: \(error)")
        }
        outboxWakeup.signal()
    }

    private func runRound(_ record: DeliveryRecord) async throws {
        let target = Target(value: record.target, isGroup: record.target.hasSuffix("@g.us"))
        var round = FailoverRound(
            chain: configuration.chain, target: target, message: record.message, referenceID: record.requestID)
        var recorded = 0
        while true {
            let step = round.next()
            // Gateways skipped inside `next()` (message too long) left refused attempts to record.
            while recorded < round.attempts.count {
                try recordSkipped(round.attempts[recorded], of: record, round: &round)
                recorded += 1
            }
            switch step {
            case .send(let index, let request):
                let provider = configuration.chain[index].provider
                let attemptID = try store.beginAttempt(notificationID: record.id, provider: provider, at: clock.now())
                let (reply, latency) = await caller.call(request)
                let result = round.record(reply, latencyMs: latency)
                try store.completeAttempt(
                    attemptID: attemptID, notificationID: record.id, result: result,
                    events: failoverEvents(&round, record))
                log(round.drainLogLines())
                recorded += 1
            case .finished(let result):
                log(round.drainLogLines())
                try finish(record, result)
                return
            }
        }
    }

    /// Records an attempt that never went on the wire (a gateway skipped before sending).
    private func recordSkipped(_ attempt: AttemptResult, of record: DeliveryRecord, round: inout FailoverRound) throws {
        let attemptID = try store.beginAttempt(notificationID: record.id, provider: attempt.provider, at: clock.now())
        try store.completeAttempt(
            attemptID: attemptID, notificationID: record.id, result: attempt, events: failoverEvents(&round, record))
        log(round.drainLogLines())
    }

    private func failoverEvents(_ round: inout FailoverRound, _ record: DeliveryRecord) -> [OutboxEvent] {
        round.drainFailoverNotices().flatMap { notice in
            let event = Event.failover(
                eventID: Identifiers.make(), requestID: record.requestID, route: record.route, at: clock.now(),
                target: record.target, notice: notice)
            return OutboxEvents.make(event, prefix: configuration.mqtt.resultPrefix, replyTo: nil)
        }
    }

    private func finish(_ record: DeliveryRecord, _ result: RoundResult) throws {
        let now = clock.now()
        let prefix = configuration.mqtt.resultPrefix
        if result.delivered {
            let event = Event.delivered(
                eventID: Identifiers.make(), requestID: record.requestID, route: record.route, at: now,
                target: record.target, provider: result.provider, failover: result.failover,
                attempts: result.attempts, latencyMs: now.milliseconds(since: record.createdAt),
                possibleDuplicate: try store.hasUnknownAttempt(notificationID: record.id))
            try store.finishRound(
                notificationID: record.id, status: .sent, provider: result.provider.rawValue,
                failover: result.failover, errorMessage: nil, sentAt: now, nextAttemptAt: nil,
                retries: record.retries, at: now,
                events: OutboxEvents.make(event, prefix: prefix, replyTo: record.replyTo))
            return
        }
        let retriesLeft = configuration.retry.maxRetries - record.retries
        let retryAt: Timestamp? =
            retriesLeft > 0
            ? now.adding(configuration.retry.delay(beforeRetry: record.retries + 1, jitter: Double.random(in: -1...1)))
            : nil
        let event = Event.failed(
            eventID: Identifiers.make(), requestID: record.requestID, route: record.route, at: now,
            target: record.target, attempts: result.attempts, retryAt: retryAt, retriesLeft: retriesLeft)
        try store.finishRound(
            notificationID: record.id, status: retryAt == nil ? .failed : .retrying,
            provider: result.provider.rawValue, failover: false, errorMessage: result.errorMessage, sentAt: nil,
            nextAttemptAt: retryAt, retries: retryAt == nil ? record.retries : record.retries + 1, at: now,
            events: OutboxEvents.make(event, prefix: prefix, replyTo: retryAt == nil ? record.replyTo : nil))
        if let retryAt {
            logger.info(
                "retry \(record.retries + 1) of \(configuration.retry.maxRetries) for \(record.target) at \(retryAt.rfc3339)")
        }
    }

    private func log(_ lines: [String]) {
        for line in lines { logger.info("\(line)") }
    }
}

/// How many rounds are running; read by the claiming loop, changed by the rounds.
final class InFlightCounter: Sendable {
    private let count = Mutex(0)
    var value: Int { count.withLock { $0 } }
    func add(_ delta: Int) { count.withLock { $0 += delta } }
}
