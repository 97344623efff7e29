import CMosquitto
import Foundation
import Synchronization

/// An MQTT 3.1.1 client whose network loop runs in a thread of its own (`NetworkLoop`): libmosquitto's
/// `mosquitto_loop_forever`, or, with a message batch handler or `publishesOnFlush`, the client's own
/// read/write loop.
///
/// `@unchecked Sendable` because it owns a `struct mosquitto *`. libmosquitto serialises access to that
/// handle with its own mutexes when its loop runs in its own thread, which makes `publish`, `subscribe`
/// and `disconnect` safe from any thread; everything Swift keeps (handlers, subscriptions, lifecycle
/// state) sits behind `Mutex`es. The handle is destroyed in `deinit` only after the loop thread ended.
///
/// Handlers run on the network thread. Because the loop runs in its own thread, libmosquitto only
/// queues the QoS 1 PUBACK of a received message before calling the message handler and writes it
/// after the handler returned: a handler that commits synchronously makes the message durable before
/// the broker considers it delivered.
public final class MQTTClient: @unchecked Sendable {
    private enum Lifecycle { case created, started, stopped }

    private let handle: OpaquePointer
    private let options: MQTTConnectOptions
    private let box: CallbackBox
    private let lifecycle = Mutex<Lifecycle>(.created)

    /// Creates the libmosquitto handle (`mosquitto_new`) and installs the callbacks; connects nothing yet.
    public init(options: MQTTConnectOptions) throws(MQTTError) {
        MQTTGlobal.initialize()
        guard !options.clientID.isEmpty else {
            // mosquitto_new(NULL, false, ...) fails; a persistent session needs a fixed id anyway.
            throw MQTTError(code: MQTTError.invalid, operation: "init", detail: "client id must not be empty")
        }
        guard let wake = LoopWake() else {
            throw MQTTError(
                code: MQTTError.systemError, operation: "init", detail: "pipe failed: \(String(cString: strerror(errno)))")
        }
        let box = CallbackBox(wake: wake, publishesOnFlush: options.publishesOnFlush)
        guard
            let handle = mosquitto_new(
                options.clientID, options.cleanSession, Unmanaged.passUnretained(box).toOpaque())
        else {
            throw MQTTError(code: MQTTError.noMemory, operation: "init", detail: "mosquitto_new failed")
        }
        self.handle = handle
        self.options = options
        self.box = box

        // Callbacks are installed before any connect: a persistent session's queued messages arrive
        // right after CONNACK, before the caller could react.
        mosquitto_connect_callback_set(handle) { mosq, userdata, rc in
            guard let userdata else { return }
            Unmanaged<CallbackBox>.fromOpaque(userdata).takeUnretainedValue().onConnect(mosq, rc)
        }
        mosquitto_disconnect_callback_set(handle) { _, userdata, rc in
            guard let userdata else { return }
            Unmanaged<CallbackBox>.fromOpaque(userdata).takeUnretainedValue().onDisconnect(rc)
        }
        mosquitto_publish_callback_set(handle) { _, userdata, mid in
            guard let userdata else { return }
            Unmanaged<CallbackBox>.fromOpaque(userdata).takeUnretainedValue().onPublish(mid)
        }
        mosquitto_message_callback_set(handle) { _, userdata, message in
            guard let userdata, let message else { return }
            Unmanaged<CallbackBox>.fromOpaque(userdata).takeUnretainedValue().onMessage(message.pointee)
        }
    }

    deinit {
        stop()
        // An orphaned network thread destroys the handle itself when it ends.
        if box.loopState.load(ordering: .acquiring) != NetworkLoop.orphaned { mosquitto_destroy(handle) }
        // `box` is released after this: the loop thread that could call into it has ended.
    }

    /// Sets the handler for received messages.
    ///
    /// Runs on libmosquitto's network thread. For QoS 1 the PUBACK is sent only after this returns, so a
    /// handler that commits synchronously makes the message durable before it is acknowledged. The
    /// network loop is blocked meanwhile: keep it short.
    public func setMessageHandler(_ handler: @escaping @Sendable (MQTTMessage) -> Void) {
        box.handlers.withLock { $0.message = handler }
    }

    /// Sets the handler for CONNACKs: `returnCode` 0 means connected, `reason` is `mosquitto_connack_string`.
    ///
    /// Runs on the network thread after the remembered subscriptions were sent again.
    public func setConnectHandler(_ handler: @escaping @Sendable (_ returnCode: Int32, _ reason: String) -> Void) {
        box.handlers.withLock { $0.connect = handler }
    }

    /// Sets the handler for lost or closed connections (`returnCode` 0 when `stop()` asked for it).
    public func setDisconnectHandler(_ handler: @escaping @Sendable (_ returnCode: Int32) -> Void) {
        box.handlers.withLock { $0.disconnect = handler }
    }

    /// Sets the handler for failed connection tries: with libmosquitto's loop only those it would not retry
    /// by itself (TLS, DNS), with the own loop every one. `reason` is one line without credentials,
    /// `retryIn` the pause before the next try, `brokerUnreachable` true for the kinds libmosquitto's loop
    /// retries silently (refused, unreachable, lost: the broker is down or out of reach). A refused login
    /// is not one of them: the connect handler has its code and the broker's reason.
    ///
    /// Runs on the network thread.
    public func setConnectionFailureHandler(
        _ handler: @escaping @Sendable (_ reason: String, _ retryIn: Duration, _ brokerUnreachable: Bool) -> Void
    ) {
        box.handlers.withLock { $0.failure = handler }
    }

    /// Sets the handler for the messages of one read, in place of the message handler; set it before
    /// `start`.
    ///
    /// The network thread reads the messages waiting on the socket (up to 64), calls this once with them
    /// in the order they arrived, and writes their QoS 1 PUBACKs only after it returns: a handler that
    /// commits synchronously makes every message of the read durable before the broker considers any of
    /// them delivered, with one commit for all of them. With it the client drives libmosquitto's loop
    /// itself (read what is waiting, this handler, write) instead of `mosquitto_loop_forever`.
    public func setMessageBatchHandler(_ handler: @escaping @Sendable ([MQTTMessage]) -> Void) {
        // `start` chooses the loop: set later, the messages would wait for a batch libmosquitto's loop
        // never ends, unacknowledged and unseen.
        precondition(lifecycle.withLock { $0 == .created }, "setMessageBatchHandler must be called before start")
        box.handlers.withLock { $0.messageBatch = handler }
    }

    /// Message id of a publish the broker acknowledged (QoS 1) or that was written (QoS 0).
    ///
    /// Runs on the network thread.
    public func setPublishedHandler(_ handler: @escaping @Sendable (Int32) -> Void) {
        box.handlers.withLock { $0.published = handler }
    }

    /// Applies credentials, TLS and options, starts connecting and starts the network thread.
    ///
    /// Returns before the connection is up (watch the connect handler). A broker that cannot be reached
    /// yet is not an error: the network thread keeps trying, 1 s doubling to 30 s between attempts.
    /// Calling `start` twice, or after `stop`, throws.
    public func start() throws(MQTTError) {
        let state = lifecycle.withLock { state -> Lifecycle in
            let old = state
            if old == .created { state = .started }
            return old
        }
        guard state == .created else {
            throw MQTTError(code: MQTTError.invalid, operation: "start", detail: "client was already started")
        }
        do {
            try configure()
        } catch {
            lifecycle.withLock { $0 = .stopped }
            throw error
        }
        let keepAlive = max(5, Int32(clamping: options.keepAlive.components.seconds))
        let rc = mosquitto_connect_async(handle, options.host, Int32(clamping: options.port), keepAlive)
        switch Int(rc) {
        case Int(MOSQ_ERR_INVAL.rawValue), Int(MOSQ_ERR_NOMEM.rawValue):
            lifecycle.withLock { $0 = .stopped }
            throw MQTTError(code: rc, operation: "connect")
        default:
            // Broker not reachable right now (refused, DNS, TLS): connect_async has stored host and port,
            // and the network thread keeps trying.
            break
        }
        try check(mosquitto_threaded_set(handle, true), "set threaded")
        let handle = NetworkLoop.Handle(pointer: self.handle)
        let box = self.box
        let initial: Int32? = rc == MOSQ_ERR_SUCCESS.rawValue ? nil : rc
        box.loopState.store(NetworkLoop.running, ordering: .releasing)
        let threadName = String(decoding: options.threadName.utf8.prefix(15), as: UTF8.self)
        Thread.detachNewThread {
            Thread.current.name = threadName
            NetworkLoop.run(handle: handle.pointer, box: box, initialFailure: initial)
        }
    }

    private func configure() throws(MQTTError) {
        try check(mosquitto_int_option(handle, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311), "set protocol")
        // Nagle off: measured ≈ 5.4 ms → 0.9 ms median relay latency.
        try check(mosquitto_int_option(handle, MOSQ_OPT_TCP_NODELAY, 1), "set tcp nodelay")
        try check(mosquitto_reconnect_delay_set(handle, 1, 30, true), "set reconnect delay")
        // Bounded so a large outbox backlog cannot flood the broker, high enough to keep the link busy
        // (the outbox keeps every event durable anyway). Not 100 by default: when events shared the
        // requests connection their PUBACKs queued behind a second or more of incoming requests during a
        // burst, and 100 in flight held events to ≈ 150/s (make bench).
        let window = UInt32(clamping: max(1, options.maxInflightMessages))
        try check(mosquitto_max_inflight_messages_set(handle, window), "set max inflight")
        if options.username != nil || options.password != nil {
            try check(mosquitto_username_pw_set(handle, options.username, options.password), "set credentials")
        }
        if options.useTLS {
            guard let caFile = options.caFile, !caFile.isEmpty else {
                throw MQTTError(code: MQTTError.invalid, operation: "tls", detail: "TLS needs a CA file")
            }
            if (options.certFile == nil) != (options.keyFile == nil) {
                throw MQTTError(
                    code: MQTTError.invalid, operation: "tls",
                    detail: "a client certificate needs both a certificate file and a key file")
            }
            try check(mosquitto_tls_set(handle, caFile, nil, options.certFile, options.keyFile, nil), "tls")
            // Verify the broker's host name against its certificate, not only the chain.
            try check(mosquitto_tls_insecure_set(handle, false), "tls")
        }
    }

    /// Subscribes now if connected, and again after every successful CONNACK.
    ///
    /// Calling it before `start` is fine: the filter is remembered and sent once connected. Calling it
    /// again with the same filter and QoS (e.g. from the connect handler) sends nothing more.
    /// `qos` must be 0, 1 or 2 (kurir uses 0 or 1).
    public func subscribe(_ topicFilter: String, qos: Int) throws(MQTTError) {
        guard (0...2).contains(qos) else {
            throw MQTTError(code: MQTTError.notSupported, operation: "subscribe", detail: "qos must be 0, 1 or 2")
        }
        let valid = mosquitto_sub_topic_check(topicFilter)
        guard valid == MOSQ_ERR_SUCCESS.rawValue else {
            throw MQTTError(code: valid, operation: "subscribe", detail: "invalid topic filter")
        }
        let known = box.subscriptions.withLock { list -> Bool in
            if list.contains(where: { $0.filter == topicFilter && $0.qos == Int32(qos) }) { return true }
            list.removeAll { $0.filter == topicFilter }
            list.append((topicFilter, Int32(qos)))
            return false
        }
        // Already remembered: it was sent on the last CONNACK, before the connect handler ran.
        guard !known, isConnected else { return }
        let rc = mosquitto_subscribe(handle, nil, topicFilter, Int32(qos))
        // The own loop learns of packets queued from other threads only through its wake-up.
        box.wake.signal()
        // Lost the connection in between: the next CONNACK sends it.
        guard rc == MOSQ_ERR_SUCCESS.rawValue || rc == MOSQ_ERR_NO_CONN.rawValue else {
            throw MQTTError(code: rc, operation: "subscribe")
        }
    }

    /// Queues a publish and returns its message id (the id later passed to the published handler).
    ///
    /// QoS 1 publishes are kept in memory only until the broker acknowledges them; while disconnected
    /// this throws `noConnection` rather than queueing, so the caller keeps the durable copy. With
    /// `publishesOnFlush` the publish waits for `flush()` (at most the own loop's 100 ms poll).
    public func publish(topic: String, payload: [UInt8], qos: Int, retain: Bool = false) throws(MQTTError) -> Int32 {
        guard (0...2).contains(qos) else {
            throw MQTTError(code: MQTTError.notSupported, operation: "publish", detail: "qos must be 0, 1 or 2")
        }
        guard isConnected else {
            throw MQTTError(code: MQTTError.noConnection, operation: "publish")
        }
        var mid: Int32 = 0
        let rc = payload.withUnsafeBytes { bytes in
            mosquitto_publish(handle, &mid, topic, Int32(clamping: bytes.count), bytes.baseAddress, Int32(qos), retain)
        }
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            throw MQTTError(code: rc, operation: "publish")
        }
        return mid
    }

    /// Wakes the own network loop to write every publish queued so far (`publishesOnFlush`); one
    /// wake-up however often it is called before the loop runs.
    public func flush() {
        box.wake.signal()
    }

    /// True between a successful CONNACK and the next disconnect.
    public var isConnected: Bool {
        box.connected.load(ordering: .acquiring)
    }

    /// Disconnects and waits for the network thread to end, then drops the handlers; idempotent. Never
    /// call it from a handler (it would wait for the thread it runs on). A stopped client cannot be started again.
    public func stop() {
        let wasStarted = lifecycle.withLock { state -> Bool in
            defer { state = .stopped }
            return state == .started
        }
        guard wasStarted else { return }
        box.stopping.store(true, ordering: .releasing)
        mosquitto_disconnect(handle)
        box.wake.signal()
        // The thread sees the disconnect at once when connected (the own loop through its wake-up), and
        // `stopping` within 100 ms in its own pause; but inside libmosquitto's reconnect wait (up to 30 s, nothing can wake it) it would hold
        // up a shutdown. After 2 s it is left to end by itself and to destroy the handle then.
        let deadline = ContinuousClock.now.advanced(by: .seconds(2))
        while box.loopState.load(ordering: .acquiring) == NetworkLoop.running && ContinuousClock.now < deadline {
            usleep(5_000)
        }
        _ = box.loopState.compareExchange(
            expected: NetworkLoop.running, desired: NetworkLoop.orphaned, ordering: .acquiringAndReleasing)
        box.connected.store(false, ordering: .releasing)
        // No callback can run any more: drop the handlers, which often capture this client (a cycle).
        box.handlers.withLock { $0 = CallbackBox.Handlers() }
    }

    private func check(_ rc: Int32, _ operation: String) throws(MQTTError) {
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw MQTTError(code: rc, operation: operation) }
    }
}

/// What the C callbacks reach through `userdata`: the handlers and the connection flag.
///
/// Separate from `MQTTClient` so the callbacks never touch an object that is being deinitialised.
private final class CallbackBox: Sendable {
    struct Handlers {
        var message: (@Sendable (MQTTMessage) -> Void)?
        var connect: (@Sendable (Int32, String) -> Void)?
        var disconnect: (@Sendable (Int32) -> Void)?
        var published: (@Sendable (Int32) -> Void)?
        var failure: (@Sendable (String, Duration, Bool) -> Void)?
        var messageBatch: (@Sendable ([MQTTMessage]) -> Void)?
    }

    let handlers = Mutex(Handlers())
    /// Wakes the own network loop: publishes to flush, a subscription or a stop queued from another thread.
    let wake: LoopWake
    /// `MQTTConnectOptions.publishesOnFlush`: the own loop runs even without a message batch handler.
    let publishesOnFlush: Bool
    /// The messages of the read in progress, for the message batch handler. Only the network thread
    /// touches it; the lock is never contended.
    private let messagesOfRead = Mutex<[MQTTMessage]>([])
    let subscriptions = Mutex<[(filter: String, qos: Int32)]>([])
    let connected = Atomic<Bool>(false)
    /// Set by `stop()`: the network thread ends instead of retrying.
    let stopping = Atomic<Bool>(false)
    /// `NetworkLoop.running`, `.finished` or `.orphaned`.
    let loopState = Atomic<Int>(NetworkLoop.finished)

    init(wake: LoopWake, publishesOnFlush: Bool) {
        self.wake = wake
        self.publishesOnFlush = publishesOnFlush
    }

    func onConnect(_ mosq: OpaquePointer?, _ rc: Int32) {
        if rc == 0 {
            connected.store(true, ordering: .releasing)
            // Subscribe again on every CONNACK: the session may be new (first start, broker lost its state).
            let subs = subscriptions.withLock { $0 }
            for sub in subs {
                _ = mosquitto_subscribe(mosq, nil, sub.filter, sub.qos)
            }
        }
        let reason = String(cString: mosquitto_connack_string(rc))
        handlers.withLock { $0.connect }?(rc, reason)
    }

    func onDisconnect(_ rc: Int32) {
        connected.store(false, ordering: .releasing)
        handlers.withLock { $0.disconnect }?(rc)
    }

    func onPublish(_ mid: Int32) {
        handlers.withLock { $0.published }?(mid)
    }

    func onMessage(_ message: mosquitto_message) {
        // Copy out: libmosquitto frees topic and payload when the callback returns.
        let topic = message.topic.map { String(cString: $0) } ?? ""
        let payload: [UInt8]
        if let bytes = message.payload, message.payloadlen > 0 {
            payload = [UInt8](UnsafeRawBufferPointer(start: bytes, count: Int(message.payloadlen)))
        } else {
            payload = []
        }
        let value = MQTTMessage(topic: topic, payload: payload, qos: Int(message.qos), retain: message.retain)
        let (single, batched) = handlers.withLock { ($0.message, $0.messageBatch != nil) }
        if batched {
            messagesOfRead.withLock { $0.append(value) }
        } else {
            single?(value)
        }
    }

    /// Hands the messages of the read that just ended to the message batch handler, if any arrived.
    func endRead() {
        let messages = messagesOfRead.withLock { messages in
            defer { messages = [] }
            return messages
        }
        guard !messages.isEmpty else { return }
        handlers.withLock { $0.messageBatch }?(messages)
    }
}

/// kurir's own network thread, in place of `mosquitto_loop_start`.
///
/// Found by `make chaos`: libmosquitto's `loop_forever` (which `loop_start` runs) returns for good on a TLS
/// failure, a DNS failure or a refused login, leaving the daemon silently disconnected forever. Here it is
/// started again after a pause (1 s doubling to 30 s), and each failure is reported once to the handler.
/// With `mosquitto_threaded_set(true)` the library still queues the PUBACK of a received QoS 1 message
/// until the message callback returned, as with `loop_start`.
private enum NetworkLoop {
    /// The handle, handed to the network thread. `@unchecked Sendable`: libmosquitto locks its own state
    /// when threaded, and `stop()` waits for this thread to end before the handle can be destroyed.
    struct Handle: @unchecked Sendable { let pointer: OpaquePointer }

    static let running = 0
    static let finished = 1
    static let orphaned = 2

    static func run(handle: OpaquePointer, box: CallbackBox, initialFailure: Int32?) {
        defer {
            let (ended, _) = box.loopState.compareExchange(
                expected: running, desired: finished, ordering: .acquiringAndReleasing)
            // `stop()` gave up waiting and the client may be gone: the handle is ours to free.
            if !ended { mosquitto_destroy(handle) }
        }
        let ownLoop = box.handlers.withLock { $0.messageBatch != nil } || box.publishesOnFlush
        var delay = 1
        var pending = initialFailure
        var lostQuietly = false
        while !box.stopping.load(ordering: .acquiring) {
            if let rc = pending {
                // A lost connection was said by the disconnect handler already, a refused login (CONNACK
                // with a non-zero code) by the connect handler: one line per failed try, not two.
                if !lostQuietly && rc != MOSQ_ERR_CONN_REFUSED.rawValue { report(rc, box: box, retryIn: delay) }
                guard pause(seconds: delay, box: box) else { return }
                delay = min(delay * 2, 30)
                let reconnected = mosquitto_reconnect(handle)
                // libmosquitto's loop retries a failed reconnect by itself; the own loop reports it and retries.
                pending = !ownLoop || reconnected == MOSQ_ERR_SUCCESS.rawValue ? nil : reconnected
                lostQuietly = false
                if pending != nil { continue }
            }
            let started = ContinuousClock.now
            let rc: Int32
            if ownLoop {
                (rc, lostQuietly) = serve(handle, box: box)
            } else {
                rc = mosquitto_loop_forever(handle, 1000, 1)
            }
            if box.stopping.load(ordering: .acquiring) { return }
            // A connection that lasted a while earns a fresh backoff; so does each loss of a connection
            // the own loop had up (libmosquitto's loop starts each outage at its own 1 s too).
            if ContinuousClock.now - started > .seconds(60) || lostQuietly { delay = 1 }
            pending = rc == MOSQ_ERR_SUCCESS.rawValue ? MOSQ_ERR_NO_CONN.rawValue : rc
        }
    }

    /// How long the own loop waits on the socket and its wake-up at most: the pace of keepalive checks.
    private static let pollMilliseconds: Int32 = 100
    /// Packets read at most before the messages among them go to the message batch handler.
    private static let readBatch = 64

    /// The own loop: reads every packet waiting on the socket (libmosquitto, threaded, only queues the
    /// PUBACK of each message), hands the messages to the message batch handler, then writes what is
    /// queued, including publishes other threads queued and woke it for. Returns on an error or on
    /// `stop()`, with whether the connection had been up (the disconnect handler has reported its loss then).
    private static func serve(_ handle: OpaquePointer, box: CallbackBox) -> (Int32, Bool) {
        var wasConnected = false
        while true {
            wasConnected = wasConnected || box.connected.load(ordering: .acquiring)
            if box.stopping.load(ordering: .acquiring) {
                // Sends the DISCONNECT `stop()` queued.
                _ = mosquitto_loop_write(handle, 1)
                return (MOSQ_ERR_SUCCESS.rawValue, wasConnected)
            }
            let socket = mosquitto_socket(handle)
            guard socket >= 0 else { return (MOSQ_ERR_NO_CONN.rawValue, wasConnected) }
            let events = Int16(POLLIN) | (mosquitto_want_write(handle) ? Int16(POLLOUT) : 0)
            var watched = (
                pollfd(fd: socket, events: events, revents: 0),
                pollfd(fd: box.wake.readFD, events: Int16(POLLIN), revents: 0)
            )
            _ = withUnsafeMutableBytes(of: &watched) { fds in
                poll(fds.baseAddress!.assumingMemoryBound(to: pollfd.self), 2, pollMilliseconds)
            }
            // Before the writes below: a wake-up asked for after this point runs the loop once more.
            if watched.1.revents != 0 { box.wake.drain() }
            if watched.0.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                let rc = readWaiting(handle, socket: socket)
                // Also after a failed read: the messages read before it are handed over either way.
                box.endRead()
                guard rc == MOSQ_ERR_SUCCESS.rawValue else { return (rc, wasConnected) }
            }
            if mosquitto_want_write(handle) {
                let rc = mosquitto_loop_write(handle, 1)
                guard rc == MOSQ_ERR_SUCCESS.rawValue else { return (rc, wasConnected) }
            }
            let rc = mosquitto_loop_misc(handle)
            guard rc == MOSQ_ERR_SUCCESS.rawValue else { return (rc, wasConnected) }
        }
    }

    /// Reads packets while more are waiting, up to `readBatch`.
    private static func readWaiting(_ handle: OpaquePointer, socket: Int32) -> Int32 {
        for _ in 0..<readBatch {
            let rc = mosquitto_loop_read(handle, 1)
            guard rc == MOSQ_ERR_SUCCESS.rawValue else { return rc }
            var more = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            guard poll(&more, 1, 0) > 0 else { break }
        }
        return MOSQ_ERR_SUCCESS.rawValue
    }

    private static func report(_ rc: Int32, box: CallbackBox, retryIn seconds: Int) {
        var reason = String(cString: mosquitto_strerror(rc))
        if rc == MOSQ_ERR_ERRNO.rawValue { reason = String(cString: strerror(errno)) }
        if rc == MOSQ_ERR_TLS.rawValue { reason += " (certificate not trusted or host name mismatch?)" }
        let unreachable = [MOSQ_ERR_ERRNO, MOSQ_ERR_NO_CONN, MOSQ_ERR_CONN_LOST].contains { $0.rawValue == rc }
        box.handlers.withLock { $0.failure }?(reason, .seconds(seconds), unreachable)
    }

    /// Sleeps in 100 ms steps; false when `stop()` asked the thread to end.
    private static func pause(seconds: Int, box: CallbackBox) -> Bool {
        for _ in 0..<(seconds * 10) {
            if box.stopping.load(ordering: .acquiring) { return false }
            usleep(100_000)
        }
        return !box.stopping.load(ordering: .acquiring)
    }
}

/// Wakes the own network loop from other threads: a non-blocking pipe it polls, written to once per
/// wake-up however often one is asked for before the loop drains it.
final class LoopWake: Sendable {
    let readFD: Int32
    private let writeFD: Int32
    private let pending = Atomic<Bool>(false)

    init?() {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return nil }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        (readFD, writeFD) = (fds[0], fds[1])
    }

    deinit {
        close(readFD)
        close(writeFD)
    }

    func signal() {
        guard !pending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        var byte: UInt8 = 1
        _ = write(writeFD, &byte, 1)
    }

    /// On the network thread, before it writes what is queued.
    ///
    /// Reads the pipe empty before clearing the flag: cleared first, a `signal` in between would write a
    /// byte this read takes away, leaving the flag set and the pipe empty, and no later `signal` would
    /// wake the loop again (found in review).
    func drain() {
        var bytes = (UInt64(0), UInt64(0))
        while withUnsafeMutableBytes(of: &bytes, { read(readFD, $0.baseAddress, $0.count) }) > 0 {}
        pending.store(false, ordering: .sequentiallyConsistent)
    }
}
