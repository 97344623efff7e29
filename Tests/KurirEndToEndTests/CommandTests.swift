import Foundation
import KurirTestSupport
import Testing

/// `kurir check` and configuration loading through the real binary: `.env`, `--env-file`, `_FILE` secrets.
@Suite(.serialized)
struct CommandTests {
    private func run(_ arguments: [String], environment: [String: String], in directory: String) async throws -> (Int32?, String)
    {
        let process = try ChildProcess.launch(
            executable: builtProductPath("kurir"), arguments: arguments, environment: environment,
            logPath: directory + "/out-\(UUID().uuidString.prefix(6)).log", currentDirectory: directory)
        let status = await process.waitForExit(timeout: .seconds(15))
        return (status, process.output())
    }

    private func scratchDirectory() throws -> String {
        let directory = NSTemporaryDirectory() + "kurir-cmd-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test("./.env is read, the real environment wins, and check masks the token")
    func dotEnvInWorkingDirectory() async throws {
        let directory = try scratchDirectory()
        try "WHATSAPP_API_TOKEN=\(Canary.fonnte)\nWHATSAPP_TIMEOUT_SECONDS=7\nexport WHATSAPP_DEFAULT_COUNTRY_CODE=\"60\"\n"
            .write(toFile: directory + "/.env", atomically: true, encoding: .utf8)
        let (status, output) = try await run(["check"], environment: ["WHATSAPP_TIMEOUT_SECONDS": "9"], in: directory)
        #expect(status == 0, "\(output)")
        #expect(output.contains("timeout: 9 s"), "real environment wins: \(output)")
        #expect(output.contains("default country code: 60"))
        #expect(output.contains("token ****"))
        #expect(!output.contains(Canary.fonnte))
    }

    @Test("--env-file replaces ./.env; a missing one is a configuration error")
    func explicitEnvFile() async throws {
        let directory = try scratchDirectory()
        try "WHATSAPP_API_TOKEN=\(Canary.fonnte)\nWHATSAPP_PROVIDER=woowa\n"
            .write(toFile: directory + "/kurir.env", atomically: true, encoding: .utf8)
        let (status, output) = try await run(["check", "--env-file", "kurir.env"], environment: [:], in: directory)
        #expect(status == 0, "\(output)")
        #expect(output.contains("woowa"))
        let (missing, error) = try await run(["check", "--env-file", "nope.env"], environment: [:], in: directory)
        #expect(missing == 2)
        #expect(error.split(separator: "\n").count == 1)
        #expect(error.contains("nope.env"))
    }

    @Test("NAME_FILE secrets: content used with its newline trimmed; an unreadable file is an error")
    func secretFiles() async throws {
        let directory = try scratchDirectory()
        try "\(Canary.fonnte)\n".write(toFile: directory + "/token", atomically: true, encoding: .utf8)
        let (status, output) = try await run(
            ["check"], environment: ["WHATSAPP_API_TOKEN_FILE": directory + "/token"], in: directory)
        #expect(status == 0, "\(output)")
        #expect(!output.contains(Canary.fonnte))
        let (unreadable, error) = try await run(
            ["check"], environment: ["WHATSAPP_API_TOKEN_FILE": directory + "/missing"], in: directory)
        #expect(unreadable == 2)
        #expect(error.contains("WHATSAPP_API_TOKEN_FILE"))
    }

    @Test("--help works on every command")
    func help() async throws {
        let directory = try scratchDirectory()
        let (status, output) = try await run(["--help"], environment: [:], in: directory)
        #expect(status == 0)
        #expect(output.contains("send") && output.contains("check"), "\(output)")
        for command in ["run", "send", "check"] {
            let (status, output) = try await run([command, "--help"], environment: [:], in: directory)
            #expect(status == 0, "\(command)")
            #expect(output.contains("--env-file"), "\(command): \(output)")
        }
    }
}
