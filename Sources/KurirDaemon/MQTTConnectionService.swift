import KurirCore
import KurirMQTT
import Logging
import ServiceLifecycle

/// Owns the broker connection: subscribes on every CONNACK, and disconnects last on shutdown.
final class MQTTConnectionService: Service {
    private let client: MQTTClient
    private let settings: MQTTSettings
    private let logger: Logger

    init(client: MQTTClient, settings: MQTTSettings, logger: Logger) {
        self.client = client
        self.settings = settings
        self.logger = logger
    }

    /// Wires the client's callbacks; call before `run`.
    func wire(intake: Intake, outbox: OutboxPublisher) {
        let client = self.client
        let settings = self.settings
        let logger = self.logger
        client.setMessageHandler { message in intake.handle(message) }
        client.setPublishedHandler { mid in outbox.acknowledged(mid) }
        client.setConnectHandler { code, reason in
            guard code == 0 else {
                logger.warning("MQTT connection refused by \(settings.host):\(settings.port): \(reason)")
                return
            }
            do {
                try client.subscribe(settings.subscription, qos: settings.qos)
                logger.info("MQTT connected to \(settings.host):\(settings.port), subscribed to \(settings.subscription)")
            } catch {
                logger.error("MQTT subscribe to \(settings.subscription) failed: \(error)")
            }
            outbox.connected()
        }
        client.setDisconnectHandler { code in
            outbox.disconnected()
            if code != 0 { logger.warning("MQTT connection to \(settings.host):\(settings.port) lost (code \(code)), reconnecting") }
        }
    }

    func run() async throws {
        try client.start()
        try? await gracefulShutdown()
        client.stop()
        logger.info("MQTT disconnected")
    }
}
