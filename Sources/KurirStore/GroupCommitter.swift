import Dispatch
import GRDB
import Synchronization

/// Group commit: writes submitted from many concurrent rounds share one transaction instead of paying
/// a commit each. In a `synchronous=FULL` database these transactions run at NORMAL and reach the disk
/// with the next intake's fsync (`DeferredSync`), so the bookkeeping costs no fsync of its own.
///
/// Writes queue up while a transaction is running; the next transaction takes every write queued so far.
/// So at low load a write commits at once (no added latency) and under load batches grow by themselves.
/// A write's caller is resumed (or its completion runs) only after the transaction holding it committed.
/// If a batch fails, each of its writes is retried in a transaction of its own, so one bad write fails alone.
final class GroupCommitter: Sendable {
    private struct Job: Sendable {
        var operation: String
        var execute: @Sendable (Database) throws -> Void
        var complete: @Sendable (StoreError?) -> Void
    }

    private struct State {
        var jobs: [Job] = []
        var draining = false
    }

    private let queue: DatabaseQueue
    private let dispatch: DispatchQueue
    private let state = Mutex(State())
    /// FULL databases: every group transaction runs at synchronous=NORMAL (see `DeferredSync`).
    private let deferredSync: DeferredSync?

    init(queue: DatabaseQueue, label: String, deferredSync: DeferredSync?) {
        self.queue = queue
        self.dispatch = DispatchQueue(label: label)
        self.deferredSync = deferredSync
    }

    /// Runs `body` in the next group transaction and returns its result once that transaction committed.
    func run<T: Sendable>(_ operation: String, _ body: @escaping @Sendable (Database) throws -> T) async throws(StoreError)
        -> T
    {
        let result: Result<T, StoreError> = await withCheckedContinuation { continuation in
            let box = ResultBox<T>()
            enqueue(
                Job(
                    operation: operation, execute: { db in box.set(try body(db)) },
                    complete: { error in
                        if let error {
                            continuation.resume(returning: .failure(error))
                        } else if let value = box.take() {
                            continuation.resume(returning: .success(value))
                        } else {
                            continuation.resume(
                                returning: .failure(StoreError(code: .sqlite, message: "store \(operation) lost its result")))
                        }
                    }))
        }
        return try result.get()
    }

    /// Queues `body` for the next group transaction without waiting; a failure is dropped (callers use
    /// this only for writes whose loss is harmless, such as outbox deletions).
    func submit(_ operation: String, _ body: @escaping @Sendable (Database) throws -> Void) {
        submit(operation, body, then: { _ in })
    }

    /// Queues `body` for the next group transaction without waiting; `then` runs on the committer's
    /// thread once that transaction committed (nil) or the write failed (its error). It must be quick.
    func submit(
        _ operation: String, _ body: @escaping @Sendable (Database) throws -> Void,
        then complete: @escaping @Sendable (StoreError?) -> Void
    ) {
        enqueue(Job(operation: operation, execute: body, complete: complete))
    }

    /// Commits everything queued so far before returning (used when the store closes).
    func flush() {
        dispatch.sync {}
        drain()
    }

    private func enqueue(_ job: Job) {
        let start = state.withLock { state -> Bool in
            state.jobs.append(job)
            if state.draining { return false }
            state.draining = true
            return true
        }
        if start { dispatch.async { self.drainLoop() } }
    }

    private func drainLoop() {
        while true {
            let more = state.withLock { state -> Bool in
                if state.jobs.isEmpty {
                    state.draining = false
                    return false
                }
                return true
            }
            guard more else { return }
            drain()
        }
    }

    private func drain() {
        let jobs = state.withLock { state -> [Job] in
            defer { state.jobs.removeAll(keepingCapacity: true) }
            return state.jobs
        }
        guard !jobs.isEmpty else { return }
        do {
            try commit(jobs)
            for job in jobs { job.complete(nil) }
        } catch let error as DeferredSync.ConnectionLeftAtNormal {
            // The batch may have committed: running its jobs again would claim rows twice.
            for job in jobs { job.complete(Store.mapError(error, job.operation)) }
        } catch {
            // The batch rolled back as a whole: run each write alone so only the faulty one fails.
            for job in jobs {
                do {
                    try commit([job])
                    job.complete(nil)
                } catch {
                    job.complete(Store.mapError(error, job.operation))
                }
            }
        }
    }

    /// One transaction; in a FULL database at synchronous=NORMAL, its fsync left to the next intake.
    private func commit(_ jobs: [Job]) throws {
        guard let deferredSync else {
            try queue.immediateWrite { db in
                for job in jobs { try job.execute(db) }
            }
            return
        }
        try deferredSync.transaction(on: queue) { db in
            for job in jobs { try job.execute(db) }
        }
    }
}

/// Carries a write's result from the transaction to its caller.
private final class ResultBox<T: Sendable>: Sendable {
    private let value = Mutex<T?>(nil)
    func set(_ newValue: T) { value.withLock { $0 = newValue } }
    func take() -> T? { value.withLock { $0.take() } }
}
