import Testing

@testable import KurirStore

@Suite struct AcknowledgedOutboxTests {
    @Test func onlyTheFirstRowSinceATakeAsksForADeletion() {
        let outbox = AcknowledgedOutbox()
        #expect(outbox.add(1))
        #expect(!outbox.add(2))
        #expect(outbox.take() == [1, 2])
        #expect(outbox.add(3))
        #expect(outbox.take() == [3])
    }

    @Test func aDeletionRunAgainAfterAFailedBatchDeletesTheSameRows() {
        let outbox = AcknowledgedOutbox()
        _ = outbox.add(1)
        let deletion = OutboxDeletion(from: outbox)
        #expect(deletion.ids == [1])
        #expect(outbox.add(2))  // acknowledged after the first run: the next deletion's
        #expect(deletion.ids == [1])
        #expect(outbox.take() == [2])
    }

    @Test func aFailedDeletionGivesItsRowsToTheNextOne() {
        let outbox = AcknowledgedOutbox()
        _ = outbox.add(1)
        let failed = OutboxDeletion(from: outbox)
        #expect(failed.ids == [1])
        #expect(outbox.add(2))
        failed.giveBack()
        #expect(Set(OutboxDeletion(from: outbox).ids) == [1, 2])
        failed.giveBack()  // twice: nothing more to give
        #expect(outbox.take().isEmpty)
    }
}
