import Foundation
import KurirStore
import Synchronization

/// Deterministic crash points for the fault-injection suite (`make chaos`), compiled into debug builds only.
///
/// `KURIR_CRASH_AT=<point>[:<n>]` makes the process `_exit(86)` the `n`-th time (default 1st) execution
/// reaches `<point>`, with no clean-up at all, as `kill -9` would at exactly that instant. In release
/// builds every call is an empty inline function and the variable is ignored.
enum CrashPoint: String, CaseIterable {
    /// On the MQTT network thread after a read of requests, before their rows are committed (no PUBACK yet).
    case intakeBeforeCommit = "intake-before-commit"
    /// On the MQTT network thread after the read's commit, before its PUBACKs are written.
    case intakeAfterCommit = "intake-after-commit"
    /// After the attempt row was committed, before the HTTP request leaves.
    case beforeHTTP = "before-http"
    /// After the gateway answered, before that answer is recorded.
    case afterHTTP = "after-http"
    /// After the broker acknowledged an event, before its outbox row is deleted.
    case afterPublish = "after-publish"
}

/// Reaches crash points; see `CrashPoint`.
enum CrashPoints {
    #if DEBUG
        private static let armed: (point: CrashPoint, count: Int)? = {
            guard let spec = ProcessInfo.processInfo.environment["KURIR_CRASH_AT"], !spec.isEmpty else { return nil }
            let parts = spec.split(separator: ":", maxSplits: 1)
            guard let point = CrashPoint(rawValue: String(parts[0])) else {
                FileHandle.standardError.write(Data("kurir: KURIR_CRASH_AT: unknown crash point, ignored\n".utf8))
                return nil
            }
            let count = parts.count > 1 ? max(1, Int(parts[1]) ?? 1) : 1
            return (point, count)
        }()
        private static let hits = Atomic<Int>(0)

        /// Ends the process at once when `point` is the armed one and this is its n-th hit.
        static func reach(_ point: CrashPoint) {
            guard let armed, armed.point == point else { return }
            if hits.add(1, ordering: .relaxed).newValue == armed.count {
                FileHandle.standardError.write(Data("kurir: crash point \(point.rawValue) reached, exiting\n".utf8))
                _exit(86)
            }
        }

        /// `KURIR_DEBUG_MAX_PAGE_COUNT=<pages>`: caps the database size so "disk full" is reproducible.
        static func applyStoreLimits(_ store: Store) {
            guard let text = ProcessInfo.processInfo.environment["KURIR_DEBUG_MAX_PAGE_COUNT"],
                let pages = Int(text), pages > 0
            else { return }
            _ = try? store.limitPageCount(pages)
        }
    #else
        /// Release builds: no crash points.
        @inline(__always) static func reach(_ point: CrashPoint) {}
        /// Release builds: no size cap.
        @inline(__always) static func applyStoreLimits(_ store: Store) {}
    #endif
}
