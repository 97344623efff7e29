import Foundation
import KurirCore
import Testing

@testable import KurirTestSupport

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

// MARK: - A tiny HTTP/1.1 client over a blocking socket
//
// URLSession is slow and rounds timeouts to seconds on Linux, and curl is not on every
// machine; the fakes need exact control anyway (half-read answers, closed sockets).

/// What came back for one request on a connection.
private enum FakeReply: Sendable {
    case response(status: Int, headers: [String: String], body: [UInt8])
    /// The server closed the connection before a complete answer.
    case closed(received: [UInt8])
    /// The deadline passed before a complete answer.
    case timedOut(received: [UInt8])

    var status: Int? {
        if case .response(let status, _, _) = self { return status }
        return nil
    }

    var bodyText: String {
        if case .response(_, _, let body) = self { return String(decoding: body, as: UTF8.self) }
        return ""
    }

    var json: [String: Any]? {
        guard case .response(_, _, let body) = self else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
    }
}

private func httpRequest(
    _ method: String, _ path: String, headers: [(String, String)] = [], body: String = ""
) -> [UInt8] {
    var text = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    for (name, value) in headers { text += "\(name): \(value)\r\n" }
    text += "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
    return Array(text.utf8)
}

/// Sends each request on one keep-alive connection and reads its answer; stops at the first non-answer.
private func exchange(port: Int, _ requests: [[UInt8]], timeout: Duration = .seconds(5)) async -> [FakeReply] {
    // Blocking socket calls stay off the cooperative pool (two threads on these machines).
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(returning: exchangeBlocking(port: port, requests, timeout: timeout))
        }
    }
}

private func call(_ gateway: FakeGateway, _ request: [UInt8], timeout: Duration = .seconds(5)) async -> FakeReply {
    await exchange(port: gateway.port, [request], timeout: timeout)[0]
}

private func exchangeBlocking(port: Int, _ requests: [[UInt8]], timeout: Duration) -> [FakeReply] {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return [.closed(received: [])] }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else { return [.closed(received: [])] }

    var pending: [UInt8] = []
    var replies: [FakeReply] = []
    for request in requests {
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return replies + [.closed(received: [])] }
            sent += n
        }
        let reply = readReply(fd: fd, pending: &pending, timeout: timeout)
        replies.append(reply)
        guard case .response = reply else { break }
    }
    return replies
}

private func readReply(fd: Int32, pending: inout [UInt8], timeout: Duration) -> FakeReply {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    while true {
        if let reply = parseReply(&pending) { return reply }
        let left = clock.now.duration(to: deadline)
        let leftMs = Int32(max(0, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000))
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if leftMs == 0 || poll(&poller, 1, leftMs) == 0 { return .timedOut(received: pending) }
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { return .closed(received: pending) }
        pending.append(contentsOf: chunk[..<n])
    }
}

/// A complete answer at the front of `buffer` (removed from it), or nil when more bytes are needed.
private func parseReply(_ buffer: inout [UInt8]) -> FakeReply? {
    let separator: [UInt8] = [13, 10, 13, 10]
    guard buffer.count >= 4,
        let end = (0...(buffer.count - 4)).first(where: { Array(buffer[$0..<$0 + 4]) == separator })
    else { return nil }
    let lines = String(decoding: buffer[..<end], as: UTF8.self).components(separatedBy: "\r\n")
    let statusParts = lines[0].split(separator: " ")
    guard statusParts.count >= 2, let status = Int(statusParts[1]) else { return nil }
    var headers: [String: String] = [:]
    for line in lines.dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { continue }
        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    let length = Int(headers["content-length"] ?? "0") ?? 0
    let bodyStart = end + 4
    guard buffer.count >= bodyStart + length else { return nil }
    let body = Array(buffer[bodyStart..<bodyStart + length])
    buffer.removeFirst(bodyStart + length)
    return .response(status: status, headers: headers, body: body)
}

/// A well-formed send request of a provider's dialect.
private func sendRequest(_ provider: Provider, token: String = "tok-123", target: String = "6281234567890") -> [UInt8] {
    switch provider {
    case .fonnte:
        httpRequest(
            "POST", "/fonnte/send",
            headers: [("Authorization", token), ("Content-Type", "application/x-www-form-urlencoded")],
            body: "target=\(target)&message=Halo&countryCode=62")
    case .wablas:
        httpRequest(
            "POST", "/wablas/api/send-message", headers: [("Authorization", token), ("Content-Type", "application/json")],
            body: #"{"phone":"\#(target)","message":"Halo","ref_id":"r-1"}"#)
    case .woowa:
        httpRequest(
            "POST", "/woowa/send_message", headers: [("Content-Type", "application/json")],
            body: #"{"phone_no":"+\#(target)","key":"\#(token)","message":"Halo"}"#)
    }
}

private func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

/// Runs `body` with a fresh gateway and always stops it.
private func withGateway(
    _ behaviours: [Provider: FakeBehaviour] = [:], _ body: (FakeGateway) async throws -> Void
) async throws {
    let gateway = try await FakeGateway.start(port: 0, behaviours: behaviours)
    do {
        try await body(gateway)
    } catch {
        try await gateway.stop()
        throw error
    }
    try await gateway.stop()
}

private func behaviour(_ mode: FakeBehaviour.Mode, _ change: (inout FakeBehaviour) -> Void = { _ in }) -> FakeBehaviour {
    var b = FakeBehaviour()
    b.mode = mode
    change(&b)
    return b
}

// MARK: - Dialects

@Suite("Fake gateways")
struct FakeGatewayTests {
    @Test func fonnteSuccessBodyHasOneIDPerTarget() async throws {
        try await withGateway { gw in
            #expect(gw.url(.fonnte) == "http://127.0.0.1:\(gw.port)/fonnte/send")
            let reply = await call(
                gw,
                httpRequest(
                    "POST", "/fonnte/send", headers: [("Authorization", "tok-f")],
                    body: "target=6281234567890,081298765432&message=Halo+dunia&countryCode=62"))
            #expect(reply.status == 200)
            #expect(reply.bodyText.hasPrefix(#"{"status":true,"detail":"success! message in queue","id":[""#))
            let json = try #require(reply.json)
            #expect(json["status"] as? Bool == true)
            #expect(json["process"] as? String == "pending")
            #expect(json["requestid"] is Int)
            let ids = try #require(json["id"] as? [String])
            #expect(ids.count == 2 && Set(ids).count == 2)
            #expect(json["target"] as? [String] == ["6281234567890", "6281298765432"])

            let again = try #require(await call(gw, sendRequest(.fonnte)).json)
            let moreIDs = try #require(again["id"] as? [String])
            #expect(Set(ids).isDisjoint(with: moreIDs))
            #expect(gw.acceptedCount(.fonnte) == 2)
        }
    }

    @Test func wablasSuccessBodyListsTheMessage() async throws {
        try await withGateway { gw in
            #expect(gw.url(.wablas) == "http://127.0.0.1:\(gw.port)/wablas/api/send-message")
            let reply = await call(
                gw,
                httpRequest(
                    "POST", "/wablas/api/send-message",
                    headers: [("Authorization", "tok.secret"), ("Content-Type", "application/json")],
                    body: #"{"phone":"120363064449269","message":"Site down","isGroup":true,"ref_id":"req-9"}"#))
            #expect(reply.status == 200)
            let json = try #require(reply.json)
            #expect(json["status"] as? Bool == true)
            #expect(json["message"] as? String == "Message is pending and waiting to be processed")
            let data = try #require(json["data"] as? [String: Any])
            let messages = try #require(data["messages"] as? [[String: Any]])
            #expect(messages.count == 1)
            #expect((messages[0]["id"] as? String)?.isEmpty == false)
            #expect(messages[0]["phone"] as? String == "120363064449269")
            #expect(messages[0]["message"] as? String == "Site down")
            #expect(messages[0]["status"] as? String == "pending")
            #expect(messages[0]["ref_id"] as? String == "req-9")
            #expect(gw.requests(.wablas).first?.fields["isGroup"] == "true")
        }
    }

    @Test func woowaSuccessBodiesForNumbersAndGroups() async throws {
        try await withGateway { gw in
            #expect(gw.url(.woowa) == "http://127.0.0.1:\(gw.port)/woowa/send_message")
            let personal = try #require(await call(gw, sendRequest(.woowa)).json)
            #expect(personal["code"] as? Int == 200)
            #expect((personal["query"] as? [String: Any])?["to"] as? String == "+6281234567890")
            let results = try #require(personal["results"] as? [String: Any])
            #expect(results["type_chat"] as? String == "personal")
            #expect(results["message"] as? String == "Halo")
            let firstID = try #require(results["id_message"] as? String)
            #expect(firstID.hasPrefix("WOWA"))
            #expect((results["serialized"] as? String)?.isEmpty == false)

            let group = try #require(
                await call(
                    gw,
                    httpRequest(
                        "POST", "/woowa/send_message_group_id", headers: [("Content-Type", "application/json")],
                        body: #"{"group_id":"120363043218123456@g.us","key":"k","message":"Alarm"}"#)
                ).json)
            let groupResults = try #require(group["results"] as? [String: Any])
            #expect(groupResults["type_chat"] as? String == "group")
            #expect(groupResults["id_message"] as? String != firstID)
            #expect(gw.acceptedCount(.woowa) == 2)
        }
    }

    @Test func missingFieldsAreRefusedLikeTheProvider() async throws {
        try await withGateway { gw in
            let fonnte = await call(gw, httpRequest("POST", "/fonnte/send", headers: [("Authorization", "t")], body: "message=x"))
            #expect(fonnte.status == 200)
            #expect(fonnte.json?["status"] as? Bool == false)
            #expect(fonnte.json?["reason"] as? String == "target invalid")
            let woowa = await call(gw, httpRequest("POST", "/woowa/send_message", body: #"{"key":"k","message":"x"}"#))
            #expect(woowa.json?["code"] as? Int == 400)
            #expect(gw.stats()[.fonnte]?.refused == 1)
            #expect(gw.acceptedCount() == 0)
        }
    }

    // MARK: Failures

    @Test(arguments: Provider.allCases)
    func refusalCarriesTheReasonWithHTTP200(_ provider: Provider) async throws {
        try await withGateway([provider: behaviour(.refuse) { $0.reason = "device disconnected" }]) { gw in
            let reply = await call(gw, sendRequest(provider))
            #expect(reply.status == 200)
            let json = try #require(reply.json)
            switch provider {
            case .fonnte:
                #expect(json["status"] as? Bool == false)
                #expect(json["reason"] as? String == "device disconnected")
            case .wablas:
                #expect(json["status"] as? Bool == false)
                #expect(json["message"] as? String == "device disconnected")
            case .woowa:
                #expect(json["code"] as? Int == 400)
                #expect(json["message"] as? String == "device disconnected")
            }
            #expect(gw.acceptedCount() == 0)
            #expect(
                gw.stats()[provider]
                    == {
                        var s = FakeGatewayStats(); s.received = 1; s.refused = 1; return s
                    }())
            #expect(gw.requests(provider).first?.answeredAs == .refuse)
        }
    }

    @Test(arguments: [400, 500])
    func wablasRefusalWithErrorStatusKeepsTheBody(_ status: Int) async throws {
        try await withGateway([
            .wablas: behaviour(.refuse) {
                $0.reason = "device not found"; $0.httpStatus = status
            }
        ]) { gw in
            let reply = await call(gw, sendRequest(.wablas))
            #expect(reply.status == status)
            #expect(reply.bodyText == #"{"status":false,"message":"device not found"}"#)
        }
    }

    @Test func httpErrorAnswersAPlainReasonPhrase() async throws {
        try await withGateway([.fonnte: behaviour(.httpError), .woowa: behaviour(.httpError) { $0.httpStatus = 503 }]) { gw in
            let fonnte = await call(gw, sendRequest(.fonnte))
            #expect(fonnte.status == 500)
            #expect(fonnte.bodyText == "Internal Server Error")
            let woowa = await call(gw, sendRequest(.woowa))
            #expect(woowa.status == 503)
            #expect(woowa.bodyText == "Service Unavailable")
            #expect(gw.stats()[.fonnte]?.refused == 0)
        }
    }

    @Test(arguments: Provider.allCases)
    func wrongTokenGetsTheDialectsInvalidTokenAnswer(_ provider: Provider) async throws {
        try await withGateway([provider: behaviour(.succeed) { $0.expectedToken = "right-token" }]) { gw in
            let wrong = await call(gw, sendRequest(provider, token: "wrong-token"))
            #expect(wrong.status == 200)
            switch provider {
            case .fonnte: #expect(wrong.bodyText == #"{"status":false,"reason":"token invalid"}"#)
            case .wablas: #expect(wrong.bodyText == #"{"status":false,"message":"token invalid or device expired"}"#)
            case .woowa: #expect(wrong.bodyText == #"{"code":401,"message":"invalid key"}"#)
            }
            let right = await call(gw, sendRequest(provider, token: "right-token"))
            #expect(right.status == 200)
            #expect(right.bodyText.contains("true") || right.bodyText.contains(#""code":200"#))
            #expect(gw.requests(provider).map(\.accepted) == [false, true])
            #expect(gw.requests(provider).first?.answeredAs == .refuse)
        }
    }

    @Test func wablasTokenWithSecret() async throws {
        try await withGateway([.wablas: behaviour(.succeed) { $0.expectedToken = "tok.sec" }]) { gw in
            #expect(await call(gw, sendRequest(.wablas, token: "tok.sec")).json?["status"] as? Bool == true)
            #expect(await call(gw, sendRequest(.wablas, token: "tok")).json?["status"] as? Bool == false)
            #expect(await call(gw, sendRequest(.wablas, token: "tok.other")).json?["status"] as? Bool == false)
        }
        // An old account's bare token also accepts any secret after it.
        try await withGateway([.wablas: behaviour(.succeed) { $0.expectedToken = "tok" }]) { gw in
            #expect(await call(gw, sendRequest(.wablas, token: "tok")).json?["status"] as? Bool == true)
            #expect(await call(gw, sendRequest(.wablas, token: "tok.any")).json?["status"] as? Bool == true)
            #expect(await call(gw, sendRequest(.wablas, token: "tokx")).json?["status"] as? Bool == false)
        }
    }

    @Test func garbageAndEmptyBodiesWithHTTP200() async throws {
        try await withGateway([.fonnte: behaviour(.garbage), .wablas: behaviour(.empty)]) { gw in
            let garbage = await call(gw, sendRequest(.fonnte))
            #expect(garbage.status == 200)
            #expect(garbage.bodyText == "<html>oops</html>")
            let empty = await call(gw, sendRequest(.wablas))
            #expect(empty.status == 200)
            guard case .response(_, let headers, let body) = empty else {
                Issue.record("no answer: \(empty)")
                return
            }
            #expect(body.isEmpty)
            #expect(headers["content-length"] == "0")
            #expect(gw.acceptedCount() == 0)
        }
    }

    @Test func closeConnectionDropsTheSocketAfterReadingTheRequest() async throws {
        try await withGateway([.fonnte: behaviour(.closeConnection)]) { gw in
            let reply = await call(gw, sendRequest(.fonnte))
            guard case .closed(let received) = reply else {
                Issue.record("expected a closed connection, got \(reply)")
                return
            }
            #expect(received.isEmpty)
            #expect(gw.requests(.fonnte).map(\.answeredAs) == [.closeConnection])
        }
    }

    @Test func neverAnswerHoldsTheRequestUntilTheClientGivesUp() async throws {
        try await withGateway([.woowa: behaviour(.neverAnswer)]) { gw in
            let started = ContinuousClock.now
            let reply = await call(gw, sendRequest(.woowa), timeout: .milliseconds(400))
            guard case .timedOut(let received) = reply else {
                Issue.record("expected a client timeout, got \(reply)")
                return
            }
            #expect(received.isEmpty)
            #expect(ContinuousClock.now - started >= .milliseconds(400))
            #expect(gw.requests(.woowa).map(\.answeredAs) == [.neverAnswer])
        }
    }

    @Test func dripSendsHeadersAtOnceAndTheBodyOneBytePerSecond() async throws {
        try await withGateway([.fonnte: behaviour(.drip)]) { gw in
            let reply = await call(gw, sendRequest(.fonnte), timeout: .milliseconds(1_500))
            guard case .timedOut(let received) = reply else {
                Issue.record("expected the body to be incomplete, got \(reply)")
                return
            }
            let text = String(decoding: received, as: UTF8.self)
            #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
            let parts = text.components(separatedBy: "\r\n\r\n")
            #expect(parts.count == 2)
            let length = parts[0].components(separatedBy: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) }
            let dripped = parts.count == 2 ? parts[1].utf8.count : -1
            #expect((length ?? 0) > 100)
            #expect(dripped >= 0 && dripped <= 2)
            #expect(gw.acceptedCount(.fonnte) == 1)
        }
    }

    @Test func latencyDelaysTheAnswer() async throws {
        try await withGateway([.wablas: behaviour(.succeed) { $0.latencyMs = 300 }]) { gw in
            let started = ContinuousClock.now
            let reply = await call(gw, sendRequest(.wablas))
            #expect(reply.status == 200)
            #expect(ContinuousClock.now - started >= .milliseconds(300))
        }
    }

    @Test func failureFractionFailsExactlyThatShareOnAKeepAliveConnection() async throws {
        try await withGateway([
            .fonnte: behaviour(.succeed) {
                $0.failureFraction = 0.25; $0.reason = "insufficient quota"
            }
        ]) { gw in
            let replies = await exchange(port: gw.port, Array(repeating: sendRequest(.fonnte), count: 20))
            #expect(replies.count == 20)
            let refused = replies.filter { $0.json?["status"] as? Bool == false }
            #expect(refused.count == 5)
            #expect(refused.allSatisfy { $0.json?["reason"] as? String == "insufficient quota" })
            #expect(gw.acceptedCount(.fonnte) == 15)
            // Deterministic: every fourth request.
            #expect(gw.requests(.fonnte).enumerated().filter { !$0.element.accepted }.map(\.offset) == [3, 7, 11, 15, 19])
        }
    }

    @Test func outageWindowAppliesOnlyWhileItLasts() async throws {
        try await withGateway { gw in
            let now = nowMs()
            gw.setBehaviour(
                behaviour(.succeed) {
                    $0.outageStartMs = now - 1_000; $0.outageEndMs = now + 60_000; $0.failureMode = .httpError
                },
                for: .wablas)
            #expect(await call(gw, sendRequest(.wablas)).status == 500)
            gw.setBehaviour(
                behaviour(.succeed) {
                    $0.outageStartMs = now - 60_000; $0.outageEndMs = now - 1_000; $0.failureMode = .httpError
                },
                for: .wablas)
            #expect(await call(gw, sendRequest(.wablas)).json?["status"] as? Bool == true)
            gw.setBehaviour(behaviour(.succeed) { $0.outageStartMs = now - 1_000 }, for: .wablas)
            #expect(await call(gw, sendRequest(.wablas)).json?["status"] as? Bool == false)
        }
    }

    // MARK: Recording

    @Test func recordsHeadersBodyAndFieldsFromFormAndJSON() async throws {
        try await withGateway { gw in
            let before = nowMs()
            _ = await call(
                gw,
                httpRequest(
                    "POST", "/fonnte/send?debug=1",
                    headers: [
                        ("Authorization", "tok-f"), ("Content-Type", "application/x-www-form-urlencoded"), ("X-Trace", "abc"),
                    ],
                    body: "target=120363043218123456%40g.us&message=Tom+%26+Jerry%0Aline2&countryCode=0"))
            _ = await call(
                gw,
                httpRequest(
                    "POST", "/wablas/api/send-message", headers: [("Authorization", "w.s")],
                    body: #"{"phone":"6281234567890","message":"hé \"q\"","isGroup":false,"priority":5,"extra":{"a":[1]}}"#))
            let fonnte = try #require(gw.requests(.fonnte).first)
            #expect(fonnte.method == "POST")
            #expect(fonnte.path == "/fonnte/send")
            #expect(fonnte.header("authorization") == "tok-f")
            #expect(fonnte.header("x-trace") == "abc")
            #expect(fonnte.headers.contains(HeaderField(name: "X-Trace", value: "abc")))
            #expect(fonnte.fields == ["target": "120363043218123456@g.us", "message": "Tom & Jerry\nline2", "countryCode": "0"])
            #expect(fonnte.bodyText.hasPrefix("target=120363043218123456%40g.us"))
            #expect(fonnte.receivedAtMs >= before && fonnte.receivedAtMs <= nowMs())

            let wablas = try #require(gw.requests(.wablas).first)
            #expect(wablas.fields["phone"] == "6281234567890")
            #expect(wablas.fields["message"] == #"hé "q""#)
            #expect(wablas.fields["isGroup"] == "false")
            #expect(wablas.fields["priority"] == "5")
            #expect(wablas.fields["extra"] == #"{"a":[1]}"#)
            #expect(gw.requests().map(\.provider) == [.fonnte, .wablas])
            #expect(!wablas.description.contains("w.s"))
        }
    }

    @Test func waitForSeesRequestsAndGivesUpAtTheDeadline() async throws {
        try await withGateway { gw in
            let started = ContinuousClock.now
            #expect(await gw.waitFor(timeout: .milliseconds(150)) { !$0.isEmpty } == false)
            #expect(ContinuousClock.now - started >= .milliseconds(150))
            let port = gw.port
            async let reply = exchange(port: port, [sendRequest(.woowa)])
            #expect(await gw.waitFor(timeout: .seconds(5)) { $0.contains { $0.provider == .woowa && $0.accepted } })
            _ = await reply
        }
    }

    // MARK: Control endpoints

    @Test func controlEndpointSetsAndResetsBehaviour() async throws {
        try await withGateway { gw in
            let set = await call(
                gw,
                httpRequest("POST", "/_control/wablas", body: #"{"mode":"refuse","reason":"device not found","httpStatus":500}"#))
            #expect(set.status == 200)
            #expect(gw.behaviour(for: .wablas).mode == .refuse)
            #expect(gw.behaviour(for: .wablas).latencyMs == 0)
            let refused = await call(gw, sendRequest(.wablas))
            #expect(refused.status == 500)
            #expect(refused.json?["message"] as? String == "device not found")
            #expect(await call(gw, sendRequest(.fonnte)).json?["status"] as? Bool == true)

            #expect(await call(gw, httpRequest("POST", "/_control/nope", body: "{}")).status == 404)
            #expect(await call(gw, httpRequest("POST", "/_control/fonnte", body: #"{"mode":"sideways"}"#)).status == 400)
            #expect(await call(gw, httpRequest("POST", "/_control/fonnte", body: #"{"latency":5}"#)).status == 400)
            #expect(await call(gw, httpRequest("GET", "/fonnte/send")).status == 405)
            #expect(await call(gw, httpRequest("POST", "/elsewhere")).status == 404)

            #expect(await call(gw, httpRequest("POST", "/_control/reset")).status == 200)
            #expect(gw.requests().isEmpty)
            #expect(gw.behaviour(for: .wablas) == FakeBehaviour())
            #expect(await call(gw, sendRequest(.wablas)).json?["status"] as? Bool == true)
        }
    }

    @Test func controlOverridesKeepTheStartingTokenAndResetRestoresIt() async throws {
        let start = behaviour(.succeed) {
            $0.expectedToken = "start-token"; $0.latencyMs = 1
        }
        try await withGateway([.fonnte: start]) { gw in
            _ = await call(gw, httpRequest("POST", "/_control/fonnte", body: #"{"mode":"refuse","reason":"quota"}"#))
            #expect(gw.behaviour(for: .fonnte).expectedToken == "start-token")
            #expect(await call(gw, sendRequest(.fonnte, token: "x")).json?["reason"] as? String == "token invalid")
            #expect(await call(gw, sendRequest(.fonnte, token: "start-token")).json?["reason"] as? String == "quota")
            _ = await call(gw, httpRequest("POST", "/_control/fonnte", body: #"{"expectedToken":null}"#))
            #expect(gw.behaviour(for: .fonnte).expectedToken == nil)
            gw.reset()
            #expect(gw.behaviour(for: .fonnte) == start)
        }
    }

    @Test func requestsEndpointMasksTokens() async throws {
        try await withGateway { gw in
            _ = await call(gw, sendRequest(.fonnte, token: "fonnte-SECRET-1"))
            _ = await call(gw, sendRequest(.wablas, token: "wablasTOKEN.wablasSECRET"))
            _ = await call(gw, sendRequest(.woowa, token: "woowa-KEY-42"))
            let all = await call(gw, httpRequest("GET", "/_requests"))
            #expect(all.status == 200)
            for secret in ["fonnte-SECRET-1", "wablasTOKEN", "wablasSECRET", "woowa-KEY-42"] {
                #expect(!all.bodyText.contains(secret), "\(secret) leaked")
            }
            #expect(all.bodyText.contains("****"))
            guard case .response(_, _, let body) = all else { return }
            let list = try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [[String: Any]])
            #expect(list.count == 3)

            let woowa = await call(gw, httpRequest("GET", "/_requests?provider=woowa"))
            guard case .response(_, _, let woowaBody) = woowa else { return }
            let woowaList = try #require(try JSONSerialization.jsonObject(with: Data(woowaBody)) as? [[String: Any]])
            #expect(woowaList.count == 1)
            let entry = try #require(woowaList.first)
            #expect(entry["provider"] as? String == "woowa")
            #expect(entry["accepted"] as? Bool == true)
            #expect((entry["fields"] as? [String: Any])?["key"] as? String == "****")
            #expect((entry["fields"] as? [String: Any])?["phone_no"] as? String == "+6281234567890")
            #expect(await call(gw, httpRequest("GET", "/_requests?provider=nope")).status == 404)
            // The in-process record keeps the token so tests can check what a client sent.
            #expect(gw.requests(.fonnte).first?.header("Authorization") == "fonnte-SECRET-1")
        }
    }

    @Test func statsEndpointCountsPerProvider() async throws {
        try await withGateway([.wablas: behaviour(.refuse), .woowa: behaviour(.garbage)]) { gw in
            _ = await exchange(
                port: gw.port, [sendRequest(.fonnte), sendRequest(.fonnte), sendRequest(.wablas), sendRequest(.woowa)])
            let stats = try #require(await call(gw, httpRequest("GET", "/_stats")).json)
            #expect(stats["fonnte"] as? [String: Int] == ["received": 2, "accepted": 2, "refused": 0])
            #expect(stats["wablas"] as? [String: Int] == ["received": 1, "accepted": 0, "refused": 1])
            #expect(stats["woowa"] as? [String: Int] == ["received": 1, "accepted": 0, "refused": 0])
        }
    }

    @Test func modeSpecsFromTheCommandLine() {
        #expect(FakeBehaviour(modeSpec: "neverAnswer")?.mode == .neverAnswer)
        #expect(FakeBehaviour(modeSpec: "refuse:invalid group id")?.reason == "invalid group id")
        #expect(FakeBehaviour(modeSpec: "httpError:502")?.httpStatus == 502)
        #expect(FakeBehaviour(modeSpec: "httpError:abc") == nil)
        #expect(FakeBehaviour(modeSpec: "succeed:x") == nil)
        #expect(FakeBehaviour(modeSpec: "sideways") == nil)
    }

    /// The fake decodes forms on bytes; it must read them exactly as Foundation's decoding did.
    @Test(arguments: [
        "Tom+%26+Jerry%0Aline2", "120363043218123456%40g.us", "a%2", "100%", "%zz+x", "%E2%82%AC+euro", "%FF%FE",
        "plain", "", "++", "%2b%2B",
    ])
    func formComponentsDecodeLikeFoundation(_ component: String) {
        let spaced = component.replacingOccurrences(of: "+", with: " ")
        let expected = spaced.removingPercentEncoding ?? spaced
        #expect(FakeFields.decodeComponent(Substring(component).utf8) == expected)
    }

    @Test(arguments: [" 0812 ", "\t0812\u{00A0}", "\u{3000}", " ", "", "a b", "\n0812"])
    func trimmingMatchesFoundationsWhitespaceSet(_ text: String) {
        #expect(FakeDialect.trimmed(Substring(text)) == text.trimmingCharacters(in: .whitespaces))
    }

    @Test func stopClosesConnectionsLeftOpenAndIsIdempotent() async throws {
        let gw = try await FakeGateway.start(behaviours: [.fonnte: behaviour(.neverAnswer)])
        let port = gw.port
        async let reply = exchange(port: port, [sendRequest(.fonnte)], timeout: .seconds(10))
        #expect(await gw.waitFor(timeout: .seconds(5)) { !$0.isEmpty })
        try await gw.stop()
        try await gw.stop()
        guard case .closed = await reply[0] else {
            Issue.record("the held connection was not closed by stop()")
            return
        }
    }
}

// MARK: - Child processes and the executable

@Suite("Child processes")
struct ChildProcessTests {
    private func logPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("kurir-child-\(UUID().uuidString).log").path
    }

    @Test func exitStatusOutputAndExactEnvironment() async throws {
        let log = logPath()
        defer { try? FileManager.default.removeItem(atPath: log) }
        let child = try ChildProcess.launch(
            executable: "/bin/sh", arguments: ["-c", "echo out-$GREETING; echo err >&2; /usr/bin/env; exit 3"],
            environment: ["GREETING": "halo"], logPath: log)
        #expect(await child.waitForExit(timeout: .seconds(10)) == 3)
        #expect(!child.isRunning)
        let output = child.output()
        #expect(output.contains("out-halo"))
        #expect(output.contains("err"))
        let names = Set(
            output.split(separator: "\n").compactMap { line -> String? in
                guard let eq = line.firstIndex(of: "=") else { return nil }
                return String(line[..<eq])
            })
        // sh itself may add PWD, SHLVL and _.
        #expect(names.subtracting(["GREETING", "PATH", "HOME", "PWD", "SHLVL", "_"]).isEmpty, "\(names)")
        #expect(names.contains("GREETING"))
    }

    @Test func signalsAndTimeouts() async throws {
        let log = logPath()
        defer { try? FileManager.default.removeItem(atPath: log) }
        let child = try ChildProcess.launch(
            executable: "/bin/sh", arguments: ["-c", "echo ready; exec sleep 30"], environment: [:], logPath: log,
            currentDirectory: "/")
        #expect(await child.waitForOutput(containing: "ready", timeout: .seconds(10)))
        #expect(await child.waitForExit(timeout: .milliseconds(100)) == nil)
        #expect(child.isRunning)
        child.signal(SIGTERM)
        #expect(await child.waitForExit(timeout: .seconds(10)) == 128 + SIGTERM)

        let second = try ChildProcess.launch(
            executable: "/bin/sh", arguments: ["-c", "exec sleep 30"], environment: [:], logPath: log)
        second.kill9()
        #expect(await second.waitForExit(timeout: .seconds(10)) == 128 + SIGKILL)
        #expect(await second.waitForOutput(containing: "never printed", timeout: .seconds(5)) == false)
    }

    @Test func launchingAMissingExecutableThrows() {
        #expect(throws: ChildProcessError.self) {
            try ChildProcess.launch(executable: "/nonexistent/kurir", arguments: [], environment: [:], logPath: logPath())
        }
    }

    @Test func fakeGatewayExecutableServesAndStopsOnSIGTERM() async throws {
        let path = builtProductPath("kurir-fake-gateway")
        try #require(
            FileManager.default.isExecutableFile(atPath: path),
            "\(path) is missing: run `swift build --product kurir-fake-gateway` or set KURIR_BIN_DIR")
        let log = logPath()
        defer { try? FileManager.default.removeItem(atPath: log) }
        let child = try ChildProcess.launch(
            executable: path,
            arguments: ["--port", "0", "--fonnte-token", "exe-token", "--fonnte", "refuse:quota habis", "--latency-ms", "1"],
            environment: [:], logPath: log)
        defer { child.kill9() }
        #expect(await child.waitForOutput(containing: "\n", timeout: .seconds(20)))
        let line = child.output()
        #expect(line.hasPrefix("kurir-fake-gateway listening on 127.0.0.1:"))
        let port = try #require(Int(line.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":").last ?? ""))

        let replies = await exchange(
            port: port,
            [sendRequest(.fonnte, token: "exe-token"), sendRequest(.fonnte, token: "bad"), httpRequest("GET", "/_stats")])
        #expect(replies.first?.json?["reason"] as? String == "quota habis")
        #expect(replies.dropFirst().first?.json?["reason"] as? String == "token invalid")
        #expect(replies.last?.bodyText.contains(#""fonnte":{"received":2,"accepted":0,"refused":2}"#) == true)

        child.signal(SIGTERM)
        #expect(await child.waitForExit(timeout: .seconds(10)) == 0)
        #expect(child.output().split(separator: "\n").count == 1)
        #expect(!child.output().contains("exe-token"))
    }
}
