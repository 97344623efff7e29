import KurirCore
import KurirStore
import Logging
import ServiceLifecycle
import Synchronization

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
    /// False while the last claim took every due row (`DueClaim.tookEveryDueRow`): a round's end then frees
    /// nothing a claim could take and does not wake the loop, which at low load ran a claim transaction
    /// for nothing after every request (docs/performance.md, change 38).
    private let roundEndsWakeLoop = Atomic<Bool>(true)

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
        // Targets with a round in flight: their next row waits, so each target's deliveries go out in
        // the order they were received (within a priority) while different targets run in parallel.
        let busyTargets = BusyTargets()
        // Under a backlog every finished round would otherwise trigger a claim transaction of its own;
        // waiting for a few free slots costs at most claimBatch - 1 slots of concurrency.
        let claimBatch = max(1, min(8, maxInFlight / 16))
        // The loop and the rounds run on the curl thread: a round resumes there with its answer, and what it
        // posts next is picked up by the same thread, without a hand-off to Swift's executor threads
        // (docs/performance.md, change 23).
        await withTaskExecutorPreference(caller.http.executor) {
            await self.claimLoop(inFlight: inFlight, busyTargets: busyTargets, claimBatch: claimBatch)
        }
    }

    private func claimLoop(inFlight: InFlightCounter, busyTargets: BusyTargets, claimBatch: Int) async {
        // The last claim took every due row: new rows arrive one at a time and go out at once.
        var drained = true
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                while !Task.isShuttingDownGracefully && !Task.isCancelled {
                    // Set before `free` is read: a round ending from here on wakes the loop, unless this
                    // pass's claim turns out to have taken every due row.
                    roundEndsWakeLoop.store(true, ordering: .sequentiallyConsistent)
                    let free = maxInFlight - inFlight.value
                    var claimed: [DeliveryRecord] = []
                    var nextRetry = NextRetry.unknown
                    if free > 0 && (drained || free >= claimBatch) {
                        do {
                            let claim = try await store.claimDueGrouped(
                                now: clock.now(), limit: free, busyTargets: busyTargets.snapshot(),
                                firstAttempt: configuration.chain.first?.provider)
                            claimed = claim.records
                            if claimed.count < free { nextRetry = .known(claim.nextRetry) }
                            if claim.tookEveryDueRow { roundEndsWakeLoop.store(false, ordering: .sequentiallyConsistent) }
                        } catch {
                            FatalExit.now("store failed while claiming deliveries: \(error)")
                        }
                        drained = claimed.count < free
                    }
                    for record in claimed {
                        inFlight.add(1)
                        busyTargets.insert(record.target)
                        group.addTask {
                            await self.deliver(record) {
                                busyTargets.remove(record.target)
                                inFlight.add(-1)
                                if self.roundEndsWakeLoop.load(ordering: .sequentiallyConsistent) { self.wakeup.signal() }
                            }
                        }
                    }
                    if claimed.count == free && free > 0 { continue }
                    await wakeup.wait(
                        upTo: drained
                            ? await sleepDuration(claimedNothing: claimed.isEmpty, nextRetry) : .milliseconds(100))
                }
            }
        } onGracefulShutdown: {
            self.wakeup.signal()
        }
    }

    /// Until the next retry is due, but at most `idlePoll`, so rows written by other paths are seen.
    ///
    /// Rows due at once need no timer: intake and finishing rounds signal `wakeup`. (Asking for the
    /// earliest due time of every waiting row scanned the whole backlog on each pass.)
    private func sleepDuration(claimedNothing: Bool, _ nextRetry: NextRetry) async -> Duration {
        let next: Timestamp?
        switch nextRetry {
        case .known(let time): next = time
        case .unknown: next = try? await store.nextRetryTimeGrouped()
        }
        return Self.idleWait(nextRetry: next, now: clock.now(), claimedNothing: claimedNothing, idlePoll: idlePoll)
    }

    /// The earliest waiting retry, when this pass's claim read it (a pass with no free slot claims nothing).
    private enum NextRetry {
        case unknown
        case known(Timestamp?)
    }

    /// How long the loop waits for a signal when it claimed all it could.
    ///
    /// A retry that is already due but was not claimed belongs to a target with a round in flight (or
    /// every slot is busy): the end of that round signals `wakeup`. Found in review: the loop used to look
    /// again after 1 ms, a claim transaction every millisecond for as long as that round ran (a whole
    /// gateway timeout or more during an outage).
    static func idleWait(nextRetry: Timestamp?, now: Timestamp, claimedNothing: Bool, idlePoll: Duration) -> Duration {
        guard let nextRetry else { return idlePoll }
        let wait = nextRetry.milliseconds(since: now)
        guard wait > 0 else { return claimedNothing ? min(.milliseconds(100), idlePoll) : .milliseconds(1) }
        return min(.milliseconds(wait), idlePoll)
    }

    /// One round through the chain for one delivery, recorded attempt by attempt. `ended` runs once the
    /// round's end is committed, on the group committer's thread; the task itself may be gone by then.
    func deliver(_ record: DeliveryRecord, ended: @escaping @Sendable () -> Void) async {
        do {
            try await runRound(record, ended: ended)
        } catch {
            FatalExit.now("store failed during a delivery: \(error)")
        }
    }

    private func runRound(_ record: DeliveryRecord, ended: @escaping @Sendable () -> Void) async throws {
        // Found by `make chaos` (kill -9): a gateway accepted the message but the process died before
        // the round was recorded as finished. Finish it now rather than send the message again.
        if record.attempts > 0, let result = try await alreadyAccepted(record) {
            logger.notice(
                "delivery \(record.id) was accepted by \(result.provider.rawValue) before the last stop; not sent again")
            try await finish(record, result, completing: nil, ended: ended)
            return
        }
        let target = Target(value: record.target, isGroup: record.target.hasSuffix("@g.us"))
        var round = FailoverRound(
            chain: configuration.chain, target: target, message: record.message, referenceID: record.requestID)
        var recorded = 0
        var pendingCompletion: CompletedAttempt?
        // Inserted by the claim for the chain's first gateway, which the round always tries (or skips) first.
        var premadeAttempt = record.pendingAttempt
        while true {
            let step = round.next()
            // Gateways skipped inside `next()` (message too long) left refused attempts to record.
            while recorded < round.attempts.count {
                if let completion = pendingCompletion {
                    try await completeAttempt(completion, of: record)
                    pendingCompletion = nil
                }
                try await recordSkipped(
                    round.attempts[recorded], of: record, round: &round, attemptID: premadeAttempt?.id)
                premadeAttempt = nil
                recorded += 1
            }
            switch step {
            case .send(let index, let request):
                let provider = configuration.chain[index].provider
                if let completion = pendingCompletion {
                    // Queued ahead of the next attempt's row, in the same or an earlier transaction.
                    try await completeAttempt(completion, of: record)
                    pendingCompletion = nil
                }
                // Group-committed with the other rounds' writes, and committed before the request goes out.
                let attempt: PendingAttempt
                if let premadeAttempt {
                    attempt = premadeAttempt
                } else {
                    let now = clock.now()
                    attempt = PendingAttempt(
                        id: try await store.beginAttemptGrouped(notificationID: record.id, provider: provider, at: now),
                        attemptedAt: now)
                }
                premadeAttempt = nil
                CrashPoints.reach(.beforeHTTP)
                let (reply, latency) = await caller.call(request)
                CrashPoints.reach(.afterHTTP)
                let result = round.record(reply, latencyMs: latency)
                // Written with the next step: alone before a failover, or in one write with the round's end.
                pendingCompletion = CompletedAttempt(
                    attemptID: attempt.id, result: result, events: failoverEvents(&round, record),
                    startedAt: attempt.attemptedAt)
                log(round.drainLogLines())
                recorded += 1
            case .finished(let result):
                log(round.drainLogLines())
                try await finish(record, result, completing: pendingCompletion, ended: ended)
                return
            }
        }
    }

    /// The round result of a delivery whose accepted attempt is recorded but whose round never finished.
    private func alreadyAccepted(_ record: DeliveryRecord) async throws -> RoundResult? {
        let rows = try await store.attemptsGrouped(notificationID: record.id)
        guard let index = rows.lastIndex(where: { $0.outcome == AttemptOutcome.accepted.rawValue }),
            let provider = Provider(rawValue: rows[index].provider)
        else { return nil }
        // The round began at the last attempt on the chain's first gateway before the accepted one.
        let first = configuration.chain.first?.provider.rawValue
        let start = rows[...index].lastIndex(where: { $0.provider == first }) ?? index
        let attempts = rows[start...index].compactMap { row -> AttemptResult? in
            guard let provider = Provider(rawValue: row.provider),
                let outcome = AttemptOutcome(rawValue: row.outcome ?? "")
            else { return nil }
            return AttemptResult(
                provider: provider, outcome: outcome, error: row.error, httpStatus: row.httpStatus,
                latencyMs: row.latencyMs ?? 0)
        }
        return RoundResult(
            delivered: true, provider: provider, failover: provider.rawValue != first, attempts: attempts,
            errorMessage: nil)
    }

    /// Records an attempt that never went on the wire (a gateway skipped before sending).
    private func recordSkipped(
        _ attempt: AttemptResult, of record: DeliveryRecord, round: inout FailoverRound, attemptID premade: Int64?
    ) async throws {
        let attemptID: Int64
        if let premade {
            attemptID = premade
        } else {
            attemptID = try await store.beginAttemptGrouped(
                notificationID: record.id, provider: attempt.provider, at: clock.now())
        }
        try await completeAttempt(
            CompletedAttempt(attemptID: attemptID, result: attempt, events: failoverEvents(&round, record)),
            of: record)
        log(round.drainLogLines())
    }

    /// Records a finished attempt of a round still going on; its `failover` events go out once committed,
    /// not with the round's end (the next gateway may take seconds).
    private func completeAttempt(_ completion: CompletedAttempt, of record: DeliveryRecord) async throws {
        try await store.completeAttemptGrouped(completion, of: record.id)
        if !completion.events.isEmpty { outboxWakeup.signal() }
    }

    private func failoverEvents(_ round: inout FailoverRound, _ record: DeliveryRecord) -> [OutboxEvent] {
        round.drainFailoverNotices().flatMap { notice in
            let event = Event.failover(
                eventID: Identifiers.make(), requestID: record.requestID, route: record.route, at: clock.now(),
                target: record.target, notice: notice)
            return OutboxEvents.make(event, prefix: configuration.mqtt.resultPrefix, replyTo: nil)
        }
    }

    /// Queues the round's end (status, last attempt, event) for the next group commit. Once it committed
    /// the outbox publisher is woken and `ended` runs; a failure stops kurir, as any store failure during
    /// a delivery does.
    private func finish(
        _ record: DeliveryRecord, _ result: RoundResult, completing: CompletedAttempt?,
        ended: @escaping @Sendable () -> Void
    ) async throws {
        let outboxWakeup = self.outboxWakeup
        let deliveryWakeup = self.wakeup
        func committed(schedulingRetry: Bool) -> @Sendable (StoreError?) -> Void {
            { error in
                if let error { FatalExit.now("store failed during a delivery: \(error)") }
                outboxWakeup.signal()
                ended()
                // The loop sleeps until the earliest retry it knew of; this one may come sooner.
                if schedulingRetry { deliveryWakeup.signal() }
            }
        }
        let now = clock.now()
        let prefix = configuration.mqtt.resultPrefix
        if result.delivered {
            // This round's attempts are in memory (the last one not yet written); earlier rounds'
            // are only in the database, and a first round has none.
            let earlierUnknown =
                record.attempts > 0 ? try await store.hasUnknownAttemptGrouped(notificationID: record.id) : false
            let event = Event.delivered(
                eventID: Identifiers.make(), requestID: record.requestID, route: record.route, at: now,
                target: record.target, provider: result.provider, failover: result.failover,
                attempts: result.attempts, latencyMs: now.milliseconds(since: record.createdAt),
                possibleDuplicate: earlierUnknown || result.attempts.contains { $0.outcome == .unknown })
            store.finishRoundLater(
                FinishedRound(
                    notificationID: record.id, status: .sent, provider: result.provider.rawValue,
                    failover: result.failover, errorMessage: nil, sentAt: now, nextAttemptAt: nil,
                    retries: record.retries, at: now,
                    events: OutboxEvents.make(event, prefix: prefix, replyTo: record.replyTo)),
                completing: completing, then: committed(schedulingRetry: false))
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
        if let retryAt {
            logger.info(
                "retry \(record.retries + 1) of \(configuration.retry.maxRetries) for \(record.target) at \(retryAt.rfc3339)")
        }
        store.finishRoundLater(
            FinishedRound(
                notificationID: record.id, status: retryAt == nil ? .failed : .retrying,
                provider: result.provider.rawValue, failover: false, errorMessage: result.errorMessage, sentAt: nil,
                nextAttemptAt: retryAt, retries: retryAt == nil ? record.retries : record.retries + 1, at: now,
                events: OutboxEvents.make(event, prefix: prefix, replyTo: retryAt == nil ? record.replyTo : nil)),
            completing: completing, then: committed(schedulingRetry: retryAt != nil))
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

/// Targets with a round in flight, shared by the claiming loop and the rounds.
final class BusyTargets: Sendable {
    private let targets = Mutex(Set<String>())
    func snapshot() -> Set<String> { targets.withLock { $0 } }
    func insert(_ target: String) { _ = targets.withLock { $0.insert(target) } }
    func remove(_ target: String) { _ = targets.withLock { $0.remove(target) } }
}
