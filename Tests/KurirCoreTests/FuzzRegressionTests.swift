import KurirCore
import Testing

/// Inputs the libFuzzer target (fuzz/) found crashing an invariant; kept so they never come back.
@Suite struct FuzzRegressionTests {
    private static let success = Array(#"{"status":true,"dett":["0812(34)2)7005"]}"#.utf8)
    private static let woowaSuccess = Array(#"{"code":200,"results":{"id_message":"WOWA1"}}"#.utf8)

    private func classify(_ provider: Provider, _ status: Int, _ body: [UInt8]) -> AttemptResult {
        let json: JSONValue?
        switch provider {
        case .woowa:
            json = .object([
                JSONMember("code", .integer(200)), JSONMember("results", .object([JSONMember("id_message", .string("WOWA1"))])),
            ])
        default: json = .object([JSONMember("status", .bool(true)), JSONMember("dett", .array([.string("0812(34)2)7005")]))])
        }
        return Dialect.classify(
            provider: provider, reply: .answered(status: status, body: body, json: json, truncated: false), latencyMs: 1)
    }

    /// fuzz/regressions/wablas-429-status-true: a success body under a 4xx was counted as delivered.
    @Test(arguments: [Provider.fonnte, .wablas, .woowa], [400, 401, 404, 429, 301])
    func successBodyUnderClientErrorIsRefused(provider: Provider, status: Int) {
        let result = classify(provider, status, provider == .woowa ? Self.woowaSuccess : Self.success)
        #expect(result.outcome == .refused)
        #expect(result.error == "HTTP \(status)")
    }

    /// fuzz/regressions/wablas-503-status-true: a success body under a 5xx was counted as delivered.
    @Test(arguments: [Provider.fonnte, .wablas, .woowa], [500, 502, 503, 504])
    func successBodyUnderServerErrorIsUnknown(provider: Provider, status: Int) {
        let result = classify(provider, status, provider == .woowa ? Self.woowaSuccess : Self.success)
        #expect(result.outcome == .unknown)
    }

    @Test(arguments: [Provider.fonnte, .wablas, .woowa], [200, 201])
    func successBodyUnder2xxIsAccepted(provider: Provider, status: Int) {
        #expect(classify(provider, status, provider == .woowa ? Self.woowaSuccess : Self.success).outcome == .accepted)
    }
}
