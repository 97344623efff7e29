import Testing

@testable import KurirDaemon

/// The outbox publisher's record of which rows are on the wire, across reconnects.
struct OutboxFlightTests {
    @Test func anAcknowledgedPublishReturnsItsRowOnce() {
        var flight = OutboxFlight()
        flight.connectionUp()
        flight.published(3, row: 40)
        #expect(flight.acknowledged(3) == 40)
        #expect(flight.acknowledged(3) == nil)
        #expect(flight.inFlightCount == 0)
    }

    /// libmosquitto resends the previous connection's unacknowledged publishes under their old ids after a
    /// reconnect. Their PUBACKs must acknowledge nothing, now or when the 16-bit id counter comes round to
    /// the same id for a new publish (an earlier version kept such ids and deleted that new publish's row
    /// at once, before the broker had it).
    @Test func acknowledgementsForIdsNotHandedOutOnThisConnectionAreIgnored() {
        var flight = OutboxFlight()
        flight.connectionUp()
        flight.published(5, row: 10)
        flight.connectionUp()
        #expect(flight.acknowledged(5) == nil)
        flight.published(5, row: 11)
        #expect(flight.inFlightCount == 1)
        #expect(flight.acknowledged(5) == 11)
    }

    /// A batch read before a reconnect carries the old connection number, and the publisher stops it: the
    /// new connection starts again from the oldest row, so no row is skipped past.
    @Test func eachConnectionHasItsOwnNumberAndStartsFromTheOldestRow() {
        var flight = OutboxFlight()
        #expect(flight.connection == nil)
        flight.connectionUp()
        let first = flight.connection
        flight.published(1, row: 7)
        #expect(flight.cursor == 7)
        flight.connectionDown()
        #expect(flight.connection == nil)
        flight.connectionUp()
        #expect(flight.connection != nil && flight.connection != first)
        #expect(flight.cursor == 0)
        #expect(flight.inFlightCount == 0)
    }
}
