import Foundation
import KurirCore

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

/// Event and request ids: random UUIDs, lower case.
enum Identifiers {
    static func make() -> String { UUID().uuidString.lowercased() }
}
