import Foundation
import KurirCore
import KurirTestSupport
import Testing

/// Deliveries to one target go out in the order their requests were received; different targets in parallel.
@Suite(.serialized)
struct TargetOrderTests {
    @Test("same target: in received order, one at a time; different targets: in parallel")
    func perTargetOrder() async throws {
        try await withWorld() { world in
            let latencyMs = 150
            world.setGateway(.fonnte, latencyMs: latencyMs)
            try await world.events.waitUntilSubscribed()
            // Queue every request while kurir is down, so they all arrive at once and are claimable together.
            #expect(try await world.registerSessionAndStop() == 0)
            let targets = ["6281100000001", "6281100000002", "6281100000003"]
            let perTarget = 4
            for n in 1...perTarget {
                for (t, target) in targets.enumerated() {
                    try await world.publish(
                        "order/test", #"{"id":"o-\#(t)-\#(n)","target":"\#(target)","message":"step \#(n)"}"#)
                }
            }
            try await world.startKurir()
            try await world.events.wait(for: "delivered", count: targets.count * perTarget, timeout: .seconds(30))

            let requests = world.gateways.requests(.fonnte)
            #expect(requests.count == targets.count * perTarget)
            for target in targets {
                let mine = requests.filter { $0.fields["target"] == target }
                // In received order...
                #expect(mine.map { $0.fields["message"] ?? "" } == (1...perTarget).map { "step \($0)" })
                // ...and each only after the previous one was answered.
                for (previous, next) in zip(mine, mine.dropFirst()) {
                    #expect(next.receivedAtMs - previous.receivedAtMs >= Int64(latencyMs) - 5)
                }
            }
            // The first request of every target went out together, not one target after the other.
            let firsts = targets.compactMap { target in requests.first { $0.fields["target"] == target }?.receivedAtMs }
            #expect(firsts.count == targets.count)
            #expect((firsts.max() ?? 0) - (firsts.min() ?? 0) < Int64(latencyMs))
            #expect(await world.stopKurir() == 0)
        }
    }
}
