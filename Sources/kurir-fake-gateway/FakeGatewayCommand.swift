import ArgumentParser
import Foundation
import KurirCore
import KurirTestSupport

/// `kurir-fake-gateway`: the Fonnte, Wablas and Woowa fakes on 127.0.0.1 for the demo and benchmarks.
@main
struct FakeGatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kurir-fake-gateway",
        abstract: "Fake Fonnte, Wablas and Woowa gateways on 127.0.0.1.",
        discussion: """
            Paths: POST /fonnte/send, /wablas/api/send-message, /woowa/send_message, /woowa/send_message_group_id.
            Control: POST /_control/<provider> with a JSON behaviour, POST /_control/reset,
            GET /_requests?provider=<p> (tokens masked), GET /_stats.
            MODE is one of: \(FakeBehaviour.Mode.allCases.map(\.rawValue).joined(separator: ", ")); \
            also refuse:<reason> and httpError:<status>.
            """)

    @Option(help: "TCP port on 127.0.0.1 (0 picks a free one).")
    var port: Int = 0

    @Option(help: "Token Fonnte expects in the Authorization header.")
    var fonnteToken: String?

    @Option(help: "Token Wablas expects in the Authorization header (token or token.secret).")
    var wablasToken: String?

    @Option(help: "Key Woowa expects in the body.")
    var woowaToken: String?

    @Option(help: "How Fonnte answers (MODE).")
    var fonnte: String = "succeed"

    @Option(help: "How Wablas answers (MODE).")
    var wablas: String = "succeed"

    @Option(help: "How Woowa answers (MODE).")
    var woowa: String = "succeed"

    @Option(help: "Milliseconds added before every answer.")
    var latencyMs: Int = 0

    func validate() throws {
        for (name, spec) in [("--fonnte", fonnte), ("--wablas", wablas), ("--woowa", woowa)] {
            guard FakeBehaviour(modeSpec: spec) != nil else {
                throw ValidationError("\(name): unknown mode '\(spec)'")
            }
        }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0…65535") }
        guard latencyMs >= 0 else { throw ValidationError("--latency-ms must not be negative") }
    }

    func run() async throws {
        var behaviours: [Provider: FakeBehaviour] = [:]
        for (provider, spec, token) in [
            (Provider.fonnte, fonnte, fonnteToken), (.wablas, wablas, wablasToken), (.woowa, woowa, woowaToken),
        ] {
            var b = FakeBehaviour(modeSpec: spec) ?? FakeBehaviour()
            b.expectedToken = token
            b.latencyMs = latencyMs
            behaviours[provider] = b
        }

        let signals = SignalWaiter()
        let gateway = try await FakeGateway.start(port: port, behaviours: behaviours)
        // Unbuffered write: a parent reading the log must see the line at once.
        FileHandle.standardOutput.write(Data("kurir-fake-gateway listening on 127.0.0.1:\(gateway.port)\n".utf8))
        await signals.wait()
        try await gateway.stop()
    }
}

/// Turns the first SIGTERM or SIGINT into the end of an `await`.
final class SignalWaiter {
    private let sources: [any DispatchSourceSignal]
    private let stream: AsyncStream<Void>

    init() {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self)
        self.stream = stream
        sources = [SIGTERM, SIGINT].map { sig in
            // Ignored at the C level so the dispatch source, not the default action, handles it.
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { continuation.yield() }
            source.resume()
            return source
        }
    }

    func wait() async {
        for await _ in stream { return }
    }
}
