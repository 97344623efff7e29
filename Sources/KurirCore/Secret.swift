/// A secret value (gateway token, broker password) that never prints itself.
///
/// `description`, `debugDescription`, string interpolation, `dump` and mirrors all give
/// `****`. Only the gateway request builder (`Dialect`) and the MQTT options builder
/// call `reveal()`.
public struct Secret: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    private let value: String

    /// Wraps a secret value.
    public init(_ value: String) {
        self.value = value
    }

    /// The secret itself; only for putting it on the wire.
    public func reveal() -> String { value }

    /// Whether the secret is the empty string (an unset token).
    public var isEmpty: Bool { value.isEmpty }

    /// Always `****`.
    public var description: String { "****" }

    /// Always `****`.
    public var debugDescription: String { "****" }

    /// A mirror with no children, so reflection cannot reach the value.
    public var customMirror: Mirror { Mirror(self, unlabeledChildren: [Any](), displayStyle: .struct) }
}
