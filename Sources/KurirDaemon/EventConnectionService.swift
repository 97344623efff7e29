import KurirCore
import KurirMQTT
import Logging
import ServiceLifecycle

/// The second broker connection, used only to publish events from the outbox.
///
/// libmosquitto writes on the thread that also reads, and keeps reading while data is waiting; during a
/// burst of requests the intake connection always has data waiting (each request is committed inside the
/// read), so events published on it went out only once the burst was over (seconds to minutes, measured
/// by `make bench`), and their acknowledgements queued behind the burst. On a connection of its own the
/// outbox is never behind the intake. Clean session: the outbox table, not the broker, keeps events durable.
final class EventConnectionService: Service {
    private let client: MQTTClient
    private let settings: MQTTSettings
    private let logger: Logger

    init(client: MQTTClient, settings: MQTTSettings, logger: Logger) {
        self.client = client
        self.settings = settings
        self.logger = logger
    }

    /// The client id of the events connection: the configured one with `-events` appended.
    static func clientID(_ settings: MQTTSettings) -> String { settings.clientID + "-events" }

    /// Wires the client's callbacks to the outbox; call before `run`.
    func wire(outbox: OutboxPublisher) {
        let settings = self.settings
        let logger = self.logger
        client.setPublishedHandler { mid in outbox.acknowledged(mid) }
        client.setConnectHandler { code, reason in
            guard code == 0 else {
                logger.warning("MQTT events connection refused by \(settings.host):\(settings.port): \(reason)")
                return
            }
            logger.debug("MQTT events connection up")
            outbox.connected()
        }
        client.setConnectionFailureHandler { reason, retryIn, brokerUnreachable in
            let line: Logger.Message =
                "MQTT events connection to \(settings.host):\(settings.port) failed: \(reason); retrying in \(retryIn.components.seconds) s"
            // The requests connection says so already when the broker is down: one warning per failed try.
            logger.log(level: brokerUnreachable ? .debug : .warning, line)
        }
        client.setDisconnectHandler { code in
            outbox.disconnected()
            if code != 0 { logger.debug("MQTT events connection lost (code \(code)), reconnecting") }
        }
    }

    func run() async throws {
        try client.start()
        try? await gracefulShutdown()
        client.stop()
    }
}
