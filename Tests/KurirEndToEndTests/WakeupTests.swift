import Testing

@testable import KurirDaemon

/// The wake-up between the delivery loop or the outbox publisher and the threads that signal them.
///
/// A wait that must end early may wait 90 s: should it end only by its timeout, the one-minute limit
/// fails the test (and the wait still ends, even with cancellation broken).
@Suite(.timeLimit(.minutes(1)))
struct WakeupTests {
    private let long: Duration = .seconds(90)

    @Test func aSignalBeforeTheWaitEndsItAtOnce() async {
        let wakeup = Wakeup()
        wakeup.signal()
        await wakeup.wait(upTo: long)
    }

    @Test func aSignalDuringTheWaitEndsIt() async {
        let wakeup = Wakeup()
        async let waited: Void = wakeup.wait(upTo: long)
        wakeup.signal()
        await waited
    }

    @Test func aSignalEndsTheNextWaitAgain() async {
        let wakeup = Wakeup()
        for _ in 0..<5 { wakeup.signal() }
        await wakeup.wait(upTo: long)
        await wakeup.wait(upTo: .milliseconds(20))
        async let waited: Void = wakeup.wait(upTo: long)
        wakeup.signal()
        await waited
    }

    @Test func aWaitWithoutSignalEndsAtItsTimeout() async {
        let wakeup = Wakeup()
        await wakeup.wait(upTo: .milliseconds(20))
        await wakeup.wait(upTo: .zero)
    }

    @Test func aWaitInACancelledTaskEndsAtOnce() async {
        let wakeup = Wakeup()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await wakeup.wait(upTo: long) }
            group.cancelAll()
            await group.waitForAll()
        }
    }

    @Test func cancellingAWaitInProgressEndsIt() async {
        let wakeup = Wakeup()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await wakeup.wait(upTo: long) }
            while !wakeup.hasWaiter { await Task.yield() }
            group.cancelAll()
            await group.waitForAll()
        }
    }
}
