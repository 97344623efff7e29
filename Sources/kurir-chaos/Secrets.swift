import Foundation

/// Every line the runner prints goes through here: a canary in it is counted (and masked, so the terminal
/// never shows one) and fails the `secrets scan` row.
enum Console {
    private static let printed = Locked(0)

    /// A line (or block) to standard output.
    static func out(_ text: String) { print(checked(text)) }

    /// A progress line to standard error.
    static func err(_ text: String) { FileHandle.standardError.write(Data((checked(text) + "\n").utf8)) }

    /// Canaries found in what was printed so far.
    static var leaks: Int { printed.withLock { $0 } }

    /// How many canary occurrences `text` holds (a whole `token.secret` counts once, not with its halves).
    static func canaries(in text: String) -> Int { mask(text).found }

    private static func checked(_ text: String) -> String {
        let (masked, found) = mask(text)
        if found > 0 { printed.withLock { $0 += found } }
        return masked
    }

    private static func mask(_ text: String) -> (text: String, found: Int) {
        var out = text
        var found = 0
        // Canary.all lists the Wablas pair before its halves.
        for canary in Canary.all where out.contains(canary) {
            let parts = out.components(separatedBy: canary)
            found += parts.count - 1
            out = parts.joined(separator: "[canary]")
        }
        return (out, found)
    }
}

/// The final row: every file the suite left in its work directory, searched byte for byte for the canaries,
/// together with what the runner itself printed.
enum SecretsScan {
    static func run(root: String, printed: Int) -> Figures {
        var f = Figures("secrets scan")
        f.counted = false
        let started = ContinuousClock.now
        var files = 0
        var bytes = 0
        var hits: [String: Int] = [:]
        let needles = Canary.all.map { Data($0.utf8) }
        let paths = FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? []
        for path in paths.sorted() {
            let full = root + "/" + path
            guard (try? FileManager.default.attributesOfItem(atPath: full)[.type] as? FileAttributeType) == .typeRegular,
                let data = try? Data(contentsOf: URL(fileURLWithPath: full), options: .alwaysMapped)
            else { continue }
            files += 1
            bytes += data.count
            let found = needles.reduce(0) { $0 + (data.range(of: $1) == nil ? 0 : 1) }
            if found > 0 { hits[path] = found }
        }
        let inFiles = hits.values.reduce(0, +)
        f.scenario = "secrets scan: \(files) files, \(bytes) bytes, \(inFiles + printed) canaries"
        f.wall = ContinuousClock.now - started
        f.notes.append(
            "\(files) files (\(bytes) bytes) under the work directory searched for \(Canary.all.count) canaries: \(inFiles) found in \(hits.count) file(s) \(hits.keys.sorted().prefix(5)); \(printed) canary occurrence(s) in the runner's own output"
        )
        f.bar(hits.isEmpty, "a canary is in \(hits.count) file(s) of the work directory: \(hits.keys.sorted().prefix(5))")
        f.bar(printed == 0, "the runner printed \(printed) canary occurrence(s) (masked)")
        return f
    }
}
