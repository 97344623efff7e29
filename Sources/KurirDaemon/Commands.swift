import Foundation
import KurirCore
import KurirHTTP
import KurirMQTT
import KurirStore
import Logging
import ServiceLifecycle

/// Why a command could not run: one line, no secrets. `main` maps it to an exit status.
public struct CommandError: Error, CustomStringConvertible {
    /// One line for the operator.
    public var description: String
    /// The process exit status this error calls for.
    public var exitStatus: Int32
}

/// The daemon: `kurir run`.
public enum DaemonCommand {
    /// Gateway requests in flight at once unless `WHATSAPP_MAX_IN_FLIGHT` says otherwise.
    public static let defaultMaxInFlight = KurirConfiguration.defaultMaxInFlight

    /// Runs until SIGTERM/SIGINT, then stops intake, finishes in-flight work and flushes events.
    public static func run(configuration: KurirConfiguration, logger: Logger) async throws {
        let store: Store
        do {
            store = try Store(path: configuration.databasePath, sync: configuration.databaseSync)
        } catch {
            throw CommandError(description: "\(error)", exitStatus: 1)
        }
        CrashPoints.applyStoreLimits(store)
        logger.info(
            "kurir starting: database \(configuration.databasePath) (synchronous \(store.synchronousMode.rawValue)), max in flight \(configuration.maxInFlight), chain \(configuration.chain.map { $0.provider.rawValue }.joined(separator: " → "))"
        )
        for notice in configuration.notices { logger.notice("\(notice)") }

        let http: HTTPClient
        let mqtt: MQTTClient
        let eventsMQTT: MQTTClient
        do {
            http = try HTTPClient(maxConcurrent: configuration.maxInFlight)
            var requestOptions = MQTTOptionsBuilder.options(configuration.mqtt)
            requestOptions.threadName = "kurir-requests"
            mqtt = try MQTTClient(options: requestOptions)
            var eventOptions = MQTTOptionsBuilder.options(configuration.mqtt)
            eventOptions.threadName = "kurir-events"
            eventOptions.clientID = EventConnectionService.clientID(configuration.mqtt)
            eventOptions.cleanSession = true
            // The outbox publisher hands over a page of events at a time (docs/performance.md, change 41).
            eventOptions.publishesOnFlush = true
            eventsMQTT = try MQTTClient(options: eventOptions)
        } catch {
            throw CommandError(description: "\(error)", exitStatus: 1)
        }
        defer { http.shutdown() }

        let clock = SystemWallClock()
        let deliveryWakeup = Wakeup()
        let outboxWakeup = Wakeup()
        let intake = Intake(
            configuration: configuration, store: store, clock: clock, logger: logger,
            deliveryWakeup: deliveryWakeup, outboxWakeup: outboxWakeup)
        let outbox = OutboxPublisher(
            store: store, mqtt: eventsMQTT, qos: configuration.mqtt.qos, logger: logger, wakeup: outboxWakeup)
        let connection = MQTTConnectionService(client: mqtt, settings: configuration.mqtt, logger: logger)
        connection.wire(intake: intake)
        let eventConnection = EventConnectionService(client: eventsMQTT, settings: configuration.mqtt, logger: logger)
        eventConnection.wire(outbox: outbox)
        let delivery = DeliveryService(
            configuration: configuration, store: store,
            caller: GatewayCaller(
                http: http, timeout: configuration.timeout, connectTimeout: configuration.connectTimeout),
            clock: clock, logger: logger, wakeup: deliveryWakeup, outboxWakeup: outboxWakeup,
            maxInFlight: configuration.maxInFlight)

        // Graceful shutdown runs in reverse order: deliveries finish first, then the outbox
        // flushes over the events connection, and the request connection closes last.
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: connection), .init(service: eventConnection), .init(service: outbox),
                    .init(service: delivery),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
        logger.info("kurir stopped")
    }
}

/// `kurir send`: one delivery straight through the chain, no broker, no database.
public enum SendCommand {
    /// Prints the operator lines and returns true when a gateway accepted the message.
    public static func run(
        configuration: KurirConfiguration, to rawTarget: String, message: String,
        print: @escaping @Sendable (String) -> Void
    ) async throws -> Bool {
        guard
            let target = TargetNormaliser.normalise(
                rawTarget, forceGroup: false, defaultCountryCode: configuration.defaultCountryCode)
        else {
            throw CommandError(description: "--to: invalid target \"\(rawTarget)\"", exitStatus: 2)
        }
        guard !configuration.chain.isEmpty else {
            throw CommandError(description: "no gateway configured: set WHATSAPP_API_TOKEN", exitStatus: 2)
        }
        let http = try HTTPClient(maxConcurrent: 1)
        defer { http.shutdown() }
        let caller = GatewayCaller(
            http: http, timeout: configuration.timeout, connectTimeout: configuration.connectTimeout)
        var round = FailoverRound(
            chain: configuration.chain, target: target, message: message, referenceID: "kurir-send")
        while true {
            let step = round.next()
            switch step {
            case .send(_, let request):
                let (reply, latency) = await caller.call(request)
                _ = round.record(reply, latencyMs: latency)
                round.drainLogLines().forEach(print)
            case .finished(let result):
                round.drainLogLines().forEach(print)
                for attempt in result.attempts {
                    print(
                        "  \(attempt.provider.rawValue): \(attempt.outcome.rawValue)\(attempt.error.map { " (\($0))" } ?? "") \(attempt.latencyMs) ms"
                    )
                }
                return result.delivered
            }
        }
    }
}

/// `kurir check`: the effective configuration with secrets masked.
public enum CheckCommand {
    /// The lines `kurir check` prints.
    public static func lines(configuration: KurirConfiguration) -> [String] {
        configuration.summaryLines + configuration.notices.map { "notice: \($0)" }
    }
}

/// Builds libmosquitto options from the configuration; the one place the broker password is revealed.
enum MQTTOptionsBuilder {
    static func options(_ settings: MQTTSettings) -> MQTTConnectOptions {
        var options = MQTTConnectOptions(host: settings.host, port: settings.port, clientID: settings.clientID)
        options.useTLS = settings.useTLS
        options.caFile = settings.caFile
        options.certFile = settings.certFile
        options.keyFile = settings.keyFile
        options.username = settings.username
        options.password = settings.password?.reveal()
        options.cleanSession = false
        return options
    }
}

/// Process-wide set-up of the C libraries.
public enum Libraries {
    /// Calls `mosquitto_lib_init` and `curl_global_init`; once, first thing in `main`.
    public static func initialize() {
        // A peer closing a socket mid-write must become an error code, not kill the daemon:
        // libcurl with CURLOPT_NOSIGNAL installs no SIGPIPE handler of its own.
        signal(SIGPIPE, SIG_IGN)
        MQTTGlobal.initialize()
        HTTPGlobal.initialize()
    }
}
