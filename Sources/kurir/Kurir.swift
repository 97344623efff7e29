import ArgumentParser
import Foundation
import KurirCore
import KurirDaemon
import Logging

@main
struct Kurir: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kurir",
        abstract: "Relays WhatsApp notification requests from MQTT to HTTP gateways with failover.",
        discussion: "Configuration comes from the environment and a .env file; see the README.",
        subcommands: [Run.self, Send.self, Check.self],
        defaultSubcommand: Run.self)
}

/// Options every command accepts.
struct EnvironmentOptions: ParsableArguments {
    @Option(name: .customLong("env-file"), help: "Read variables from this file instead of ./.env.")
    var envFile: String?

    /// Parses the configuration, or prints one line and exits with status 2.
    func loadConfiguration() throws -> KurirConfiguration {
        do {
            let environment = try Environment.merged(envFile: envFile)
            return try KurirConfiguration.parse(environment: environment, readFile: Environment.readSecretFile)
        } catch let error as ConfigurationError {
            Environment.fail("configuration error: \(error.description)")
        } catch {
            Environment.fail("configuration error: \(error)")
        }
    }
}

extension Kurir {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the daemon (the default command).")

        @OptionGroup var options: EnvironmentOptions

        func run() async throws {
            Libraries.initialize()
            let configuration = try options.loadConfiguration()
            let logger = Environment.bootstrapLogging(level: configuration.logLevel)
            do {
                try await DaemonCommand.run(configuration: configuration, logger: logger)
            } catch let error as CommandError {
                Environment.fail(error.description, status: error.exitStatus)
            }
        }
    }

    struct Send: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send one message through the configured gateway chain (no broker, no database).",
            discussion: "Exit status 0 when a gateway accepted the message, 1 when none did.")

        @OptionGroup var options: EnvironmentOptions
        @Option(help: "Phone number or group id (…@g.us).") var to: String
        @Option(help: "The message text.") var message: String

        func run() async throws {
            Libraries.initialize()
            let configuration = try options.loadConfiguration()
            _ = Environment.bootstrapLogging(level: configuration.logLevel)
            do {
                let delivered = try await SendCommand.run(
                    configuration: configuration, to: to, message: message,
                    print: { line in Swift.print(line) })
                throw ExitCode(delivered ? 0 : 1)
            } catch let error as CommandError {
                Environment.fail(error.description, status: error.exitStatus)
            }
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate the configuration and print the effective gateway chain, secrets masked.")

        @OptionGroup var options: EnvironmentOptions

        func run() async throws {
            Libraries.initialize()
            let configuration = try options.loadConfiguration()
            CheckCommand.lines(configuration: configuration).forEach { print($0) }
        }
    }
}

/// Process environment, `.env` files, `_FILE` secrets, logging bootstrap and exits.
enum Environment {
    /// The real environment over the `.env` file (or `--env-file`): real variables win.
    static func merged(envFile: String?) throws -> [String: String] {
        let path = envFile ?? ".env"
        var merged: [String: String] = [:]
        if FileManager.default.fileExists(atPath: path) {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ConfigurationError(variable: "--env-file", message: "cannot read \(path)")
            }
            merged = try EnvFile.parse(text)
        } else if envFile != nil {
            throw ConfigurationError(variable: "--env-file", message: "\(path) does not exist")
        }
        merged.merge(ProcessInfo.processInfo.environment) { _, real in real }
        return merged
    }

    @Sendable static func readSecretFile(_ path: String) throws -> String {
        try String(contentsOfFile: path, encoding: .utf8)
    }

    static func bootstrapLogging(level: String) -> Logger {
        // Each log line's timestamp calls localtime_r, and with TZ unset glibc stats /etc/localtime every
        // time (one system call per delivered request); with TZ naming the same file it reads it once.
        // Same zone either way (UTC when the file is missing); a changed zone file shows after a restart.
        setenv("TZ", ":/etc/localtime", 0)
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardOutput(label: label)
            handler.logLevel = Logger.Level(rawValue: level) ?? .info
            return handler
        }
        return Logger(label: "kurir")
    }

    static func fail(_ line: String, status: Int32 = 2) -> Never {
        FileHandle.standardError.write(Data("kurir: \(line)\n".utf8))
        exit(status)
    }
}
