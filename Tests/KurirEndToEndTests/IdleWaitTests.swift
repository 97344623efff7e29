import KurirCore
import Testing

@testable import KurirDaemon

/// How long the delivery loop waits for a signal once it claimed all it could.
struct IdleWaitTests {
    private let now = Timestamp(millisecondsSinceEpoch: 1_795_593_600_000)
    private let poll: Duration = .seconds(1)

    /// The wait when the next retry is due `milliseconds` from now (nil: none waiting).
    private func wait(retryIn milliseconds: Int64?, claimedNothing: Bool) -> Duration {
        let next = milliseconds.map { Timestamp(millisecondsSinceEpoch: now.millisecondsSinceEpoch + $0) }
        return DeliveryService.idleWait(nextRetry: next, now: now, claimedNothing: claimedNothing, idlePoll: poll)
    }

    @Test func withoutRetriesItWaitsTheIdlePoll() {
        #expect(wait(retryIn: nil, claimedNothing: true) == poll)
    }

    @Test func aFutureRetryIsWaitedForExactlyButAtMostTheIdlePoll() {
        #expect(wait(retryIn: 40, claimedNothing: true) == .milliseconds(40))
        #expect(wait(retryIn: 90_000, claimedNothing: false) == poll)
    }

    /// A due retry the claim passed over waits for its target's round to end (which signals the loop),
    /// not for a millisecond: that was a claim transaction per millisecond for the whole round.
    @Test func aDueRetryThatWasNotClaimedDoesNotMakeTheLoopSpin() {
        let waited = wait(retryIn: -5, claimedNothing: true)
        #expect(waited >= .milliseconds(100))
        #expect(waited <= poll)
    }

    /// After a claim that took rows, a retry already due may be claimable at once.
    @Test func aDueRetryAfterAClaimThatTookRowsIsLookedAtAgainSoon() {
        #expect(wait(retryIn: -5, claimedNothing: false) == .milliseconds(1))
    }
}
