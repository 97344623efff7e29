import ArgumentParser
import Foundation

/// `make chaos`: fault, crash, bad-input and security scenarios against the built kurir, each counted from
/// the producer's side (broker PUBACKs) against the fake gateways' own records and kurir's database.
@main
struct Chaos: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kurir-chaos",
        abstract: "Fault-injection suite for kurir: prints a table and exits non-zero when a figure misses its bar.")

    @Option(help: "Directory holding the debug-built kurir (crash points are compiled into debug builds only).")
    var binDir: String

    @Option(help: "Working directory for databases, logs and brokers (wiped per scenario).")
    var workDir: String = ".chaos-run"

    @Option(help: "Multiplies every request count (1 = the figures of issue 3).")
    var scale: Double = 1

    @Option(help: "How long the broker stays down in the broker-down scenario, seconds.")
    var brokerDownSeconds: Int = 120

    @Option(help: "Run only scenarios whose name contains one of these (comma-separated).")
    var only: String = ""

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        let root = (workDir.hasPrefix("/") ? workDir : FileManager.default.currentDirectoryPath + "/" + workDir)
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let absoluteBin = binDir.hasPrefix("/") ? binDir : FileManager.default.currentDirectoryPath + "/" + binDir
        guard FileManager.default.isExecutableFile(atPath: absoluteBin + "/kurir") else {
            throw ValidationError("no kurir in \(absoluteBin): run `swift build` first")
        }
        let suite = Suite(
            root: root, binDir: absoluteBin, scale: scale, brokerDownSeconds: brokerDownSeconds,
            only: only.split(separator: ",").map(String.init))
        let started = ContinuousClock.now
        await suite.runAll()
        // The scan row also counts what is about to be printed (every note and failure is in the table).
        let printed = Console.leaks + Console.canaries(in: Report.table(suite.results))
        let results = suite.results + [SecretsScan.run(root: root, printed: printed)]
        let table = Report.table(results)
        Console.out(table)
        let failures = results.flatMap { r in r.failures.map { "\(r.scenario): \($0)" } }
        Console.out("total wall time: \(Report.seconds(ContinuousClock.now - started))")
        try? table.write(toFile: root + "/table.txt", atomically: true, encoding: .utf8)
        if failures.isEmpty {
            Console.out("chaos: every scenario met its bar")
        } else {
            Console.out("chaos: \(failures.count) figure(s) missed their bar:")
            failures.forEach { Console.out("  - \($0)") }
            throw ExitCode(1)
        }
    }
}

/// The figures of one scenario, and the bars it missed.
struct Figures: Sendable {
    var scenario: String
    var requests = 0
    var acknowledged = 0
    var delivered = 0
    var lost = 0
    var duplicates = 0
    var rejected = 0
    var wall: Duration = .zero
    var failures: [String] = []
    var notes: [String] = []
    /// False for a row that counts no requests (the secrets scan): its count columns show "-".
    var counted = true
    /// Why the scenario could not run here (neither ok nor a failure).
    var skipped: String?

    init(_ scenario: String) { self.scenario = scenario }

    /// Records a bar: `ok` false adds `what` to the failures.
    mutating func bar(_ ok: Bool, _ what: String) {
        if !ok { failures.append(what) }
    }
}

enum Report {
    static func seconds(_ d: Duration) -> String {
        let ms = d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
        return String(format: "%.1f s", Double(ms) / 1000)
    }

    static func table(_ results: [Figures]) -> String {
        let header = [
            "scenario", "requests", "acknowledged", "delivered", "lost", "duplicate sends", "rejected", "wall time", "result",
        ]
        var rows = [header]
        for r in results {
            let counts = [r.requests, r.acknowledged, r.delivered, r.lost, r.duplicates, r.rejected].map {
                r.counted ? "\($0)" : "-"
            }
            let result = !r.failures.isEmpty ? "FAIL" : r.skipped.map { "skipped (\($0))" } ?? "ok"
            rows.append([r.scenario] + counts + [seconds(r.wall), result])
        }
        let widths = header.indices.map { i in rows.map { $0[i].count }.max() ?? 0 }
        var out = ""
        for (n, row) in rows.enumerated() {
            out +=
                "| "
                + row.enumerated().map { i, cell in
                    i == 0
                        ? cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                        : String(repeating: " ", count: widths[i] - cell.count) + cell
                }.joined(separator: " | ") + " |\n"
            if n == 0 { out += "|" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "|") + "|\n" }
        }
        var notes = ""
        for r in results where !r.notes.isEmpty || !r.failures.isEmpty {
            for n in r.notes { notes += "  \(r.scenario): \(n)\n" }
            for f in r.failures { notes += "  \(r.scenario): FAIL \(f)\n" }
        }
        return out + (notes.isEmpty ? "" : "\nnotes:\n" + notes)
    }
}
