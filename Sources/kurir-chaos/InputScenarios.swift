import Foundation
import KurirCore
import KurirTestSupport

/// Generates hostile payloads, each labelled by construction as valid (with the numbers it names) or invalid.
struct HostileGenerator {
    var rng = SystemRandomNumberGenerator()
    var next = 0

    mutating func make(_ index: Int) -> ChaosRequest {
        let id = "hx-\(index)"
        let topic = "notify/whatsapp/chaos/hostile"
        let a = ChaosRequest.number(index * 3)
        let b = ChaosRequest.number(index * 3 + 1)
        func valid(_ json: String, _ targets: [String]) -> ChaosRequest {
            ChaosRequest(index: index, id: id, topic: topic, payload: Array(json.utf8), targets: targets, valid: true)
        }
        func invalid(_ bytes: [UInt8]) -> ChaosRequest {
            ChaosRequest(index: index, id: id, topic: topic, payload: bytes, targets: [], valid: false)
        }
        func invalid(_ json: String) -> ChaosRequest { invalid(Array(json.utf8)) }
        switch index % 24 {
        // Valid, in many shapes.
        case 0: return valid(#"{"id":"\#(id)","target":"\#(a)","message":"plain"}"#, [a])
        case 1: return valid(#"{"id":"\#(id)","target":"\#(a), \#(b)","message":"comma list"}"#, [a, b])
        case 2:
            return valid(#"{"id":"\#(id)","target":["\#(a)","\#(b)"],"message":"array","extra":{"x":[1,2,3]},"z":null}"#, [a, b])
        case 3:
            let local = "0" + a.dropFirst(2)
            return valid(
                #"{"id":"\#(id)","target":"(\#(local.prefix(4))) \#(local.dropFirst(4))","message":"local format"}"#, [a])
        case 4: return valid(#"{"id":"\#(id)","target":"+\#(a)","message":"\#(String(repeating: "é", count: 4096))"}"#, [a])
        case 5: return valid(#"{"id":"\#(id)","target":"\#(a)","message":"template {{name}} \#(b)|Budi, \#(b) %0A\n text"}"#, [a])
        case 6:
            // Exactly 64 KiB, padded with an extra field.
            let head = #"{"id":"\#(id)","target":"\#(a)","message":"full size","pad":""#
            let pad = String(repeating: "p", count: 65_536 - head.utf8.count - 2)
            return valid(head + pad + #""}"#, [a])
        // Invalid: not JSON or not an object.
        case 7: return invalid((0..<Int.random(in: 1...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
        // {"target":"\xff\xfe"}
        case 8: return invalid([0x7b, 0x22, 0x74, 0x61, 0x72, 0x67, 0x65, 0x74, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d])
        case 9: return invalid(String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000))
        case 10: return invalid(#"{"id":"\#(id)","target":"\#(a)","target":"\#(b)","message":"dup keys"}"#)
        case 11: return invalid(#"{"id":"\#(id)","target":1e999,"message":"huge number"}"#)
        case 12: return invalid(#"{"id":"\#(id)","target":\#(a),"message":"number target"}"#)
        case 13: return invalid(#"{"id":"\#(id)","target":"\#(a)","message":"nul \u0000 inside"}"#)
        case 14: return invalid(#"{"id":"\#(id)","target":"\#(a)","message":"bell \u0007 esc \u001b[31m"}"#)
        case 15:
            let head = #"{"id":"\#(id)","target":"\#(a)","message":"too big","pad":""#
            let pad = String(repeating: "p", count: 65_537 - head.utf8.count - 2)
            return invalid(head + pad + #""}"#)
        case 16: return invalid(#"{"id":"\#(id)","target":"\#(a)","message":"\#(String(repeating: "x", count: 4097))"}"#)
        case 17: return invalid(#"{"id":"\#(id)","target":"\#(a),\#(b)x","message":"comma list hiding a bad number"}"#)
        case 18: return invalid(#"{"id":"\#(id)","target":"\#(a);\#(b)","message":"semicolon list"}"#)
        case 19: return invalid(#"{"id":"\#(id)","target":"\#(a)|Budi","message":"template syntax"}"#)
        case 20: return invalid(#"{"id":"\#(id)","target":"\#(a)\n\#(b)","message":"line break list"}"#)
        case 21: return invalid(#"{"id":"\#(id)","target":"\#(a)","message":"   "}"#)
        case 22: return invalid(#"["\#(a)","not an object"]"#)
        default: return invalid(#"{"id":"\#(id)","target":"\#(a)","message":"x","priority":"urgent"} trailing"#)
        }
    }
}

extension Suite {
    /// Hostile payloads mixed with valid ones: one `rejected` each, nothing sent for them, valid ones exact.
    func hostile(_ f: inout Figures) async throws {
        let world = try await world("hostile")
        var generator = HostileGenerator()
        let requests = (0..<n(10_000)).map { generator.make($0) }
        try await world.startKurir()
        let acked = await world.producer.publishAll(requests, timeout: .seconds(300))
        let invalid = requests.filter { !$0.valid && acked.contains($0.index) }.count
        let validTargets = requests.filter { $0.valid && acked.contains($0.index) }.reduce(0) { $0 + $1.targets.count }
        _ = await waitAllSent(world, validTargets, timeout: .seconds(240))
        _ = await world.waitForCount(
            "SELECT COUNT(*) FROM whatsapp_notifications WHERE status = 'rejected'", atLeast: invalid, timeout: .seconds(60))
        _ = await waitUntil(timeout: .seconds(60)) {
            world.events.snapshot.byKind["rejected"]?.values.reduce(0, +) ?? 0 >= invalid
        }
        f.bar(world.kurir?.isRunning == true, "kurir crashed")
        await world.stopKurir()
        tally(world, requests, acked: acked, into: &f)
        let rejectedEvents = world.events.snapshot.byKind["rejected"]?.values.reduce(0, +) ?? 0
        let rejectedRows = world.count("SELECT COUNT(*) FROM whatsapp_notifications WHERE status = 'rejected'")
        f.rejected = rejectedEvents
        f.bar(rejectedEvents == invalid, "\(rejectedEvents) rejected events for \(invalid) invalid payloads")
        f.bar(rejectedRows == invalid, "\(rejectedRows) rejected rows for \(invalid) invalid payloads")
        let view = GatewayView(world.gateways)
        f.bar(view.acceptedTotal == validTargets, "\(view.acceptedTotal) gateway sends for \(validTargets) valid targets")
        f.notes.append("\(invalid) invalid and \(requests.count - invalid) valid payloads (\(validTargets) targets)")
    }

    /// The libFuzzer build, when present (`make fuzz`), run briefly; otherwise noted.
    func fuzzSmoke(_ f: inout Figures) async throws {
        let binary = FileManager.default.currentDirectoryPath + "/fuzz/.build/debug/kurir-fuzz"
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            f.bar(false, "no fuzzer build at fuzz/.build/debug/kurir-fuzz (make chaos builds it)")
            return
        }
        let directory = root + "/fuzz"
        try FileManager.default.createDirectory(atPath: directory + "/corpus", withIntermediateDirectories: true)
        let (status, output) = try await runTool(
            binary,
            [
                "-max_total_time=20", "-max_len=4096", "-print_final_stats=1", directory + "/corpus",
                FileManager.default.currentDirectoryPath + "/fuzz/seeds",
            ],
            in: directory, timeout: .seconds(60))
        let runs = output.split(separator: "\n").first { $0.contains("stat::number_of_executed_units") }
        f.requests = Int(runs?.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "") ?? 0
        f.bar(status == 0, "the fuzzer stopped with status \(status): \(output.suffix(400))")
        f.notes.append("20 s libFuzzer smoke run: \(f.requests) inputs, status \(status)")
    }
}
