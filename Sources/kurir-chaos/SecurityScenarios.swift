import Foundation
import KurirCore
import KurirTestSupport

extension Suite {
    /// Makes a test CA, a server certificate for `names`, and a second unrelated CA (openssl).
    func makePKI(in dir: String) async throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let steps: [[String]] = [
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=kurir chaos CA",
                "-keyout", "ca.key", "-out", "ca.crt",
            ],
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=other CA",
                "-keyout", "other.key", "-out", "other.crt",
            ],
            ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"],
            [
                "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-extfile", "good.ext", "-out", "server.crt",
            ],
            ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=wrong.example", "-keyout", "wrong.key", "-out", "wrong.csr"],
            [
                "x509", "-req", "-in", "wrong.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-extfile", "wrong.ext", "-out", "wrong.crt",
            ],
        ]
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\n".write(toFile: dir + "/good.ext", atomically: true, encoding: .utf8)
        try "subjectAltName=DNS:wrong.example\n".write(toFile: dir + "/wrong.ext", atomically: true, encoding: .utf8)
        for step in steps {
            let (status, output) = try await runTool("/usr/bin/openssl", step, in: dir)
            guard status == 0 else { throw ChaosError("openssl \(step[0]) failed: \(output.suffix(300))") }
        }
    }

    /// Broker with TLS and a password: right CA and credentials work; a wrong CA, a wrong host name and a
    /// wrong password are refused, said in a line without the password, and retried with backoff.
    func brokerTLS(_ f: inout Figures) async throws {
        let dir = root + "/tls"
        let pki = dir + "/pki"
        try await makePKI(in: pki)
        let password = dir + "/passwd"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let (pwStatus, pwOut) = try await runTool(
            "/usr/bin/mosquitto_passwd", ["-b", "-c", password, "kurir", Canary.brokerPassword], in: dir)
        guard pwStatus == 0 else { throw ChaosError("mosquitto_passwd failed: \(pwOut)") }
        let tlsPort = try freePort()
        let wrongNamePort = try freePort()
        let extra = """
            allow_anonymous false
            password_file \(password)
            listener \(tlsPort) 127.0.0.1
            cafile \(pki)/ca.crt
            certfile \(pki)/server.crt
            keyfile \(pki)/server.key
            listener \(wrongNamePort) 127.0.0.1
            cafile \(pki)/ca.crt
            certfile \(pki)/wrong.crt
            keyfile \(pki)/wrong.key
            """
        let broker = try Broker(directory: dir + "/broker", repoRoot: FileManager.default.currentDirectoryPath, extra: extra)
        try await broker.start()
        defer { Task { await broker.kill() } }
        let gateways = try await FakeGateway.start()
        defer { Task { try? await gateways.stop() } }
        let events = try EventRecorder(
            port: broker.port, canaries: Canary.all, username: "kurir", password: Canary.brokerPassword)
        defer { events.stop() }
        let producer = try Producer(port: broker.port, username: "kurir", password: Canary.brokerPassword)
        defer { producer.stop() }
        guard await events.waitSubscribed() else { throw ChaosError("subscriber could not log in to the plain listener") }

        func env(_ url: String, ca: String, password: String) -> [String: String] {
            [
                "MQTT_URL": url, "MQTT_USERNAME": "kurir", "MQTT_PASSWORD": password, "MQTT_CA_FILE": ca,
                "MQTT_CLIENT_ID": "kurir-chaos-tls-\(UUID().uuidString.prefix(6))",
                "WHATSAPP_PROVIDER": "fonnte", "WHATSAPP_API_TOKEN": Canary.fonnte,
                "WHATSAPP_API_URL": gateways.url(.fonnte), "KURIR_DB_PATH": dir + "/kurir-\(UUID().uuidString.prefix(6)).db",
                "KURIR_DB_SYNC": "normal", "WHATSAPP_TIMEOUT_SECONDS": "2",
            ]
        }
        func launch(_ name: String, _ environment: [String: String]) throws -> ChildProcess {
            try ChildProcess.launch(
                executable: binDir + "/kurir", arguments: ["run"], environment: environment, logPath: dir + "/\(name).log",
                currentDirectory: dir)
        }
        var logs: [String] = []

        // 1. Right CA, right credentials: delivers.
        let good = try launch("good", env("mqtts://127.0.0.1:\(tlsPort)", ca: pki + "/ca.crt", password: Canary.brokerPassword))
        let subscribed = await good.waitForOutput(containing: "subscribed to", timeout: .seconds(20))
        f.bar(subscribed, "kurir did not connect over TLS with the right CA and password: \(good.output().suffix(300))")
        let requests = (0..<20).map { ChaosRequest.simple($0, scenario: "tls") }
        let acked = await producer.publishAll(requests, timeout: .seconds(30))
        f.requests = requests.count
        f.acknowledged = acked.count
        _ = await gateways.waitFor(timeout: .seconds(30)) { $0.filter(\.accepted).count >= acked.count }
        f.delivered = Set(gateways.requests().filter(\.accepted).compactMap { $0.fields["target"] }).count
        f.lost = acked.count - f.delivered
        f.bar(f.lost == 0, "lost \(f.lost) over TLS")
        good.signal(SIGTERM)
        _ = await good.waitForExit(timeout: .seconds(20))
        logs.append(good.output())

        // 2–4. Wrong CA, wrong host name, wrong password: refused, one line each try, retried with backoff.
        let cases: [(String, [String: String], String)] = [
            (
                "wrong-ca", env("mqtts://127.0.0.1:\(tlsPort)", ca: pki + "/other.crt", password: Canary.brokerPassword),
                "certificate"
            ),
            (
                "wrong-name", env("mqtts://127.0.0.1:\(wrongNamePort)", ca: pki + "/ca.crt", password: Canary.brokerPassword),
                "certificate"
            ),
            (
                "wrong-password", env("mqtts://127.0.0.1:\(tlsPort)", ca: pki + "/ca.crt", password: "CANARY-wrong-pw-0d1e"),
                "not authori"
            ),
        ]
        for (name, environment, _) in cases {
            let child = try launch(name, environment)
            try await Task.sleep(for: .seconds(9))
            let output = child.output()
            logs.append(output)
            let running = child.isRunning
            child.signal(SIGTERM)
            let status = await child.waitForExit(timeout: .seconds(15))
            if status == nil { child.kill9() }
            let refusedLines = output.split(separator: "\n").filter {
                $0.contains("MQTT") && ($0.contains("refused") || $0.contains("failed") || $0.contains("lost"))
            }
            f.bar(!output.contains("subscribed to"), "\(name): kurir connected anyway")
            f.bar(running, "\(name): kurir exited instead of retrying")
            f.bar(
                refusedLines.count >= 2,
                "\(name): \(refusedLines.count) connection failure line(s) in 9 s (expected retries with backoff, said in a line)"
            )
            f.bar(refusedLines.count <= 8, "\(name): \(refusedLines.count) failure lines in 9 s (no backoff)")
            f.bar(!output.contains("CANARY-wrong-pw-0d1e"), "\(name): the password appears in the log")
            f.notes.append(
                "\(name): \(refusedLines.count) line(s) in 9 s, e.g. \(refusedLines.first.map { String($0.suffix(120)) } ?? "none")"
            )
        }
        let leaks = logs.reduce(0) { sum, text in sum + Canary.all.filter { text.contains($0) }.count } + events.snapshot.leaks
        f.bar(leaks == 0, "a canary secret leaked into a log or an event")
    }

    /// A gateway over HTTPS with a self-signed certificate: refused before anything is sent.
    func untrustedGateway(_ f: inout Figures) async throws {
        let pki = root + "/https-pki"
        try await makePKI(in: pki)
        let port = try freePort()
        let server = try ChildProcess.launch(
            executable: "/usr/bin/openssl",
            arguments: [
                "s_server", "-accept", "127.0.0.1:\(port)", "-cert", pki + "/server.crt", "-key", pki + "/server.key", "-www",
            ],
            environment: [:], logPath: pki + "/s_server.log", currentDirectory: pki)
        defer { server.kill9() }
        _ = await waitUntil(timeout: .seconds(10)) { canConnect(port: port) }
        let world = try await world("https-untrusted", env: ["WHATSAPP_API_URL": "https://127.0.0.1:\(port)/send"])
        let requests = (0..<n(20)).map { ChaosRequest.simple($0, scenario: "https") }
        try await world.startKurir()
        let acked = await world.producer.publishAll(requests, timeout: .seconds(30))
        _ = await waitAllSent(world, acked.count, timeout: .seconds(60))
        await world.stopKurir()
        tally(world, requests, acked: acked, into: &f)
        let serverLog = server.output()
        f.bar(!serverLog.contains("POST") && !serverLog.contains("Authorization"), "the untrusted server received a request")
        let refused = world.count("SELECT COUNT(*) FROM whatsapp_attempts WHERE provider = 'fonnte' AND outcome = 'refused'")
        f.bar(refused == acked.count, "\(refused) refused attempts at the untrusted gateway, expected \(acked.count)")
        let error =
            (try? world.query { db in
                try String.fetchOne(db, sql: "SELECT error FROM whatsapp_attempts WHERE provider = 'fonnte' LIMIT 1")
            }) ?? nil
        f.notes.append("untrusted HTTPS gateway: \(refused) attempts refused (\(error ?? "?")), all delivered via the backup")
    }

    /// Configuration attacks refused at start with exit status 2 and a line naming the variable.
    func configAttacks(_ f: inout Figures) async throws {
        let dir = root + "/config"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try (Canary.fonnte + "\n").write(toFile: dir + "/token", atomically: true, encoding: .utf8)
        // Our own input, not kurir's output: gone before the secrets scan of the work directory.
        defer { try? FileManager.default.removeItem(atPath: dir + "/token") }
        let base = [
            "WHATSAPP_PROVIDER": "fonnte", "WHATSAPP_API_TOKEN": Canary.fonnte, "MQTT_URL": "mqtt://127.0.0.1:1",
            "KURIR_DB_PATH": dir + "/kurir.db",
        ]
        let attacks: [(String, [String: String], String)] = [
            ("file:// URL", ["WHATSAPP_API_URL": "file:///etc/passwd"], "WHATSAPP_API_URL"),
            ("gopher:// URL", ["WHATSAPP_API_URL": "gopher://127.0.0.1:70/_POST"], "WHATSAPP_API_URL"),
            ("token with line break", ["WHATSAPP_API_TOKEN": Canary.fonnte + "\r\nX-Injected: 1"], "WHATSAPP_API_TOKEN"),
            ("secret set twice", ["WHATSAPP_API_TOKEN_FILE": dir + "/token"], "WHATSAPP_API_TOKEN"),
            (
                "broker password twice", ["MQTT_PASSWORD": Canary.brokerPassword, "MQTT_PASSWORD_FILE": dir + "/token"],
                "MQTT_PASSWORD"
            ),
            (
                "backup file:// URL",
                [
                    "WHATSAPP_BACKUP_PROVIDER": "wablas", "WHATSAPP_BACKUP_API_TOKEN": Canary.wablas,
                    "WHATSAPP_BACKUP_API_URL": "file:///etc/shadow",
                ], "WHATSAPP_BACKUP_API_URL"
            ),
        ]
        f.requests = attacks.count
        for (name, extra, variable) in attacks {
            var env = base
            env.merge(extra) { _, new in new }
            let log = dir + "/\(name.filter(\.isLetter)).log"
            let child = try ChildProcess.launch(
                executable: binDir + "/kurir", arguments: ["run"], environment: env, logPath: log, currentDirectory: dir)
            let status = await child.waitForExit(timeout: .seconds(5))
            if status == nil { child.kill9() }
            let output = child.output()
            let lines = output.split(separator: "\n")
            f.bar(status == 2, "\(name): exit status \(String(describing: status)), expected 2")
            f.bar(
                lines.count == 1 && output.contains(variable), "\(name): not one line naming \(variable): \(output.prefix(200))")
            f.bar(!Canary.all.contains(where: output.contains), "\(name): the secret appears in the message")
            if status == 2 { f.rejected += 1 }
            f.notes.append("\(name): \(lines.first.map { String($0.prefix(110)) } ?? "")")
        }
    }

    /// Message text, route, id and reply_to with line breaks and ANSI escapes never make an extra log line.
    func logInjection(_ f: inout Figures) async throws {
        let world = try await world("log-injection", env: ["KURIR_LOG_LEVEL": "debug"])
        try await world.startKurir()
        let fake = "\u{1b}[2J\u{1b}[31m✅ WhatsApp sent to 6200000000000 via fonnte (primary)"
        let escapedFake = "\\u001b[2J\\u001b[31m\\n✅ WhatsApp sent to 6200000000000 via fonnte (primary)\\r\\nError: FORGED"
        var requests: [ChaosRequest] = []
        let target = ChaosRequest.number(1)
        let payloads: [(String, String, Bool)] = [
            ("notify/whatsapp/inj/\nFORGED \(fake)", #"{"id":"inj-0","target":"\#(target)","message":"route"}"#, true),
            (
                "notify/whatsapp/inj",
                #"{"id":"inj-1\n\#(escapedFake)","target":"\#(ChaosRequest.number(2))","message":"\#(escapedFake)"}"#, false
            ),
            (
                "notify/whatsapp/inj",
                #"{"id":"inj-2","target":"\#(ChaosRequest.number(3))","message":"line\nFORGED \#(escapedFake)"}"#, true
            ),
            ("notify/whatsapp/inj", #"{"id":"inj-3","target":"\#(ChaosRequest.number(4))\nFORGED","message":"x"}"#, false),
            (
                "notify/whatsapp/inj",
                #"{"id":"inj-4","target":"\#(ChaosRequest.number(5))","message":"x","reply_to":"a/\nFORGED"}"#, false
            ),
            (
                "notify/whatsapp/inj\r\nFORGED",
                #"{"id":"inj-5\u001b[31m","target":"\#(ChaosRequest.number(6))","message":"\u001b[31mred"}"#, false
            ),
        ]
        for (i, p) in payloads.enumerated() {
            requests.append(ChaosRequest(index: i, id: nil, topic: p.0, payload: Array(p.1.utf8), targets: [], valid: false))
        }
        // mosquitto drops a client that publishes to a topic with control characters, so those go one by
        // one from their own short-lived producer; what the broker refuses never reaches kurir.
        let plain = requests.filter { !$0.topic.unicodeScalars.contains { $0.value < 0x20 } }
        var acked = await world.producer.publishAll(plain, timeout: .seconds(30))
        for request in requests where !plain.contains(where: { $0.index == request.index }) {
            let producer = try Producer(port: world.broker.port)
            if await producer.publishAll(
                [ChaosRequest(index: 0, id: nil, topic: request.topic, payload: request.payload, targets: [], valid: false)],
                timeout: .seconds(3)
            ).contains(0) {
                acked.insert(request.index)
            }
            producer.stop()
        }
        f.requests = requests.count
        f.acknowledged = acked.count
        f.notes.append(
            "\(requests.count - acked.count) request(s) with control characters in the topic refused by the broker itself")
        _ = await waitUntil(timeout: .seconds(20)) {
            world.count("SELECT COUNT(*) FROM whatsapp_notifications WHERE status IN ('sent','rejected')") >= acked.count
        }
        try await Task.sleep(for: .seconds(1))
        await world.stopKurir()
        f.delivered = world.count("SELECT COUNT(*) FROM whatsapp_notifications WHERE status = 'sent'")
        f.rejected = world.count("SELECT COUNT(*) FROM whatsapp_notifications WHERE status = 'rejected'")
        let log = world.log()
        let lines = log.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.isEmpty }
        // Every line swift-log writes starts with an ISO 8601 timestamp.
        let foreign = lines.filter { line in
            !(line.first?.isNumber ?? false) || line.contains("FORGED") && !line.hasPrefix("20")
        }
        f.bar(foreign.isEmpty, "\(foreign.count) log line(s) not written by the logger: \(foreign.prefix(2))")
        f.bar(!log.unicodeScalars.contains("\u{1b}"), "an ANSI escape reached the log")
        f.bar(!log.contains("\r"), "a carriage return reached the log")
        f.bar(world.secretLeaks() == 0, "a canary secret leaked")
        f.notes.append("\(lines.count) log lines, \(foreign.count) forged")
    }

    /// Database created with mode 0600; the Docker image runs as a non-root user.
    func fileModes(_ f: inout Figures) async throws {
        let world = try await world("modes")
        try await world.startKurir()
        let requests = (0..<5).map { ChaosRequest.simple($0, scenario: "md") }
        let acked = await world.producer.publishAll(requests, timeout: .seconds(20))
        _ = await waitAllSent(world, acked.count, timeout: .seconds(20))
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let path = world.databasePath + suffix
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
                let mode = attributes[.posixPermissions] as? Int
            else { continue }
            f.bar(mode & 0o077 == 0, "\(path) has mode \(String(mode, radix: 8))")
            f.notes.append("kurir.db\(suffix) mode \(String(mode, radix: 8))")
        }
        await world.stopKurir()
        tally(world, requests, acked: acked, into: &f)
        let dockerfile = (try? String(contentsOfFile: "docker/Dockerfile", encoding: .utf8)) ?? ""
        let user = dockerfile.split(separator: "\n").last { $0.hasPrefix("USER ") }.map(String.init) ?? ""
        f.bar(
            !user.isEmpty && !user.contains("root") && !user.hasPrefix("USER 0"),
            "Dockerfile's last USER is \(user.isEmpty ? "missing" : user)")
        f.notes.append("Dockerfile: \(user)")
    }
}
