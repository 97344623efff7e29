import Foundation
import KurirCore
import KurirStore
import KurirTestSupport
import Testing

/// The reference deployment's scenarios and test procedures, end to end: real broker, fake gateways, kurir binary.
@Suite(.serialized)
struct ScenarioTests {
    @Test("primary accepts: delivered via fonnte, no failover")
    func primaryAccepts() async throws {
        try await withWorld() { world in
            try await world.events.waitUntilSubscribed()
            try await world.startKurir()

            try await world.publish(
                "tickets/assigned", #"{"id":"t-1","target":"0812-3456-7890","message":"Tiket #42 untuk Anda"}"#)
            let delivered = try await world.events.wait(for: "delivered")
            let event = try #require(delivered.first)
            #expect(event.topic == "notify/result/whatsapp/delivered/tickets/assigned")
            #expect(event.string("target") == "6281234567890")
            #expect(event.string("provider") == "fonnte")
            #expect(event.bool("failover") == false)
            #expect(event.bool("possible_duplicate") == false)
            #expect(event.string("id") == "t-1")
            #expect(event.string("route") == "tickets/assigned")
            #expect(!String(decoding: event.payload, as: UTF8.self).contains("Tiket #42"))

            let sent = world.gateways.requests(.fonnte)
            #expect(sent.count == 1)
            #expect(sent.first?.fields["target"] == "6281234567890")
            #expect(sent.first?.fields["message"] == "Tiket #42 untuk Anda")
            #expect(world.gateways.requests(.wablas).isEmpty)
            #expect(world.log().contains("✅ WhatsApp sent to 6281234567890 via fonnte (primary)"))

            #expect(await world.stopKurir() == 0)
            let row = try #require(try world.rows().first)
            #expect(row.status == "sent")
            #expect(row.provider == "fonnte")
            #expect(row.failover == false)
            #expect(row.attempts == 1)
            try world.expectNoSecretsLeaked()
        }
    }

    @Test("primary answers HTTP 200 status:false: failover to wablas")
    func primaryRefusesWithStatusFalse() async throws {
        try await withWorld() { world in
            world.setGateway(.fonnte, .refuse, reason: "invalid group id")
            try await world.events.waitUntilSubscribed()
            try await world.startKurir()

            try await world.publish("alerts/site", #"{"id":"g-1","target":"120363043218123456@g.us","message":"Site down"}"#)
            let delivered = try #require(try await world.events.wait(for: "delivered").first)
            #expect(delivered.string("provider") == "wablas")
            #expect(delivered.bool("failover") == true)
            #expect(delivered.string("target") == "120363043218123456@g.us")
            let failover = try #require(world.events.of("failover").first)
            #expect(failover.string("from") == "fonnte")
            #expect(failover.string("to") == "wablas")
            #expect(failover.string("error") == "invalid group id")

            let wablas = try #require(world.gateways.requests(.wablas).first)
            #expect(wablas.fields["phone"] == "120363043218123456")
            #expect(wablas.fields["isGroup"] == "true")

            let log = world.log()
            #expect(log.contains("⚠️ Primary provider fonnte failed, attempting failover to wablas..."))
            #expect(log.contains("✅ WhatsApp sent to 120363043218123456@g.us via wablas (failover)"))

            #expect(await world.stopKurir() == 0)
            let row = try #require(try world.rows().first)
            #expect(row.status == "sent")
            #expect(row.provider == "wablas")
            #expect(row.failover == true)
            #expect(row.attempts == 2)
            try world.expectNoSecretsLeaked()
        }
    }

    @Test("primary times out, backup disconnected: failed with retry, then delivered on the retry after a restart")
    func bothFailThenRetry() async throws {
        try await withWorld(["WHATSAPP_RETRY_DELAY_SECONDS": "3", "WHATSAPP_TIMEOUT_SECONDS": "1"]) { world in
            world.setGateway(.fonnte, .neverAnswer)
            world.setGateway(.wablas, .refuse, reason: "device disconnected, need to scan qr code again")
            try await world.events.waitUntilSubscribed()
            try await world.startKurir()

            let published = Date()
            try await world.publish("oncall", #"{"id":"r-1","target":"+62 812 1111 2222","message":"Disk full"}"#)
            let failed = try #require(try await world.events.wait(for: "failed").first)
            #expect(failed.json["retries_left"] == .integer(8))
            let retryAt = try #require(failed.string("retry_at").flatMap { Timestamp(rfc3339: $0) })
            let expected = published.timeIntervalSince1970 * 1000 + 3000
            let actual = Double(retryAt.millisecondsSinceEpoch)
            #expect(actual > expected - 300 - 1000 && actual < expected + 300 + 2500, "retry_at ≈ now + 3 s ± jitter")
            let attempts = try #require(failed.json["attempts"]?.arrayValue)
            #expect(attempts.count == 2)
            #expect(attempts.first?["outcome"] == .string("unknown"))
            #expect(attempts.last?["outcome"] == .string("refused"))
            #expect(
                world.log().contains(
                    "❌ Both providers failed. Primary: timeout, Backup: device disconnected, need to scan qr code again"))

            #expect(await world.stopKurir() == 0)
            let row = try #require(try world.rows().first)
            #expect(row.status == "retrying")
            #expect(
                row.errorMessage == "Both failed: Primary (timeout), Backup (device disconnected, need to scan qr code again)")
            #expect(row.nextAttemptAt != nil)

            world.setGateway(.fonnte)
            try await world.startKurir()
            let delivered = try #require(try await world.events.wait(for: "delivered", timeout: .seconds(30)).first)
            #expect(delivered.string("provider") == "fonnte")
            #expect(delivered.bool("possible_duplicate") == true, "the first round's primary attempt was unknown")
            #expect(await world.stopKurir() == 0)
            #expect(try world.rows().first?.status == "sent")
            try world.expectNoSecretsLeaked()
        }
    }

    @Test("invalid primary token: failover to the backup")
    func invalidPrimaryToken() async throws {
        try await withWorld(["WHATSAPP_API_TOKEN": "CANARY-wrong-token-0a0a"]) { world in
            try await world.events.waitUntilSubscribed()
            try await world.startKurir()
            try await world.publish("t", #"{"target":"081234567890","message":"x"}"#)
            let delivered = try #require(try await world.events.wait(for: "delivered").first)
            #expect(delivered.string("provider") == "wablas")
            #expect(world.events.of("failover").first?.string("error") == "token invalid")
            #expect(!world.log().contains("CANARY-wrong-token-0a0a"))
            _ = await world.stopKurir()
            try world.expectNoSecretsLeaked()
        }
    }

    @Test("failover disabled: failed via fonnte, backup never called")
    func failoverDisabled() async throws {
        try await withWorld(["WHATSAPP_ENABLE_FAILOVER": "false", "WHATSAPP_MAX_RETRIES": "0"]) { world in
            world.setGateway(.fonnte, .refuse, reason: "target invalid")
            try await world.events.waitUntilSubscribed()
            try await world.startKurir()
            try await world.publish("t", #"{"id":"nf-1","target":"081234567890","message":"x","reply_to":"e2e/reply/nf-1"}"#)
            let failed = try #require(try await world.events.wait(for: "failed").first)
            #expect(failed.json["retry_at"] == .null)
            #expect(failed.json["retries_left"] == .integer(0))
            try await waitUntil("failed on reply_to") { world.events.all().contains { $0.topic == "e2e/reply/nf-1" } }
            #expect(world.gateways.requests(.wablas).isEmpty)
            let log = world.log()
            #expect(log.contains("❌ WhatsApp failed to 6281234567890 via fonnte"))
            #expect(log.contains("Error: target invalid"))
            #expect(await world.stopKurir() == 0)
            let row = try #require(try world.rows().first)
            #expect(row.status == "failed")
            #expect(row.provider == "fonnte")
            #expect(row.errorMessage == "target invalid")
            try world.expectNoSecretsLeaked()
        }
    }

    @Test("primary and backup swapped by configuration")
    func swappedChain() async throws {
        try await withWablasFirst { world in
            try await world.publish("t", #"{"target":"081234567890","message":"x"}"#)
            let delivered = try #require(try await world.events.wait(for: "delivered").first)
            #expect(delivered.string("provider") == "wablas")
            #expect(delivered.bool("failover") == false)
            #expect(world.log().contains("✅ WhatsApp sent to 6281234567890 via wablas (primary)"))
            #expect(world.gateways.requests(.fonnte).isEmpty)
            _ = await world.stopKurir()
            try world.expectNoSecretsLeaked()
        }
    }

    @Test("a message over the primary's limit skips it: refused attempt recorded, failover event, backup delivers")
    func primarySkippedForLength() async throws {
        try await withWablasFirst { world in
            // Wablas takes at most 1,024 characters, Fonnte more.
            let message = String(repeating: "a", count: 1_500)
            try await world.publish("t", #"{"target":"081234567890","message":"\#(message)"}"#)
            let delivered = try #require(try await world.events.wait(for: "delivered").first)
            #expect(delivered.string("provider") == "fonnte")
            #expect(delivered.bool("failover") == true)
            #expect(world.events.of("failover").first?.string("error")?.contains("wablas limit") == true)
            #expect(world.gateways.requests(.wablas).isEmpty)
            _ = await world.stopKurir()
            let row = try #require(try world.rows().first)
            #expect(row.attempts == 2)
            try world.expectNoSecretsLeaked()
        }
    }

    @Test("three gateways: two failovers, then woowa delivers; all three failing names each")
    func threeGateways() async throws {
        try await withWorld([
            "WHATSAPP_TERTIARY_PROVIDER": "woowa", "WHATSAPP_TERTIARY_API_TOKEN": Canary.woowa, "WHATSAPP_MAX_RETRIES": "0",
        ]) { world in
            world.environment["WHATSAPP_TERTIARY_API_URL"] = world.gateways.url(.woowa)
            for provider in [Provider.fonnte, .wablas] {
                world.setGateway(provider, .refuse, reason: "\(provider.rawValue) says no")
            }
            try await world.events.waitUntilSubscribed()
            try await world.startKurir()
            try await world.publish("t", #"{"id":"three-1","target":"081234567890","message":"x"}"#)
            let delivered = try #require(try await world.events.wait(for: "delivered").first)
            #expect(delivered.string("provider") == "woowa")
            #expect(delivered.bool("failover") == true)
            #expect(world.events.of("failover").count == 2)
            #expect(world.gateways.requests(.woowa).first?.fields["phone_no"] == "+6281234567890")
            #expect(world.log().contains("⚠️ Backup provider wablas failed, attempting failover to woowa..."))

            world.setGateway(.woowa, .refuse, reason: "woowa says no")
            try await world.publish("t", #"{"id":"three-2","target":"081234567890","message":"x"}"#)
            _ = try await world.events.wait(for: "failed")
            #expect(
                world.log().contains(
                    "❌ All providers failed. fonnte: fonnte says no, wablas: wablas says no, woowa: woowa says no"))
            #expect(await world.stopKurir() == 0)
            let failedRow = try #require(try world.rows().first { $0.requestID == "three-2" })
            #expect(
                failedRow.errorMessage == "All failed: fonnte (fonnte says no), wablas (wablas says no), woowa (woowa says no)")
            try world.expectNoSecretsLeaked()
        }
    }

    @Test("the same id published three times is delivered once")
    func idempotency() async throws {
        try await withWorld() { world in
            try await world.events.waitUntilSubscribed()
            try await world.startKurir()
            for _ in 0..<3 {
                try await world.publish("t", #"{"id":"same-1","target":"081234567890","message":"x"}"#)
            }
            try await world.publish("t", #"{"id":"marker","target":"081299998888","message":"x"}"#)
            try await world.events.wait(for: "delivered", count: 2)
            #expect(world.events.of("delivered").filter { $0.string("id") == "same-1" }.count == 1)
            #expect(world.gateways.requests(.fonnte).filter { $0.fields["target"] == "6281234567890" }.count == 1)
            _ = await world.stopKurir()
            #expect(try world.rows().count == 2)
        }
    }

    /// The broker sends a retained request again each time kurir subscribes (on every reconnect). Without an
    /// `id` every replay would be a new request, sent again.
    @Test("a retained request without an id is sent once, not again after a reconnect")
    func retainedReplay() async throws {
        try await withWorld() { world in
            try await world.events.waitUntilSubscribed()
            try await world.startKurir()
            try await world.publish("t", Array(#"{"target":"081277776666","message":"retained"}"#.utf8), retain: true)
            try await world.events.wait(for: "delivered", count: 1)
            #expect(await world.stopKurir() == 0)
            try await world.startKurir()
            try await waitUntil("the replay ignored") { world.log().contains("retained request without an id ignored") }
            try await world.publish("t", #"{"id":"marker","target":"081299998888","message":"x"}"#)
            try await world.events.wait(for: "delivered", count: 2)
            #expect(world.gateways.requests(.fonnte).filter { $0.fields["target"] == "6281277776666" }.count == 1)
            #expect(await world.stopKurir() == 0)
            #expect(try world.rows().count == 2)
        }
    }

    @Test("a comma list and an array become one delivery per target, each sent alone")
    func multipleTargets() async throws {
        try await withWorld() { world in
            try await world.events.waitUntilSubscribed()
            try await world.startKurir()
            try await world.publish("t", #"{"id":"m-1","target":"081111111111, 082222222222","message":"x"}"#)
            try await world.publish("t", #"{"id":"m-2","target":["083333333333","120363000000000001@g.us"],"message":"x"}"#)
            try await world.events.wait(for: "delivered", count: 4)
            let targets = Set(world.gateways.requests(.fonnte).compactMap { $0.fields["target"] })
            #expect(targets == ["6281111111111", "6282222222222", "6283333333333", "120363000000000001@g.us"])
            #expect(world.gateways.requests(.fonnte).count == 4)
            _ = await world.stopKurir()
        }
    }

    @Test("MQTT_QOS=0: events are published and the outbox empties through the publish callback")
    func qosZero() async throws {
        try await withWorld(["MQTT_QOS": "0"]) { world in
            try await world.events.waitUntilSubscribed()
            try await world.startKurir()
            try await world.publish("t", #"{"id":"q0-1","target":"081234567890","message":"x"}"#)
            try await world.events.wait(for: "delivered")
            #expect(await world.stopKurir() == 0)
            let store = try Store(path: world.databasePath, sync: .normal)
            #expect(try store.outboxCount() == 0)
        }
    }

    @Test("WHATSAPP_ENABLED=false: recorded as disabled, skipped event, nothing sent")
    func disabled() async throws {
        try await withWorld(["WHATSAPP_ENABLED": "false"]) { world in
            try await world.events.waitUntilSubscribed()
            try await world.startKurir()
            try await world.publish("t", #"{"id":"d-1","target":"081234567890","message":"x"}"#)
            let skipped = try #require(try await world.events.wait(for: "skipped").first)
            #expect(skipped.string("target") == "6281234567890")
            #expect(world.gateways.requests().isEmpty)
            _ = await world.stopKurir()
            #expect(try world.rows().first?.status == "disabled")
        }
    }
}

/// A world whose chain is Wablas first, then Fonnte (both on the fake gateways), with kurir started.
private func withWablasFirst(_ body: (World) async throws -> Void) async throws {
    try await withWorld([
        "WHATSAPP_PROVIDER": "wablas", "WHATSAPP_API_TOKEN": Canary.wablas, "WHATSAPP_API_URL": "",
        "WHATSAPP_BACKUP_PROVIDER": "fonnte", "WHATSAPP_BACKUP_API_TOKEN": Canary.fonnte,
    ]) { world in
        world.environment["WHATSAPP_API_URL"] = world.gateways.url(.wablas)
        world.environment["WHATSAPP_BACKUP_API_URL"] = world.gateways.url(.fonnte)
        try await world.events.waitUntilSubscribed()
        try await world.startKurir()
        try await body(world)
    }
}
