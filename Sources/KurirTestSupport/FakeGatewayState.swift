import Foundation
import KurirCore
import NIOConcurrencyHelpers

/// Behaviours, counters and recorded requests of one fake gateway, shared by its connections.
final class FakeGatewayState: Sendable {
    private struct PerProvider {
        var behaviour: FakeBehaviour
        /// Requests seen since the behaviour was set: drives the deterministic failure fraction.
        var seenSinceSet = 0
        var stats = FakeGatewayStats()
    }

    private struct Data {
        var initial: [Provider: FakeBehaviour]
        var providers: [Provider: PerProvider]
        var records: [RecordedRequest] = []
        var sequence = 0
    }

    private let data: NIOLockedValueBox<Data>

    init(initial: [Provider: FakeBehaviour]) {
        var providers: [Provider: PerProvider] = [:]
        for p in Provider.allCases { providers[p] = PerProvider(behaviour: initial[p] ?? FakeBehaviour()) }
        data = NIOLockedValueBox(Data(initial: initial, providers: providers))
    }

    func behaviour(for provider: Provider) -> FakeBehaviour {
        data.withLockedValue { $0.providers[provider]!.behaviour }
    }

    func initialBehaviour(for provider: Provider) -> FakeBehaviour {
        data.withLockedValue { $0.initial[provider] ?? FakeBehaviour() }
    }

    func setBehaviour(_ behaviour: FakeBehaviour, for provider: Provider) {
        data.withLockedValue {
            $0.providers[provider]!.behaviour = behaviour
            $0.providers[provider]!.seenSinceSet = 0
        }
    }

    /// Back to the behaviours given at start, no records, zero counters.
    func reset() {
        data.withLockedValue {
            for p in Provider.allCases {
                $0.providers[p] = PerProvider(behaviour: $0.initial[p] ?? FakeBehaviour())
            }
            $0.records = []
        }
    }

    /// The behaviour in force and the mode this request gets (outage and failure fraction applied).
    func decide(_ provider: Provider, nowMs: Int64) -> (FakeBehaviour, FakeBehaviour.Mode) {
        data.withLockedValue {
            let b = $0.providers[provider]!.behaviour
            let n = $0.providers[provider]!.seenSinceSet
            $0.providers[provider]!.seenSinceSet += 1
            if b.outageStartMs != nil || b.outageEndMs != nil {
                let start = b.outageStartMs ?? Int64.min
                let end = b.outageEndMs ?? Int64.max
                if nowMs >= start && nowMs < end { return (b, b.failureMode) }
            }
            if b.failureFraction > 0 {
                // Integer parts-per-million so that n × fraction has no rounding drift:
                // after n requests exactly floor(n × fraction) have failed.
                let ppm = Int((min(b.failureFraction, 1) * 1_000_000).rounded())
                if (n + 1) * ppm / 1_000_000 > n * ppm / 1_000_000 { return (b, b.failureMode) }
            }
            return (b, b.mode)
        }
    }

    /// Reserves `count` consecutive sequence numbers (at least one) and returns the first.
    func nextSequence(_ count: Int) -> Int {
        data.withLockedValue {
            let first = $0.sequence
            $0.sequence += max(1, count)
            return first
        }
    }

    func record(_ request: RecordedRequest, refused: Bool) {
        data.withLockedValue {
            $0.records.append(request)
            $0.providers[request.provider]!.stats.received += 1
            if request.accepted { $0.providers[request.provider]!.stats.accepted += 1 }
            if refused { $0.providers[request.provider]!.stats.refused += 1 }
        }
    }

    func records(_ provider: Provider?) -> [RecordedRequest] {
        data.withLockedValue { d in
            guard let provider else { return d.records }
            return d.records.filter { $0.provider == provider }
        }
    }

    func stats() -> [Provider: FakeGatewayStats] {
        data.withLockedValue { $0.providers.mapValues(\.stats) }
    }
}
