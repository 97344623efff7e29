import Foundation
import GRDB
import KurirCore
import KurirTestSupport

#if canImport(Glibc)
    import Glibc
#endif

extension Suite {
    /// `kill -9` of kurir 20 times at random moments while requests flow.
    func killNine(_ f: inout Figures) async throws {
        let world = try await world("kill9")
        let requests = (0..<n(10_000)).map { ChaosRequest.simple($0, scenario: "k9") }
        try await world.startKurir()
        let producer = world.producer
        async let acked = producer.publishAll(requests, timeout: .seconds(400))
        var kills = 0
        var killsDuringFlow = 0
        let deadline = ContinuousClock.now.advanced(by: .seconds(400))
        // Short random gaps, so that the kills land while the requests are still being published
        // (the whole flow takes about 10 s here) rather than after it.
        while kills < 20 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(Int.random(in: 100...400)))
            if producer.acknowledgedCount < requests.count { killsDuringFlow += 1 }
            await world.killKurir()
            kills += 1
            try await world.startKurir()
        }
        let ackedSet = await acked
        _ = await waitAllSent(world, ackedSet.count)
        _ = await waitEvents(world, kind: "delivered", count: ackedSet.count)
        let status = await world.stopKurir()
        f.bar(status == 0, "kurir exited \(String(describing: status)) on SIGTERM")
        tally(world, requests, acked: ackedSet, into: &f)
        let interrupted = world.count("SELECT COUNT(*) FROM whatsapp_attempts WHERE error = 'interrupted'")
        f.notes.append(
            "\(kills) kills, \(killsDuringFlow) while requests were still being acknowledged; \(interrupted) attempt(s) in flight at a kill (recorded unknown)"
        )
        f.bar(kills == 20, "only \(kills) kills happened")
        f.bar(f.duplicates <= interrupted, "\(f.duplicates) duplicate sends > \(interrupted) attempts in flight at a kill")
        f.bar(
            world.events.distinct("delivered") >= ackedSet.count,
            "delivered events \(world.events.distinct("delivered")) < \(ackedSet.count)")
        integrity(world, &f)
    }

    /// Deterministic crash points (debug builds): kurir `_exit`s at the 5th hit (the intake's points: the
    /// 1st, for the intake commits once per read of requests and the 40 may arrive in one read), restarts
    /// clean.
    func crashPoint(_ point: String, _ f: inout Figures) async throws {
        let world = try await world("crash-\(point)")
        let requests = (0..<n(40)).map { ChaosRequest.simple($0, scenario: "cp") }
        let hit = point.hasPrefix("intake-") ? 1 : 5
        try await world.startKurir(extra: ["KURIR_CRASH_AT": "\(point):\(hit)"])
        let acked = await world.producer.publishAll(requests, timeout: .seconds(60))
        let status = await world.reapKurir(timeout: .seconds(30))
        f.bar(status == 86, "kurir did not stop at the crash point (status \(String(describing: status)))")
        f.bar(world.log().contains("crash point \(point) reached"), "crash point line missing")
        try await world.startKurir()
        _ = await waitAllSent(world, acked.count, timeout: .seconds(60))
        _ = await waitEvents(world, kind: "delivered", count: acked.count, timeout: .seconds(30))
        let stopped = await world.stopKurir()
        f.bar(stopped == 0, "kurir exited \(String(describing: stopped)) on SIGTERM")
        tally(world, requests, acked: acked, into: &f)
        let rows = world.count("SELECT COUNT(*) FROM whatsapp_notifications")
        let interrupted = world.count("SELECT COUNT(*) FROM whatsapp_attempts WHERE error = 'interrupted'")
        let snapshot = world.events.snapshot
        let republished = snapshot.eventIDs.values.filter { $0 > 1 }.count
        f.bar(rows == requests.count, "\(rows) rows for \(requests.count) requests (redelivery not deduplicated)")
        // Every attempt in flight at the crash is recorded unknown ("interrupted"); only those may repeat.
        let flagged = world.count(
            "SELECT COUNT(DISTINCT notification_id) FROM whatsapp_attempts WHERE outcome = 'unknown' AND notification_id IN (SELECT id FROM whatsapp_notifications WHERE status = 'sent')"
        )
        let neverLeft = point == "before-http" ? 1 : 0
        f.bar(
            f.duplicates <= interrupted - neverLeft,
            "\(f.duplicates) duplicate sends > \(interrupted - neverLeft) attempts that may have reached a gateway")
        f.bar(
            snapshot.possibleDuplicates.count == flagged,
            "\(snapshot.possibleDuplicates.count) possible_duplicate deliveries, \(flagged) with an unknown attempt")
        switch point {
        case "intake-before-commit", "intake-after-commit":
            f.notes.append(
                "redelivered request deduplicated: \(rows) rows for \(requests.count) requests; \(interrupted) attempt(s) in flight"
            )
        case "before-http", "after-http":
            f.bar(interrupted >= 1, "no attempt recorded as interrupted")
            f.notes.append(
                "\(interrupted) attempt(s) recorded unknown/interrupted; \(f.duplicates) duplicate send(s), \(flagged) delivered with possible_duplicate"
            )
        default:
            f.bar(republished >= 1, "no event re-published with the same event_id")
            f.notes.append("\(republished) event(s) re-published with the same event_id")
        }
        f.bar(
            world.events.distinct("delivered") >= acked.count,
            "delivered events \(world.events.distinct("delivered")) < \(acked.count)")
        integrity(world, &f)
    }

    /// A database capped by `max_page_count`: kurir must stop acknowledging, say "store full" in one line
    /// and exit non-zero; after space returns, nothing acknowledged is lost.
    func diskFull(_ f: inout Figures) async throws {
        let world = try await world("diskfull")
        let requests = (0..<3000).map { ChaosRequest.simple($0, scenario: "df") }
        try await world.startKurir(extra: ["KURIR_DEBUG_MAX_PAGE_COUNT": "40"])
        let acked = await world.producer.publishAll(requests, timeout: .seconds(120))
        let status = await world.reapKurir(timeout: .seconds(60))
        let fullLines = world.log().split(separator: "\n").filter { $0.contains("store full") }
        f.bar(
            status != nil && status != 0,
            "kurir did not exit non-zero when the store was full (status \(String(describing: status)))")
        f.bar(fullLines.count == 1, "\(fullLines.count) 'store full' lines, expected exactly 1")
        let rowsAtFull = world.count("SELECT COUNT(*) FROM whatsapp_notifications")
        f.notes.append("store full after \(rowsAtFull) rows: \(fullLines.first.map { String($0.suffix(110)) } ?? "-")")
        try await recoverAfterFull(world, requests, acked: acked, &f)
    }

    /// The disk-full scenario on a real small filesystem: kurir's database directory on a tmpfs of
    /// `sizeKiB` that fills during the run (root only; otherwise the row says skipped).
    func diskFullTmpfs(sizeKiB: Int, _ f: inout Figures) async throws {
        let world = try await world("diskfull-tmpfs")
        let small = world.directory + "/small"
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        guard geteuid() == 0, mount("tmpfs", small, "tmpfs", 0, "size=\(sizeKiB)k,mode=0700") == 0 else {
            f.skipped = "no mount permission"
            return
        }
        // Detach: whatever happened, nothing stays mounted under the work directory.
        defer { umount2(small, Int32(MNT_DETACH)) }
        world.environment["KURIR_DB_PATH"] = small + "/kurir.db"
        let requests = (0..<3000).map { ChaosRequest.simple($0, scenario: "dt") }
        try await world.startKurir()
        let acked = await world.producer.publishAll(requests, timeout: .seconds(120))
        let status = await world.reapKurir(timeout: .seconds(60))
        let fullLines = world.log().split(separator: "\n").filter { $0.contains("store full") }
        f.bar(status != nil && status != 0, "kurir did not exit non-zero on a full disk (status \(String(describing: status)))")
        f.bar(fullLines.count == 1, "\(fullLines.count) 'store full' lines, expected exactly 1")
        let rowsAtFull = world.count("SELECT COUNT(*) FROM whatsapp_notifications")
        let lastLines = world.log().split(separator: "\n").suffix(3).map { String($0.suffix(160)) }
        f.notes.append(
            "tmpfs \(sizeKiB) KiB full after \(rowsAtFull) rows, exit status \(status.map(String.init) ?? "none"); last log lines: \(lastLines)"
        )
        // Space returns: the files (kurir is dead, so they are consistent) move to an ordinary directory.
        let roomy = world.directory + "/roomy"
        try FileManager.default.createDirectory(atPath: roomy, withIntermediateDirectories: true)
        for file in try FileManager.default.contentsOfDirectory(atPath: small) {
            try FileManager.default.copyItem(atPath: small + "/" + file, toPath: roomy + "/" + file)
        }
        world.environment["KURIR_DB_PATH"] = roomy + "/kurir.db"
        try await recoverAfterFull(world, requests, acked: acked, &f)
    }

    /// After a full store: kurir restarted with room delivers everything acknowledged, nothing twice.
    private func recoverAfterFull(_ world: World, _ requests: [ChaosRequest], acked: Set<Int>, _ f: inout Figures)
        async throws
    {
        try await world.startKurir()
        _ = await waitAllSent(world, acked.count, timeout: .seconds(120))
        let stopped = await world.stopKurir()
        f.bar(stopped == 0, "kurir exited \(String(describing: stopped)) on SIGTERM")
        tally(world, requests, acked: acked, into: &f)
        let interrupted = world.count("SELECT COUNT(*) FROM whatsapp_attempts WHERE error = 'interrupted'")
        f.bar(f.duplicates <= interrupted, "\(f.duplicates) duplicate sends > \(interrupted) attempts in flight at the stop")
        integrity(world, &f)
    }

    /// A second kurir on the same database exits within 1 s naming the lock; the first keeps running.
    func secondInstance(_ f: inout Figures) async throws {
        let world = try await world("second")
        try await world.startKurir()
        var env = world.environment
        env["MQTT_CLIENT_ID"] = "kurir-chaos-second"
        let started = ContinuousClock.now
        let second = try ChildProcess.launch(
            executable: world.kurirPath, arguments: ["run"], environment: env, logPath: world.directory + "/second.log",
            currentDirectory: world.directory)
        let status = await second.waitForExit(timeout: .seconds(5))
        let took = ContinuousClock.now - started
        if status == nil { second.kill9() }
        f.bar(status == 1, "second kurir exit status \(String(describing: status)), expected 1")
        f.bar(took < .seconds(1), "second kurir took \(Report.seconds(took)) to exit")
        f.bar(second.output().contains("lock"), "second kurir's message does not name the lock: \(second.output().suffix(200))")
        f.notes.append(
            "second kurir: \(second.output().split(separator: "\n").last.map(String.init) ?? "") (\(Report.seconds(took)))")
        let requests = (0..<n(50)).map { ChaosRequest.simple($0, scenario: "si") }
        let acked = await world.producer.publishAll(requests, timeout: .seconds(30))
        _ = await waitAllSent(world, acked.count, timeout: .seconds(30))
        f.bar(world.kurir?.isRunning == true, "the first kurir stopped")
        await world.stopKurir()
        tally(world, requests, acked: acked, into: &f)
    }
}
