import Foundation
import Testing

@testable import KurirDaemon

/// Event ids come from kurir's own generator; they must stay well-formed, version 4 and unique.
struct IdentifierTests {
    @Test func idsAreLowerCaseVersion4UUIDs() {
        for _ in 0..<1000 {
            let id = Identifiers.make()
            #expect(UUID(uuidString: id)?.uuidString.lowercased() == id)
            let characters = Array(id)
            #expect(characters[14] == "4")
            #expect("89ab".contains(characters[19]))
        }
    }

    @Test func idsDoNotRepeat() {
        let ids = (0..<100_000).map { _ in Identifiers.make() }
        #expect(Set(ids).count == ids.count)
    }

    @Test func bitsLandInTheirPlaces() {
        #expect(
            Identifiers.uuidString(high: 0x0123_4567_89AB_CDEF, low: 0xFEDC_BA98_7654_3210)
                == "01234567-89ab-4def-bedc-ba9876543210")
        #expect(Identifiers.uuidString(high: 0, low: 0) == "00000000-0000-4000-8000-000000000000")
    }
}
