import KurirCore
import Testing

@Suite struct MaxInFlightTests {
    private let token = ["WHATSAPP_API_TOKEN": "t"]

    @Test func defaultsTo256AndShowsInCheck() throws {
        let config = try parse(token)
        #expect(config.maxInFlight == 256)
        #expect(config.maxInFlight == KurirConfiguration.defaultMaxInFlight)
        #expect(config.summaryLines.contains("max in flight: 256"))
    }

    @Test(arguments: ["1", "64", " 512 ", "4096"])
    func acceptsPositiveValuesUpToTheLimit(_ text: String) throws {
        let config = try parse(token.merging(["WHATSAPP_MAX_IN_FLIGHT": text]) { $1 })
        #expect(config.maxInFlight == Int(text.filter { $0 != " " }))
    }

    @Test(arguments: ["0", "-1", "abc", "1.5", "4097", "99999999999"])
    func rejectsOtherValuesNamingTheVariable(_ text: String) {
        let error = parseError(token.merging(["WHATSAPP_MAX_IN_FLIGHT": text]) { $1 })
        #expect(error?.variable == "WHATSAPP_MAX_IN_FLIGHT")
    }
}
