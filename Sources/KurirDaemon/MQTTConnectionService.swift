import KurirCore
import KurirMQTT
import Logging
import ServiceLifecycle
import Synchronization

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

    /// Wires the client's callbacks; call before `run`. Events go out on a connection of their own
    /// (`EventConnectionService`).
    func wire(intake: Intake) {
        let client = self.client
        let settings = self.settings
        let logger = self.logger
        // A refused login is said once by the connect handler; the disconnect that follows it says nothing.
        let refused = LoginRefused()
        client.setMessageBatchHandler { messages in intake.handle(messages) }
        client.setConnectHandler { code, reason in
            refused.flag.store(code != 0, ordering: .relaxed)
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
        }
        client.setConnectionFailureHandler { reason, retryIn, _ in
            logger.warning(
                "MQTT connection to \(settings.host):\(settings.port) failed: \(reason); retrying in \(retryIn.components.seconds) s"
            )
        }
        client.setDisconnectHandler { code in
            if code != 0 && !refused.flag.load(ordering: .relaxed) {
                logger.warning("MQTT connection to \(settings.host):\(settings.port) lost (code \(code)), reconnecting")
            }
        }
    }

    func run() async throws {
        try client.start()
        try? await gracefulShutdown()
        client.stop()
        logger.info("MQTT disconnected")
    }
}

/// Whether the last CONNACK refused the login (shared by the connect and disconnect handlers).
private final class LoginRefused: Sendable {
    let flag = Atomic<Bool>(false)
}
