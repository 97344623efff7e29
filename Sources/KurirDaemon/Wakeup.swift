import Dispatch
import Synchronization

/// A level-triggered wake-up signal between one waiting loop and any number of signalling threads.
///
/// Signals coalesce: many `signal()` calls before a `wait` wake it once. Safe to call `signal()` from
/// libmosquitto's or libcurl's threads; only one task may `wait` at a time.
final class Wakeup: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
        /// Counts waits, so a timeout left over from an earlier wait cannot end a later one.
        var waits: UInt64 = 0
    }

    private let state = Mutex(State())

    init() {}

    /// Wakes the waiter, or makes the next `wait` return at once.
    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.pending = true
            return nil
        }
        waiter?.resume()
    }

    /// Returns after a signal, after `timeout`, or when the task is cancelled, whichever comes first.
    ///
    /// One continuation and one libdispatch timer per wait. (It was a task group of a `Task.sleep` and a
    /// waiting child: two child tasks, their cancellation and the group's end per wait, several jobs on
    /// Swift's executors for each of the loops' waits; docs/performance.md, change 39.)
    func wait(upTo timeout: Duration) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let wait = state.withLock { state -> UInt64? in
                    if state.pending || Task.isCancelled {
                        state.pending = false
                        return nil
                    }
                    state.waits &+= 1
                    state.waiter = continuation
                    return state.waits
                }
                guard let wait else {
                    continuation.resume()
                    return
                }
                DispatchQueue.global().asyncAfter(deadline: .now() + Self.interval(timeout)) {
                    self.resumeWaiter(ifWait: wait)
                }
            }
        } onCancel: {
            resumeWaiter(ifWait: nil)
        }
    }

    /// Whether a task is waiting now (tests cancel a wait in progress once it is).
    var hasWaiter: Bool { state.withLock { $0.waiter != nil } }

    /// Resumes the waiter, if there is one and (given `wait`) it is still that wait.
    private func resumeWaiter(ifWait wait: UInt64?) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard wait == nil || wait == state.waits else { return nil }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    private static func interval(_ duration: Duration) -> DispatchTimeInterval {
        let (seconds, attoseconds) = duration.components
        let nanoseconds = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !nanoseconds.overflow, seconds >= 0 else { return seconds < 0 ? .nanoseconds(0) : .never }
        return .nanoseconds(Int(nanoseconds.partialValue + attoseconds / 1_000_000_000))
    }
}
