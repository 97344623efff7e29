import Foundation
import KurirCore
import KurirTestSupport
import Testing

/// Invalid input, crashes, broker restarts, locks and configuration errors, end to end.
@Suite(.serialized)
struct RobustnessTests {
    static let invalidPayloads: [(String, [UInt8])] = [
        ("not JSON", Array("hello".utf8)),
        ("not an object", Array(#"["081234567890"]"#.utf8)),
        ("missing target", Array(#"{"message":"x"}"#.utf8)),
        ("empty target", Array(#"{"target":"","message":"x"}"#.utf8)),
        ("number target", Array(#"{"target":81234567890,"message":"x"}"#.utf8)),
        ("invalid number", Array(#"{"target":"0812","message":"x"}"#.utf8)),
        ("one bad in a list", Array(#"{"target":"081234567890,12","message":"x"}"#.utf8)),
        ("template syntax", Array(#"{"target":"081234567890|Budi","message":"x"}"#.utf8)),
        ("missing message", Array(#"{"target":"081234567890"}"#.utf8)),
        ("empty message", Array(#"{"target":"081234567890","message":"   "}"#.utf8)),
        ("message too long", Array(#"{"target":"081234567890","message":"\#(String(repeating: "a", count: 4097))"}"#.utf8)),
        ("duplicate keys", Array(#"{"target":"081234567890","target":"089999999999","message":"x"}"#.utf8)),
        ("wrong type for group", Array(#"{"target":"081234567890","message":"x","group":"yes"}"#.utf8)),
        ("bad priority", Array(#"{"target":"081234567890","message":"x","priority":"urgent"}"#.utf8)),
        ("invalid UTF-8", [0x7B, 0x22, 0x74, 0x22, 0x3A, 0x22, 0xFF, 0xFE, 0x22, 0x7D]),
        ("NUL in message", Array(#"{"target":"081234567890","message":"a\u0000b"}"#.utf8)),
        (
            "over 64 KiB",
            Array((#"{"target":"081234567890","message":"x","pad":""# + String(repeating: "p", count: 65_536) + #""}"#).utf8)
        ),
    ]

    @Test("every invalid request: exactly one rejected event, a rejected row, nothing sent")
    func rejections() async throws {
        try await withWorld { world in
            try await world.events.waitUntilSubscribed()
            try await world.startKurir()
            for (index, payload) in Self.invalidPayloads.enumerated() {
                try await world.publish("bad/\(index)", payload.1)
            }
            try await world.publish("good", #"{"id":"after-bad","target":"081234567890","message":"x"}"#)
            try await world.events.wait(for: "delivered")
            let rejected = try await world.events.wait(for: "rejected", count: Self.invalidPayloads.count)
            #expect(rejected.count == Self.invalidPayloads.count)
            for (index, payload) in Self.invalidPayloads.enumerated() {
                let events = rejected.filter { $0.string("route") == "bad/\(index)" }
                #expect(events.count == 1, "\(payload.0)")
                let reason = events.first?.string("reason") ?? ""
                #expect(!reason.isEmpty && !reason.contains("\n"), "\(payload.0): \(reason)")
            }
            #expect(world.gateways.requests().count == 1, "only the valid request reached a gateway")
            #expect(await world.stopKurir() == 0)
            let rows = try world.rows()
            #expect(rows.filter { $0.status == "rejected" }.count == Self.invalidPayloads.count)
            try world.expectNoSecretsLeaked()
        }
    }

    // Both modes: FULL (the default) commits the intake through the group committer, NORMAL on its own.
    @Test(
        "kill -9 while 1,000 requests stream in: every acknowledged request is delivered",
        arguments: ["full", "normal"])
    func killDuringStream(sync: String) async throws {
        let total = 1000
        try await withWorld(["KURIR_DB_SYNC": sync]) { world in
            try await world.events.waitUntilSubscribed()
            try await world.startKurir()
            let publisher = try Publisher.shared(port: world.broker.port)
            try await publisher.connect()
            var mids: [Int32] = []
            var killed = false
            for i in 0..<total {
                let number = String(format: "0812%08d", i)
                mids.append(
                    try publisher.publishNoWait(
                        topic: "notify/whatsapp/load",
                        payload: Array(#"{"id":"load-\#(i)","target":"\#(number)","message":"m\#(i)"}"#.utf8)))
                if i == total / 2 {
                    try await waitUntil("some deliveries before the kill") { world.gateways.acceptedCount() >= 100 }
                    await world.killKurir()
                    killed = true
                    try await world.startKurir()
                }
            }
            #expect(killed)
            let published = mids
            try await waitUntil("every publish acknowledged by the broker") { published.allSatisfy(publisher.isAcknowledged) }
            try await waitUntil("every request accepted by a gateway", timeout: .seconds(120)) {
                Set(world.gateways.requests(.fonnte).filter(\.accepted).compactMap { $0.fields["target"] }).count == total
            }
            let sends = world.gateways.requests(.fonnte).filter(\.accepted).count
            #expect(await world.stopKurir() == 0)
            let rows = try world.rows()
            #expect(rows.count == total)
            #expect(rows.allSatisfy { $0.status == "sent" })
            print("durability (\(sync)): requests \(total), kills 1, lost 0, duplicate sends \(sends - total)")
        }
    }

    @Test("broker restarted mid-stream: nothing lost, every event published")
    func brokerRestart() async throws {
        let total = 400
        try await withWorld { world in
            try await world.events.waitUntilSubscribed()
            try await world.startKurir()
            for i in 0..<(total / 2) {
                try await world.publish("load", #"{"id":"b-\#(i)","target":"\#(String(format: "0813%08d", i))","message":"m"}"#)
            }
            world.broker.stop()
            try world.broker.restart()
            for i in (total / 2)..<total {
                try await world.publish("load", #"{"id":"b-\#(i)","target":"\#(String(format: "0813%08d", i))","message":"m"}"#)
            }
            try await waitUntil("every request accepted", timeout: .seconds(60)) {
                Set(world.gateways.requests(.fonnte).filter(\.accepted).compactMap { $0.fields["target"] }).count == total
            }
            try await waitUntil("every delivered event received", timeout: .seconds(60)) {
                Set(world.events.of("delivered").compactMap { $0.string("id") }).count == total
            }
            #expect(await world.stopKurir() == 0)
            #expect(try world.rows().filter { $0.status == "sent" }.count == total)
        }
    }

    @Test("a request published while kurir is down is delivered when it starts")
    func publishedWhileDown() async throws {
        try await withWorld { world in
            try await world.events.waitUntilSubscribed()
            #expect(try await world.registerSessionAndStop() == 0)
            try await world.publish("t", #"{"id":"offline-1","target":"081234567890","message":"x"}"#)
            try await world.startKurir()
            let delivered = try #require(try await world.events.wait(for: "delivered").first)
            #expect(delivered.string("id") == "offline-1")
            _ = await world.stopKurir()
        }
    }

    /// The broker sends what queued while kurir was down at once, so kurir's network thread reads it in one
    /// go and the intake commits it in one transaction: each request once, in the order published, the
    /// first of two repeats kept, an invalid one rejected among them.
    @Test("requests queued while kurir was down: committed once each, in order, the first of a repeat kept")
    func queuedWhileDown() async throws {
        try await withWorld { world in
            try await world.events.waitUntilSubscribed()
            #expect(try await world.registerSessionAndStop() == 0)
            for i in 1...10 {
                try await world.publish("t", #"{"id":"q-\#(i)","target":"08123400000\#(i % 10)","message":"m-\#(i)"}"#)
            }
            try await world.publish("t", #"{"id":"q-3","target":"081234000003","message":"repeat"}"#)
            try await world.publish("t", #"{"id":"q-bad","target":"081234000009"}"#)
            try await world.publish("t", #"{"id":"q-multi","target":["081211110001","081211110002"],"message":"multi"}"#)
            try await world.startKurir()
            try await world.events.wait(for: "delivered", count: 12)
            try await world.events.wait(for: "rejected", count: 1)
            #expect(await world.stopKurir() == 0)

            let rows = try world.rows().sorted { $0.id < $1.id }
            let expected = (1...10).map { "q-\($0)" } + ["q-bad", "q-multi", "q-multi"]
            #expect(rows.map(\.requestID) == expected)
            #expect(rows.first { $0.requestID == "q-3" }?.message == "m-3")
            #expect(rows.first { $0.requestID == "q-bad" }?.status == "rejected")
            let toThree = world.gateways.requests(.fonnte).filter { $0.fields["target"] == "6281234000003" }
            #expect(toThree.map { $0.fields["message"] } == ["m-3"])
        }
    }

    @Test("a second kurir on the same database exits 1 within a second, naming the lock")
    func secondInstance() async throws {
        try await withWorld { world in
            try await world.startKurir()
            var environment = world.environment
            environment["MQTT_CLIENT_ID"] = "second"
            let second = try ChildProcess.launch(
                executable: builtProductPath("kurir"), arguments: ["run"], environment: environment,
                logPath: world.directory + "/second.log")
            let status = await second.waitForExit(timeout: .seconds(5))
            #expect(status == 1)
            #expect(second.output().contains(".lock"))
            #expect(world.kurir?.isRunning == true)
            _ = await world.stopKurir()
        }
    }

    static let badConfigurations: [(String, [String: String], String)] = [
        ("QoS 2", ["MQTT_QOS": "2"], "MQTT_QOS"),
        ("unknown provider", ["WHATSAPP_PROVIDER": "twilio"], "WHATSAPP_PROVIDER"),
        ("file URL", ["WHATSAPP_API_URL": "file:///etc/passwd"], "WHATSAPP_API_URL"),
        ("gopher URL", ["WHATSAPP_API_URL": "gopher://127.0.0.1/"], "WHATSAPP_API_URL"),
        ("token with line break", ["WHATSAPP_API_TOKEN": "CANARY-abc\nInjected: 1"], "WHATSAPP_API_TOKEN"),
        ("secret set both ways", ["WHATSAPP_API_TOKEN_FILE": "/dev/null"], "WHATSAPP_API_TOKEN"),
        ("wablas without URL", ["WHATSAPP_BACKUP_API_URL": ""], "WHATSAPP_BACKUP_API_URL"),
        ("prefix overlapping", ["MQTT_RESULT_PREFIX": "notify/whatsapp/results"], "MQTT_RESULT_PREFIX"),
    ]

    @Test("bad configuration: one line naming the variable, exit status 2, no secret", arguments: badConfigurations)
    func badConfiguration(_ name: String, _ overrides: [String: String], _ variable: String) async throws {
        try await withWorld { world in
            var environment = world.environment
            environment.merge(overrides) { _, new in new }
            let process = try ChildProcess.launch(
                executable: builtProductPath("kurir"), arguments: ["check"], environment: environment,
                logPath: world.directory + "/check.log")
            #expect(await process.waitForExit(timeout: .seconds(10)) == 2, "\(name)")
            let lines = process.output().split(separator: "\n")
            #expect(lines.count == 1, "\(name): \(lines)")
            #expect(process.output().contains(variable), "\(name)")
            for canary in Canary.all + ["CANARY-abc"] { #expect(!process.output().contains(canary)) }
        }
    }

    @Test("kurir send: operator lines and exit status")
    func sendCommand() async throws {
        try await withWorld { world in
            let ok = try ChildProcess.launch(
                executable: builtProductPath("kurir"), arguments: ["send", "--to", "081234567890", "--message", "test"],
                environment: world.environment, logPath: world.directory + "/send-ok.log")
            #expect(await ok.waitForExit(timeout: .seconds(15)) == 0)
            #expect(ok.output().contains("✅ WhatsApp sent to 6281234567890 via fonnte (primary)"))

            for provider in [Provider.fonnte, .wablas] {
                world.setGateway(provider, .refuse, reason: "insufficient quota")
            }
            let failed = try ChildProcess.launch(
                executable: builtProductPath("kurir"), arguments: ["send", "--to", "081234567890", "--message", "test"],
                environment: world.environment, logPath: world.directory + "/send-fail.log")
            #expect(await failed.waitForExit(timeout: .seconds(15)) == 1)
            #expect(failed.output().contains("❌ Both providers failed. Primary: insufficient quota, Backup: insufficient quota"))
            for canary in Canary.all { #expect(!ok.output().contains(canary) && !failed.output().contains(canary)) }
        }
    }
}
