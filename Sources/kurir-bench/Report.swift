import Foundation

/// The printed table and the JSON written next to it.
struct Report {
    struct Line {
        var section: String
        var what: String
        var figure: String
        var bar: String
        var verdict: String
    }

    private(set) var lines: [Line] = []
    private(set) var figures: [String: [String: Any]] = [:]

    mutating func add(_ section: String, _ what: String, _ figure: String, _ bar: String, _ verdict: String) {
        lines.append(Line(section: section, what: what, figure: figure, bar: bar, verdict: verdict))
    }

    mutating func set(_ key: String, _ values: [String: Any]) { figures[key] = values }

    func table(title: String) -> String {
        let header = Line(section: "#", what: "measurement", figure: "figure", bar: "ratio / bar", verdict: "verdict")
        let all = [header] + lines
        func width(_ key: KeyPath<Line, String>) -> Int { all.map { $0[keyPath: key].count }.max() ?? 0 }
        let widths = [width(\.section), width(\.what), width(\.figure), width(\.bar), width(\.verdict)]
        func row(_ l: Line) -> String {
            let cells = [l.section, l.what, l.figure, l.bar, l.verdict]
            return "| "
                + zip(cells, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }
                .joined(separator: " | ") + " |"
        }
        var out = [title, row(header), "|" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "|") + "|"]
        out += lines.map(row)
        return out.joined(separator: "\n")
    }

    func json(extra: [String: Any]) throws -> Data {
        var root: [String: Any] = extra
        root["figures"] = figures.mapValues { $0.mapValues(Self.clean) }
        root["rows"] = lines.map {
            ["section": $0.section, "measurement": $0.what, "figure": $0.figure, "bar": $0.bar, "verdict": $0.verdict]
        }
        root["machine"] = [
            "cores": ProcessInfo.processInfo.activeProcessorCount,
            "memory_mib": Int(ProcessInfo.processInfo.physicalMemory / 1_048_576),
            "os": ProcessInfo.processInfo.operatingSystemVersionString,
        ]
        return try JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
    }

    /// JSON has no NaN or infinity.
    private static func clean(_ value: Any) -> Any {
        if let d = value as? Double, !d.isFinite { return NSNull() }
        if let list = value as? [Double] { return list.map(clean) }
        return value
    }

    static func rate(_ value: Double, unit: String = "/s") -> String {
        guard value.isFinite else { return "—" }
        let rounded = Int(value.rounded())
        let formatter = NumberFormatter()
        formatter.numberStyle = .decimal
        formatter.groupingSeparator = ","
        return (formatter.string(from: NSNumber(value: rounded)) ?? "\(rounded)") + " " + unit
    }

    /// Three decimals: with two, a run at 0.2467 of its ceiling printed "0.25" beside "NOT MET".
    static func ratio(_ value: Double) -> String { value.isFinite ? fixed(value, 3) : "—" }

    static func fixed(_ value: Double, _ digits: Int) -> String {
        value.isFinite ? String(format: "%.\(digits)f", value) : "—"
    }

    static func latency(_ l: Latency) -> String {
        "\(fixed(l.p50, 2)) / \(fixed(l.p99, 2)) / \(fixed(l.max, 1)) ms"
    }

    static func verdict(_ met: Bool) -> String { met ? "met" : "NOT MET" }

    static func isoNow() -> String {
        let formatter = ISO8601DateFormatter()
        return formatter.string(from: Date())
    }
}
