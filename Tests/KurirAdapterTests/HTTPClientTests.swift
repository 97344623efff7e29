import Foundation
import KurirHTTP
import Testing

/// curl_global_init once per test process, before the first client (a lazy global runs once).
private let curlReady: Void = HTTPGlobal.initialize()

private func makeClient(maxConcurrent: Int = 64, maxBodyBytes: Int = 65_536) throws -> HTTPClient {
    _ = curlReady
    return try HTTPClient(maxConcurrent: maxConcurrent, maxBodyBytes: maxBodyBytes)
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
private func waitUntil(timeout: Duration = .seconds(5), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// The name of the thread running the caller, as the kernel has it (`top -H`).
private func currentThreadName() -> String {
    let comm = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
    return comm.trimmingCharacters(in: .whitespacesAndNewlines)
}

@Suite("HTTPClient")
struct HTTPClientTests {
    @Test("a 200 answer comes back with its body")
    func answered200() async throws {
        let server = try HTTPTestServer(.respond(status: 200, body: Array(#"{"status":true}"#.utf8)))
        defer { server.stop() }
        let client = try makeClient()
        let (response, elapsed) = await client.post(HTTPRequest(url: server.url, body: Array("x=1".utf8)))
        #expect(response == .answered(status: 200, body: Array(#"{"status":true}"#.utf8), bodyTruncated: false))
        #expect(elapsed > .zero)
        #expect(elapsed < .seconds(5))
    }

    @Test("the server receives the headers and the body exactly, and no Expect")
    func requestArrivesExactly() async throws {
        let server = try HTTPTestServer(.respond(status: 200, body: []))
        defer { server.stop() }
        let client = try makeClient()
        // Every byte value, NULs included, and large enough that curl would otherwise ask for 100-continue.
        let body = (0..<(1_100_000)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let request = HTTPRequest(
            url: server.url + "?q=1",
            headers: [
                (name: "Authorization", value: "tok-3f9a secret"), (name: "Content-Type", value: "application/json"),
                (name: "X-Empty", value: ""), (name: "X-Unicode", value: "héllo"),
            ],
            body: body)
        let (response, _) = await client.post(request)
        #expect(response == .answered(status: 200, body: [], bodyTruncated: false))
        let received = try #require(server.received.first)
        #expect(server.received.count == 1)
        #expect(received.method == "POST")
        #expect(received.target == "/send?q=1")
        #expect(received.values("Authorization") == ["tok-3f9a secret"])
        #expect(received.values("Content-Type") == ["application/json"])
        #expect(received.values("X-Empty") == [""])
        #expect(received.values("X-Unicode") == ["héllo"])
        #expect(received.values("Content-Length") == ["\(body.count)"])
        #expect(received.values("Expect").isEmpty)
        #expect(received.body == body)
    }

    @Test("an empty body is sent as Content-Length 0")
    func emptyBody() async throws {
        let server = try HTTPTestServer(.respond(status: 204, body: []))
        defer { server.stop() }
        let client = try makeClient()
        let (response, _) = await client.post(HTTPRequest(url: server.url))
        #expect(response == .answered(status: 204, body: [], bodyTruncated: false))
        #expect(server.received.first?.values("Content-Length") == ["0"])
    }

    @Test("a 500 is passed through as an answer")
    func serverError() async throws {
        let server = try HTTPTestServer(.respond(status: 500, body: Array("oops".utf8)))
        defer { server.stop() }
        let client = try makeClient()
        let (response, _) = await client.post(HTTPRequest(url: server.url))
        #expect(response == .answered(status: 500, body: Array("oops".utf8), bodyTruncated: false))
    }

    @Test("a server that never answers ends as noAnswer timeout, on time")
    func neverAnswers() async throws {
        let server = try HTTPTestServer(.neverAnswer)
        defer { server.stop() }
        let client = try makeClient()
        let (response, elapsed) = await client.post(HTTPRequest(url: server.url, timeout: .seconds(1)))
        #expect(response == .noAnswer(reason: "timeout"))
        #expect(elapsed >= .milliseconds(900))
        #expect(elapsed < .seconds(4))
    }

    @Test("a server dripping one byte per 200 ms is cut at the whole-request timeout")
    func drip() async throws {
        let server = try HTTPTestServer(.drip(interval: .milliseconds(200)))
        defer { server.stop() }
        let client = try makeClient()
        let (response, elapsed) = await client.post(HTTPRequest(url: server.url, timeout: .seconds(1)))
        #expect(response == .noAnswer(reason: "timeout"))
        #expect(elapsed < .seconds(4))
    }

    @Test("a connection closed after the request is noAnswer")
    func closedAfterRequest() async throws {
        let server = try HTTPTestServer(.closeAfterRequest)
        defer { server.stop() }
        let client = try makeClient()
        let (response, _) = await client.post(HTTPRequest(url: server.url, body: Array("x".utf8)))
        #expect(response == .noAnswer(reason: "empty reply"))
        #expect(server.received.count >= 1)
    }

    /// Found by `make chaos`: curl re-sends a request by itself when a reused connection dies before any
    /// answer byte, and the gateway then had the message twice within one attempt.
    @Test("a reused connection that dies after the request is noAnswer, and the request is not sent again")
    func reusedConnectionDiesAfterRequest() async throws {
        let server = try HTTPTestServer(.answerOnceThenHangUp)
        defer { server.stop() }
        let client = try makeClient()
        let (first, _) = await client.post(HTTPRequest(url: server.url, body: Array("one".utf8)))
        #expect(first == .answered(status: 200, body: Array("ok".utf8), bodyTruncated: false))
        let (second, _) = await client.post(HTTPRequest(url: server.url, body: Array("two".utf8)))
        #expect(second == .noAnswer(reason: "connection closed after the request was sent"))
        #expect(server.received.map(\.body) == [Array("one".utf8), Array("two".utf8)])
    }

    @Test(
        "an answer cut short or not HTTP at all is noAnswer",
        arguments: [
            ("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"status\":", "incomplete answer"),
            ("hello, this is not HTTP\r\n\r\n", "malformed answer"),
        ])
    func brokenAnswer(answer: String, reason: String) async throws {
        let server = try HTTPTestServer(.rawAnswer(Array(answer.utf8)))
        defer { server.stop() }
        let client = try makeClient()
        let (response, _) = await client.post(HTTPRequest(url: server.url, body: Array("x".utf8)))
        #expect(response == .noAnswer(reason: reason))
    }

    @Test("a port with nothing listening is notSent: connection refused")
    func nothingListening() async throws {
        let refusing = try RefusingPort()
        let client = try makeClient()
        let (response, elapsed) = await client.post(HTTPRequest(url: "http://127.0.0.1:\(refusing.port)/send"))
        #expect(response == .notSent(reason: "connection refused"))
        #expect(elapsed < .seconds(4))
    }

    @Test("a TLS handshake that gets no answer is notSent: connect timeout")
    func tlsHandshakeTimeout() async throws {
        let server = try HTTPTestServer(.neverAnswer)  // reads the ClientHello, never answers it
        defer { server.stop() }
        let client = try makeClient()
        let (response, elapsed) = await client.post(
            HTTPRequest(
                url: "https://127.0.0.1:\(server.port)/send", timeout: .seconds(10), connectTimeout: .seconds(1)))
        #expect(response == .notSent(reason: "connect timeout"))
        #expect(elapsed < .seconds(4))
    }

    @Test("a TLS failure is notSent with a TLS reason")
    func tlsFailure() async throws {
        let server = try HTTPTestServer(
            .sendOnConnect(Array("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".utf8)))
        defer { server.stop() }
        let client = try makeClient()
        let (response, _) = await client.post(HTTPRequest(url: "https://127.0.0.1:\(server.port)/send"))
        guard case .notSent(let reason) = response else {
            Issue.record("expected notSent, got \(response)")
            return
        }
        #expect(reason.hasPrefix("TLS: "), "\(reason)")
        #expect(!reason.contains("\n"))
    }

    @Test("reasons never carry URL credentials")
    func noCredentialsInReasons() async throws {
        let refusing = try RefusingPort()
        let client = try makeClient()
        let urls = [
            "http://kurir:hunter2secret@127.0.0.1:\(refusing.port)/send",
            "ftp://kurir:hunter2secret@127.0.0.1/",
            "http://kurir:hunter2secret@[::1/",
        ]
        for url in urls {
            let (response, _) = await client.post(
                HTTPRequest(url: url, headers: [(name: "Authorization", value: "hunter2secret")]))
            guard case .notSent(let reason) = response else {
                Issue.record("expected notSent for \(url), got \(response)")
                continue
            }
            #expect(!reason.contains("hunter2"))
            #expect(!reason.contains("\n"))
        }
    }

    @Test("a redirect is not followed")
    func redirectNotFollowed() async throws {
        let server = try HTTPTestServer(.respond(status: 301, body: [], headers: ["Location: /elsewhere"]))
        defer { server.stop() }
        let client = try makeClient()
        let (response, _) = await client.post(HTTPRequest(url: server.url))
        #expect(response == .answered(status: 301, body: [], bodyTruncated: false))
        #expect(server.received.map(\.target) == ["/send"])
    }

    @Test("a body over the limit is cut and marked truncated; one exactly at the limit is not")
    func truncation() async throws {
        let big = (0..<100_000).map { UInt8(truncatingIfNeeded: $0) }
        let server = try HTTPTestServer(.respond(status: 200, body: big))
        defer { server.stop() }
        let client = try makeClient()
        let (response, _) = await client.post(HTTPRequest(url: server.url))
        #expect(response == .answered(status: 200, body: Array(big.prefix(65_536)), bodyTruncated: true))

        let exact = Array(big.prefix(1000))
        let exactServer = try HTTPTestServer(.respond(status: 202, body: exact))
        defer { exactServer.stop() }
        let small = try makeClient(maxBodyBytes: 1000)
        let (exactResponse, _) = await small.post(HTTPRequest(url: exactServer.url))
        #expect(exactResponse == .answered(status: 202, body: exact, bodyTruncated: false))
    }

    @Test(
        "URLs that are not http(s) or not URLs are notSent",
        arguments: [
            "file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/", "not a url", "", "http://[::1/",
        ])
    func notHTTP(url: String) async throws {
        let client = try makeClient()
        let (response, _) = await client.post(HTTPRequest(url: url))
        guard case .notSent(let reason) = response else {
            Issue.record("expected notSent, got \(response)")
            return
        }
        #expect(!reason.isEmpty)
    }

    @Test("a header with a line break is refused before anything is sent")
    func headerInjection() async throws {
        let server = try HTTPTestServer(.respond(status: 200, body: []))
        defer { server.stop() }
        let client = try makeClient()
        let (response, _) = await client.post(
            HTTPRequest(url: server.url, headers: [(name: "Authorization", value: "tok\r\nX-Evil: 1")]))
        #expect(response == .notSent(reason: "invalid header"))
        let (bad, _) = await client.post(HTTPRequest(url: server.url, headers: [(name: "Bad Name", value: "v")]))
        #expect(bad == .notSent(reason: "invalid header"))
        #expect(server.received.isEmpty)
    }

    @Test("sequential posts reuse one keep-alive connection")
    func keepAlive() async throws {
        let server = try HTTPTestServer(.respond(status: 200, body: Array("ok".utf8)))
        defer { server.stop() }
        let client = try makeClient()
        for _ in 0..<5 {
            let (response, _) = await client.post(HTTPRequest(url: server.url, body: Array("x".utf8)))
            #expect(response == .answered(status: 200, body: Array("ok".utf8), bodyTruncated: false))
        }
        #expect(server.received.count == 5)
        #expect(server.connectionCount == 1)
    }

    /// One handle (maxConcurrent 1) keeps its options between requests of the same URL, headers and
    /// timeouts: any other request must go out with its own, never with a header of the one before.
    @Test("a handle reused for requests of other URLs and headers sends each with its own")
    func reusedHandleSendsEachRequestsOwnShape() async throws {
        let server = try HTTPTestServer(.respond(status: 200, body: Array("ok".utf8)))
        defer { server.stop() }
        let client = try makeClient(maxConcurrent: 1)
        let first = [(name: "Authorization", value: "token-a"), (name: "X-Only-First", value: "1")]
        let requests = [
            HTTPRequest(url: server.url + "?a", headers: first, body: Array("one".utf8)),
            HTTPRequest(url: server.url + "?a", headers: first, body: Array("two".utf8)),
            HTTPRequest(url: server.url + "?a", headers: [(name: "Authorization", value: "token-b")], body: Array("3".utf8)),
            HTTPRequest(url: server.url + "?b", headers: [(name: "Authorization", value: "token-b")], body: []),
            HTTPRequest(url: server.url + "?b", headers: [(name: "Authorization", value: "token-b")], body: Array("5".utf8)),
            HTTPRequest(url: server.url + "?a", headers: first, body: Array("six".utf8)),
        ]
        for request in requests {
            let (response, _) = await client.post(request)
            #expect(response == .answered(status: 200, body: Array("ok".utf8), bodyTruncated: false))
        }
        let received = server.received
        #expect(received.map(\.target) == ["/send?a", "/send?a", "/send?a", "/send?b", "/send?b", "/send?a"])
        #expect(
            received.map { $0.values("Authorization") } == [
                ["token-a"], ["token-a"], ["token-b"], ["token-b"], ["token-b"], ["token-a"],
            ])
        #expect(received.map { $0.values("X-Only-First") } == [["1"], ["1"], [], [], [], ["1"]])
        #expect(received.map { String(decoding: $0.body, as: UTF8.self) } == ["one", "two", "3", "", "5", "six"])
        #expect(received.map { $0.values("Content-Length") } == [["3"], ["3"], ["1"], ["0"], ["1"], ["3"]])
        #expect(server.connectionCount == 1)
    }

    @Test(
        "a task preferring the client's executor runs on the curl thread, and on other threads after shutdown",
        .timeLimit(.minutes(1)))
    func taskExecutor() async throws {
        let server = try HTTPTestServer(.respond(status: 200, body: Array("ok".utf8)))
        defer { server.stop() }
        let client = try makeClient()
        let (before, response, after) = await withTaskExecutorPreference(client.executor) {
            let before = currentThreadName()
            let (response, _) = await client.post(HTTPRequest(url: server.url, body: Array("x".utf8)))
            return (before, response, currentThreadName())
        }
        #expect(response == .answered(status: 200, body: Array("ok".utf8), bodyTruncated: false))
        #expect(before == "kurir-curl")
        #expect(after == "kurir-curl")
        client.shutdown()
        // The curl thread is gone: jobs for its executor must still run (elsewhere), or this never returns.
        let late = await withTaskExecutorPreference(client.executor) {
            let (response, _) = await client.post(HTTPRequest(url: server.url))
            return (response, currentThreadName())
        }
        #expect(late.0 == .notSent(reason: "client shut down"))
        #expect(late.1 != "kurir-curl")
    }

    @Test("200 concurrent posts all complete, at most maxConcurrent connections")
    func concurrent() async throws {
        let server = try HTTPTestServer(.respond(status: 200, body: Array("ok".utf8)))
        defer { server.stop() }
        let client = try makeClient(maxConcurrent: 64)
        let responses = await withTaskGroup(of: HTTPResponse.self) { group in
            for index in 0..<200 {
                group.addTask {
                    await client.post(HTTPRequest(url: server.url, body: Array("n=\(index)".utf8))).response
                }
            }
            var all: [HTTPResponse] = []
            for await response in group { all.append(response) }
            return all
        }
        #expect(responses.count == 200)
        #expect(responses.allSatisfy { $0 == .answered(status: 200, body: Array("ok".utf8), bodyTruncated: false) })
        #expect(Set(server.received.map { String(decoding: $0.body, as: UTF8.self) }).count == 200)
        #expect(server.connectionCount <= 64)
    }

    @Test("shutdown resumes waiting and in-flight posts; later posts are notSent")
    func shutdownResumesWaiters() async throws {
        let server = try HTTPTestServer(.neverAnswer)
        defer { server.stop() }
        let client = try makeClient(maxConcurrent: 1)
        let started = ContinuousClock.now
        async let first = client.post(HTTPRequest(url: server.url, timeout: .seconds(60)))
        async let second = client.post(HTTPRequest(url: server.url, timeout: .seconds(60)))
        async let third = client.post(HTTPRequest(url: server.url, timeout: .seconds(60)))
        #expect(await waitUntil { server.received.count == 1 })
        client.shutdown()
        let responses = await [first.response, second.response, third.response]
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(responses.filter { $0 == .noAnswer(reason: "client shut down") }.count == 1)
        #expect(responses.filter { $0 == .notSent(reason: "client shut down") }.count == 2)
        #expect(server.received.count == 1)

        let (late, _) = await client.post(HTTPRequest(url: server.url))
        #expect(late == .notSent(reason: "client shut down"))
        client.shutdown()  // a second call is harmless
    }

    @Test("invalid limits are refused")
    func invalidLimits() {
        #expect(throws: HTTPClientError.self) { try HTTPClient(maxConcurrent: 0) }
        #expect(throws: HTTPClientError.self) { try HTTPClient(maxBodyBytes: -1) }
    }
}
