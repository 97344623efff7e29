import Foundation
import KurirCore
import Synchronization

/// The daemon's source of wall-clock time; KurirCore never reads the clock itself.
public protocol WallClock: Sendable {
    /// The current time.
    func now() -> Timestamp
}

/// Reads the system clock.
public struct SystemWallClock: WallClock {
    /// Creates a system clock.
    public init() {}

    /// The current time, millisecond precision.
    public func now() -> Timestamp {
        Timestamp(millisecondsSinceEpoch: Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)))
    }
}

/// Event and request ids: random (version 4) UUIDs, lower case.
///
/// Drawn from a generator seeded once from the system's: Foundation's `UUID()` opens, reads and closes
/// `/dev/urandom` for every id, four system calls per event (≈ 3 % of kurir's CPU in `make bench`).
/// The ids need to be unique, not secret.
enum Identifiers {
    private static let generator = Mutex(Xoshiro256StarStar())
    private static let hexDigits = Array("0123456789abcdef".utf8)

    static func make() -> String {
        let (high, low) = generator.withLock { ($0.next(), $0.next()) }
        return uuidString(high: high, low: low)
    }

    /// `high` and `low` as the 128 bits of a version 4, variant 1 UUID in its 8-4-4-4-12 text form.
    static func uuidString(high: UInt64, low: UInt64) -> String {
        let versioned = (high & ~0xF000) | 0x4000
        let varied = (low & ~(0xC << 60)) | (0x8 << 60)
        var text = [UInt8]()
        text.reserveCapacity(36)
        for nibble in 0..<32 {
            if nibble == 8 || nibble == 12 || nibble == 16 || nibble == 20 { text.append(UInt8(ascii: "-")) }
            let word = nibble < 16 ? versioned : varied
            let shift = UInt64(60 - (nibble % 16) * 4)
            text.append(hexDigits[Int((word >> shift) & 0xF)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}

/// xoshiro256** (Blackman and Vigna), seeded from `SystemRandomNumberGenerator`.
struct Xoshiro256StarStar: RandomNumberGenerator {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    init() {
        var system = SystemRandomNumberGenerator()
        state = (system.next(), system.next(), system.next(), system.next())
        if state == (0, 0, 0, 0) { state.0 = 1 }
    }

    mutating func next() -> UInt64 {
        let result = rotate(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = rotate(state.3, 45)
        return result
    }

    private func rotate(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }
}
