import CCurl
import Foundation
import Glibc
import Synchronization

/// A caller waiting for its POST; resumed exactly once, by ``finish(_:)``.
struct PendingPost: Sendable {
    let request: HTTPRequest
    let started: ContinuousClock.Instant
    let continuation: CheckedContinuation<(response: HTTPResponse, elapsed: Duration), Never>

    func finish(_ response: HTTPResponse) {
        continuation.resume(returning: (response, ContinuousClock.now - started))
    }
}

/// First-in first-out queue of posts waiting for a transfer slot.
struct PostQueue {
    private var items: [PendingPost] = []
    private var head = 0

    mutating func append(_ post: PendingPost) {
        items.append(post)
    }

    mutating func take(max limit: Int) -> [PendingPost] {
        let count = Swift.min(Swift.max(limit, 0), items.count - head)
        guard count > 0 else { return [] }
        let taken = Array(items[head..<head + count])
        head += count
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return taken
    }
}

/// The part of the client shared by callers of `post` and the curl thread.
///
/// `@unchecked Sendable`: the mutable state sits in `Mutex`es; `multi` is used only by the curl
/// thread (other threads wake it through the wake pipe) and is cleaned up in `deinit`, when no
/// thread can reach it any more.
final class CurlEngine: @unchecked Sendable {
    private struct Shared {
        var queue = PostQueue()
        var stopping = false
        /// Swift jobs waiting to run on the curl thread (`CurlTaskExecutor`).
        var jobs: [UnownedJob] = []
        var executor: UnownedTaskExecutor?
        /// The curl thread has ended: jobs go to Swift's global executor instead.
        var stopped = false
    }

    /// The CURLM handle. Driven only by the curl thread.
    let multi: UnsafeMutableRawPointer
    /// Read end (watched by the curl thread) and write end (any thread) of the wake pipe, non-blocking.
    let wakeRead: Int32
    private let wakeWrite: Int32
    let maxConcurrent: Int
    let maxBodyBytes: Int
    private let shared = Mutex(Shared())
    /// A wake-up byte is in the pipe, or about to be, and the curl thread has not drained it yet.
    private let wakePending = Atomic<Bool>(false)
    /// The curl thread until someone has joined it.
    private let thread = Mutex<pthread_t?>(nil)
    /// The curl thread's id, set by the thread itself: what it queues for itself needs no wake-up.
    private let curlThreadID = Atomic<UInt>(0)

    private init(multi: UnsafeMutableRawPointer, wakePipe: (read: Int32, write: Int32), maxConcurrent: Int, maxBodyBytes: Int) {
        self.multi = multi
        self.wakeRead = wakePipe.read
        self.wakeWrite = wakePipe.write
        self.maxConcurrent = maxConcurrent
        self.maxBodyBytes = maxBodyBytes
    }

    deinit {
        curl_multi_cleanup(multi)
        close(wakeRead)
        close(wakeWrite)
    }

    static func start(maxConcurrent: Int, maxBodyBytes: Int) throws(HTTPClientError) -> CurlEngine {
        guard let multi = curl_multi_init() else {
            throw HTTPClientError(code: .curlUnavailable, message: "curl_multi_init failed")
        }
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else {
            curl_multi_cleanup(multi)
            throw HTTPClientError(code: .threadStart, message: "could not create the curl thread's wake pipe (error \(errno))")
        }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        let engine = CurlEngine(
            multi: multi, wakePipe: (fds[0], fds[1]), maxConcurrent: maxConcurrent, maxBodyBytes: maxBodyBytes)
        let status = CCurl_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, maxConcurrent)
        guard status == CURLM_OK else {
            throw HTTPClientError(
                code: .curlUnavailable,
                message: "curl_multi_setopt(MAXCONNECTS) failed: \(String(cString: curl_multi_strerror(status)))")
        }

        // The thread holds its own reference until its loop ends.
        let context = Unmanaged.passRetained(engine).toOpaque()
        var handle = pthread_t()
        let created = pthread_create(
            &handle, nil,
            { context in
                let engine = Unmanaged<CurlEngine>.fromOpaque(context!).takeRetainedValue()
                engine.threadMain()
                return nil
            }, context)
        guard created == 0 else {
            Unmanaged<CurlEngine>.fromOpaque(context).release()
            throw HTTPClientError(code: .threadStart, message: "could not start the curl thread (error \(created))")
        }
        engine.thread.withLock { $0 = handle }
        return engine
    }

    func enqueue(_ post: PendingPost) {
        let accepted = shared.withLock { shared -> Bool in
            guard !shared.stopping else { return false }
            shared.queue.append(post)
            return true
        }
        if accepted {
            wakeUnlessOnCurlThread()
        } else {
            post.finish(.notSent(reason: CurlEngine.shutDownReason))
        }
    }

    func shutdown() {
        shared.withLock { $0.stopping = true }
        wake()
        // Held while joining, so a concurrent second caller also returns only once the thread is gone.
        thread.withLock { thread in
            if let running = thread {
                pthread_join(running, nil)
                thread = nil
            }
        }
    }

    /// Posts that may start now, or every waiting post when the client is stopping.
    fileprivate func take(max limit: Int) -> (posts: [PendingPost], stopping: Bool) {
        shared.withLock { shared in
            if shared.stopping {
                return (shared.queue.take(max: .max), true)
            }
            return (shared.queue.take(max: limit), false)
        }
    }

    static let shutDownReason = "client shut down"

    /// Queues a Swift job for the curl thread, or hands it to the global executor once that thread ended.
    func enqueue(_ job: UnownedJob, from executor: CurlTaskExecutor) {
        let accepted = shared.withLock { shared -> Bool in
            guard !shared.stopped else { return false }
            shared.executor = executor.asUnownedTaskExecutor()
            shared.jobs.append(job)
            return true
        }
        if accepted {
            wakeUnlessOnCurlThread()
        } else {
            globalConcurrentExecutor.enqueue(ExecutorJob(job))
        }
    }

    /// Whether jobs wait for the curl thread (it looks before it sleeps).
    fileprivate var hasJobs: Bool {
        shared.withLock { !$0.jobs.isEmpty }
    }

    /// Jobs queued for the curl thread, with the executor they run on.
    fileprivate func takeJobs() -> (jobs: [UnownedJob], executor: UnownedTaskExecutor?) {
        shared.withLock { shared in
            defer { shared.jobs.removeAll(keepingCapacity: true) }
            return (shared.jobs, shared.executor)
        }
    }

    /// The curl thread is ending: every job queued so far, and every later one, runs on the global executor.
    fileprivate func handOffJobs() {
        let left = shared.withLock { shared -> [UnownedJob] in
            shared.stopped = true
            defer { shared.jobs.removeAll() }
            return shared.jobs
        }
        for job in left { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }

    /// The curl thread looks at its queues before it sleeps, so what it queues itself needs no wake-up.
    private func wakeUnlessOnCurlThread() {
        guard curlThreadID.load(ordering: .relaxed) != UInt(pthread_self()) else { return }
        wake()
    }

    /// Wakes the curl thread. A full pipe already holds a wake-up, so a failed write loses nothing.
    ///
    /// Only the first caller after the thread last drained the pipe writes: under load many posts arrive
    /// between two passes of the thread, and a write each was a system call each (and a read).
    private func wake() {
        guard !wakePending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    /// The curl thread drained the wake pipe; called before it next takes from the queue, so a post
    /// queued after this call writes a fresh wake-up and one queued before it is taken.
    fileprivate func wakeConsumed() {
        wakePending.store(false, ordering: .releasing)
    }

    private func threadMain() {
        curlThreadID.store(UInt(pthread_self()), ordering: .relaxed)
        Thread.current.name = "kurir-curl"  // for `top -H`
        CurlWorker(engine: self).run()
    }
}

/// One reusable easy handle, the error buffer it writes into, and the options it keeps between transfers.
///
/// Freed on the curl thread, after it has been removed from the multi handle.
private final class EasyHandle {
    let handle: UnsafeMutableRawPointer
    let errorBuffer: UnsafeMutablePointer<CChar>
    /// The URL, headers and timeouts its options were set for: the next request with the same ones
    /// (most requests: one gateway, one token) sets only its body and callbacks. Resetting and setting
    /// every option again was about a twentieth of the curl thread (docs/performance.md, change 42).
    var shape: RequestShape?
    /// curl keeps this pointer (CURLOPT_HTTPHEADER) for as long as the options stay.
    var headerList: UnsafeMutablePointer<curl_slist>?

    init?() {
        guard let handle = curl_easy_init() else { return nil }
        self.handle = handle
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE))
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
    }

    deinit {
        curl_easy_cleanup(handle)
        curl_slist_free_all(headerList)
        errorBuffer.deallocate()
    }

    /// Back to curl's defaults, for a request of another shape (or after a failed set-up).
    func reset() {
        curl_easy_reset(handle)
        curl_slist_free_all(headerList)
        headerList = nil
        shape = nil
    }

    var errorText: String {
        errorBuffer[Int(CURL_ERROR_SIZE) - 1] = 0
        return String(cString: errorBuffer)
    }
}

/// What the options a handle keeps between transfers depend on: everything of a request but its body.
private struct RequestShape {
    let url: String
    let headers: [(name: String, value: String)]
    let timeout: Duration
    let connectTimeout: Duration

    init(_ request: HTTPRequest) {
        url = request.url
        headers = request.headers
        timeout = request.timeout
        connectTimeout = request.connectTimeout
    }

    func matches(_ request: HTTPRequest) -> Bool {
        url == request.url && timeout == request.timeout && connectTimeout == request.connectTimeout
            && headers.elementsEqual(request.headers) { $0.name == $1.name && $0.value == $1.value }
    }
}

/// One transfer in flight: what curl points into (the write target) lives here
/// until the transfer is removed from the multi handle.
private final class Transfer {
    let post: PendingPost
    let easy: EasyHandle
    let maxBodyBytes: Int
    var body: [UInt8] = []
    var truncated = false
    /// curl asked to send the request a second time (the reused connection it went out on died).
    private(set) var resendRefused = false
    private var requestStarted = false

    init(post: PendingPost, easy: EasyHandle, maxBodyBytes: Int) {
        self.post = post
        self.easy = easy
        self.maxBodyBytes = maxBodyBytes
    }

    /// Sets the options; returns a reason when the request cannot be sent as given.
    func configure() -> String? {
        let request = post.request
        easy.errorBuffer[0] = 0
        if easy.shape?.matches(request) != true {
            easy.reset()
            if let reason = configureShape(request) { return reason }
            easy.shape = RequestShape(request)
        }
        return configureTransfer(request)
    }

    /// The options every request of this URL, headers and timeouts shares.
    private func configureShape(_ request: HTTPRequest) -> String? {
        let handle = easy.handle
        guard !request.url.utf8.contains(0) else { return "malformed url" }
        for header in request.headers {
            guard Transfer.isValidName(header.name), Transfer.isValidValue(header.value) else {
                return "invalid header"
            }
            // "Name;" is curl's spelling for a header with an empty value ("Name:" would remove it).
            let line = header.value.isEmpty ? "\(header.name);" : "\(header.name): \(header.value)"
            guard append(line) else { return "out of memory" }
        }
        // An empty Expect stops curl waiting for "100 Continue" on larger bodies.
        guard append("Expect:") else { return "out of memory" }

        var status = CURLE_OK
        func set(_ result: CURLcode) {
            if status == CURLE_OK { status = result }
        }
        set(CCurl_easy_setopt_string(handle, CURLOPT_URL, request.url))
        set(CCurl_easy_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https"))
        set(CCurl_easy_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0))
        set(CCurl_easy_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        set(CCurl_easy_setopt_long(handle, CURLOPT_TCP_NODELAY, 1))
        set(CCurl_easy_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, 1))
        set(CCurl_easy_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, 2))
        set(CCurl_easy_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, Transfer.milliseconds(request.connectTimeout)))
        set(CCurl_easy_setopt_long(handle, CURLOPT_TIMEOUT_MS, Transfer.milliseconds(request.timeout)))
        set(CCurl_easy_setopt_pointer(handle, CURLOPT_ERRORBUFFER, easy.errorBuffer))
        set(CCurl_easy_setopt_slist(handle, CURLOPT_HTTPHEADER, easy.headerList))
        set(CCurl_easy_setopt_long(handle, CURLOPT_POST, 1))
        set(CCurl_easy_setopt_prereq_callback(handle, prereqCallback))
        set(CCurl_easy_setopt_write_callback(handle, CURLOPT_WRITEFUNCTION, receiveCallback))
        return Transfer.failure(status)
    }

    /// The options of this one transfer: its body, and itself as the callbacks' target.
    private func configureTransfer(_ request: HTTPRequest) -> String? {
        let handle = easy.handle
        var status = CURLE_OK
        func set(_ result: CURLcode) {
            if status == CURLE_OK { status = result }
        }
        set(CCurl_easy_setopt_off_t(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(request.body.count)))
        // Copied by curl and sent in the same segment as the head (a body from a read callback left in a
        // segment of its own, a second wake-up of the gateway per request: docs/performance.md, change 20).
        set(Transfer.copyPostFields(handle, request.body))
        // Found by `make chaos`: curl re-sends a request by itself when a reused connection dies before
        // any answer byte, and the gateway gets the message twice inside one attempt. curl calls this
        // before each send of the request; the second call is that re-send, and is refused.
        set(CCurl_easy_setopt_pointer(handle, CURLOPT_PREREQDATA, Unmanaged.passUnretained(self).toOpaque()))
        // Unretained: the worker's table of active transfers keeps this object alive until curl is done with it.
        set(CCurl_easy_setopt_pointer(handle, CURLOPT_WRITEDATA, Unmanaged.passUnretained(self).toOpaque()))
        return Transfer.failure(status)
    }

    private static func failure(_ status: CURLcode) -> String? {
        guard status != CURLE_OK else { return nil }
        return "curl set-up failed: " + lowercasedFirst(String(cString: curl_easy_strerror(status)))
    }

    /// Whether curl may send the request now: only the first time.
    func mayStartRequest() -> Bool {
        guard !requestStarted else {
            resendRefused = true
            return false
        }
        requestStarted = true
        return true
    }

    private static func copyPostFields(_ handle: UnsafeMutableRawPointer, _ body: [UInt8]) -> CURLcode {
        // An empty array may have no storage, and curl needs a pointer; it copies POSTFIELDSIZE bytes, here none.
        let bytes = body.isEmpty ? [0] : body
        return bytes.withUnsafeBytes { bytes in
            CCurl_easy_setopt_pointer(handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress))
        }
    }

    /// Appends answer bytes up to the limit; past it, keeps what fits and aborts the transfer.
    func receive(_ chunk: UnsafeRawBufferPointer) -> Int {
        let room = maxBodyBytes - body.count
        if chunk.count <= room {
            body.append(contentsOf: chunk)
            return chunk.count
        }
        body.append(contentsOf: chunk.prefix(room))
        truncated = true
        return 0  // fewer bytes than given: curl stops with CURLE_WRITE_ERROR
    }

    private func append(_ line: String) -> Bool {
        guard let list = curl_slist_append(easy.headerList, line) else { return false }
        easy.headerList = list
        return true
    }

    private static func isValidName(_ name: String) -> Bool {
        !name.isEmpty
            && name.utf8.allSatisfy { byte in
                byte > 0x20 && byte < 0x7F && byte != UInt8(ascii: ":")
            }
    }

    private static func isValidValue(_ value: String) -> Bool {
        !value.utf8.contains { $0 == 0 || $0 == 0x0A || $0 == 0x0D }
    }

    /// curl treats 0 as "no limit", so anything that would round to 0 becomes 1 ms.
    static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        guard seconds > 0 || (seconds == 0 && attoseconds > 0) else { return 1 }
        let wholeSeconds = Swift.min(seconds, 1_000_000_000)
        let fraction = (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Swift.max(1, Int(wholeSeconds) * 1000 + Int(fraction))
    }

    static func lowercasedFirst(_ text: String) -> String {
        guard let first = text.first else { return text }
        return first.lowercased() + text.dropFirst()
    }
}

/// CURLOPT_WRITEFUNCTION: captures nothing; the transfer arrives through `userdata`.
private let receiveCallback: curl_write_callback = { data, size, count, userdata in
    guard let userdata else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(userdata).takeUnretainedValue()
    return transfer.receive(UnsafeRawBufferPointer(start: data, count: size * count))
}

/// CURLMOPT_SOCKETFUNCTION: captures nothing; the worker arrives through `userp`.
private let socketCallback: curl_socket_callback = { _, socket, what, userp, _ in
    guard let userp else { return -1 }
    Unmanaged<CurlWorker>.fromOpaque(userp).takeUnretainedValue().watch(socket, what: what)
    return 0
}

/// CURLMOPT_TIMERFUNCTION: captures nothing; the worker arrives through `userp`.
private let timerCallback: curl_multi_timer_callback = { _, milliseconds, userp in
    guard let userp else { return -1 }
    Unmanaged<CurlWorker>.fromOpaque(userp).takeUnretainedValue().setTimer(milliseconds: milliseconds)
    return 0
}

/// CURLOPT_PREREQFUNCTION: captures nothing; the transfer arrives through `clientp`.
private let prereqCallback: curl_prereq_callback = { clientp, _, _, _, _ in
    guard let clientp else { return CURL_PREREQFUNC_ABORT }
    let transfer = Unmanaged<Transfer>.fromOpaque(clientp).takeUnretainedValue()
    return transfer.mayStartRequest() ? CURL_PREREQFUNC_OK : CURL_PREREQFUNC_ABORT
}

/// The curl thread's own state: only ever touched on that thread.
///
/// Driven through `curl_multi_socket_action`: curl says which sockets to watch and when its next
/// timer is due, one `poll` waits on all of them, and curl then runs only the transfers whose socket
/// is ready. (`curl_multi_perform` ran every transfer on each wake-up, and each checked its own socket
/// with a poll of its own: 13.6 `poll` calls per request at 256 in flight, docs/performance.md.)
private final class CurlWorker {
    private let engine: CurlEngine
    private let multi: UnsafeMutableRawPointer
    private var idle: [EasyHandle] = []
    private var active: [UnsafeMutableRawPointer: Transfer] = [:]
    /// Sockets curl asked to watch, with the poll events it wants on each.
    private var watched: [Int32: Int16] = [:]
    /// When curl wants `CURL_SOCKET_TIMEOUT` handled; nil when it has no timer.
    private var timerDue: ContinuousClock.Instant?
    /// The pollfd array of the last wait, rebuilt only after `watched` changed.
    private var pollSet: [pollfd] = []
    private var pollSetStale = true
    /// curl's spelling of "no socket": run the timers (`CURL_SOCKET_TIMEOUT`).
    private static let timeoutSocket: Int32 = -1
    private static let longestWaitMs: Int32 = 1000

    init(engine: CurlEngine) {
        self.engine = engine
        multi = engine.multi
    }

    func run() {
        let context = Unmanaged.passUnretained(self).toOpaque()
        _ = CCurl_multi_setopt_socket_callback(multi, socketCallback)
        _ = CCurl_multi_setopt_pointer(multi, CURLMOPT_SOCKETDATA, context)
        _ = CCurl_multi_setopt_timer_callback(multi, timerCallback)
        _ = CCurl_multi_setopt_pointer(multi, CURLMOPT_TIMERDATA, context)
        defer {
            // The engine's curl_multi_cleanup may report closed sockets; this worker is gone by then.
            _ = CCurl_multi_setopt_socket_callback(multi, nil)
            _ = CCurl_multi_setopt_timer_callback(multi, nil)
        }
        while true {
            runJobs()
            let (posts, stopping) = engine.take(max: engine.maxConcurrent - active.count)
            if stopping {
                for post in posts {
                    post.finish(.notSent(reason: CurlEngine.shutDownReason))
                }
                abortActive()
                engine.handOffJobs()
                return
            }
            for post in posts {
                start(post)
            }
            runDueTimer()
            // A finished transfer frees a slot, and its caller's job may be waiting: look again before sleeping.
            if collectFinished() > 0 || engine.hasJobs {
                continue
            }
            waitAndRun()
        }
    }

    /// Runs the Swift jobs queued for this thread (`CurlTaskExecutor`), including those they queue meanwhile.
    private func runJobs() {
        while true {
            let (jobs, executor) = engine.takeJobs()
            guard let executor, !jobs.isEmpty else { return }
            for job in jobs {
                job.runSynchronously(on: executor)
            }
        }
    }

    /// curl's socket callback: start, change or stop watching `socket`.
    fileprivate func watch(_ socket: Int32, what: Int32) {
        let events: Int16
        switch what {
        case CURL_POLL_IN: events = Int16(POLLIN)
        case CURL_POLL_OUT: events = Int16(POLLOUT)
        case CURL_POLL_INOUT: events = Int16(POLLIN | POLLOUT)
        default:
            watched.removeValue(forKey: socket)
            pollSetStale = true
            return
        }
        if watched[socket] != events {
            watched[socket] = events
            pollSetStale = true
        }
    }

    /// curl's timer callback: -1 removes the timer, 0 asks for it as soon as possible.
    fileprivate func setTimer(milliseconds: Int) {
        timerDue = milliseconds < 0 ? nil : ContinuousClock.now.advanced(by: .milliseconds(milliseconds))
    }

    /// Waits for a watched socket, the wake pipe, curl's timer or at most a second, then hands each
    /// ready socket to curl; the caller's next pass runs a due timer and collects finished transfers.
    private func waitAndRun() {
        if pollSetStale {
            pollSet.removeAll(keepingCapacity: true)
            pollSet.append(pollfd(fd: engine.wakeRead, events: Int16(POLLIN), revents: 0))
            for (socket, events) in watched {
                pollSet.append(pollfd(fd: socket, events: events, revents: 0))
            }
            pollSetStale = false
        }
        var timeout = Self.longestWaitMs
        if let timerDue {
            let now = ContinuousClock.now
            timeout = timerDue <= now ? 0 : Int32(Swift.min(Transfer.milliseconds(timerDue - now), Int(timeout)))
        }
        let ready = pollSet.withUnsafeMutableBufferPointer { set in
            poll(set.baseAddress, nfds_t(set.count), timeout)
        }
        guard ready > 0 else { return }
        // Socket actions below may change `watched`; the set polled stays as it is until the next wait.
        for index in pollSet.indices where pollSet[index].revents != 0 {
            let entry = pollSet[index]
            pollSet[index].revents = 0
            if entry.fd == engine.wakeRead {
                drainWakePipe()
                continue
            }
            var mask: Int32 = 0
            if entry.revents & Int16(POLLIN | POLLHUP) != 0 { mask |= CURL_CSELECT_IN }
            if entry.revents & Int16(POLLOUT) != 0 { mask |= CURL_CSELECT_OUT }
            if entry.revents & Int16(POLLERR | POLLNVAL) != 0 { mask |= CURL_CSELECT_ERR }
            var running: Int32 = 0
            _ = curl_multi_socket_action(multi, entry.fd, mask, &running)
        }
    }

    private func runDueTimer() {
        guard let due = timerDue, due <= ContinuousClock.now else { return }
        timerDue = nil
        var running: Int32 = 0
        _ = curl_multi_socket_action(multi, Self.timeoutSocket, 0, &running)
    }

    private func drainWakePipe() {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 64) { buffer in
            while read(engine.wakeRead, buffer.baseAddress, buffer.count) > 0 {}
        }
        engine.wakeConsumed()
    }

    private func start(_ post: PendingPost) {
        guard let easy = idle.popLast() ?? EasyHandle() else {
            post.finish(.notSent(reason: "out of memory"))
            return
        }
        let transfer = Transfer(post: post, easy: easy, maxBodyBytes: engine.maxBodyBytes)
        if let reason = transfer.configure() {
            recycle(easy)
            post.finish(.notSent(reason: reason))
            return
        }
        let added = curl_multi_add_handle(multi, easy.handle)
        guard added == CURLM_OK else {
            recycle(easy)
            post.finish(.notSent(reason: "curl multi error: \(String(cString: curl_multi_strerror(added)))"))
            return
        }
        active[easy.handle] = transfer
    }

    private func collectFinished() -> Int {
        var finished = 0
        var remaining: Int32 = 0
        while let message = curl_multi_info_read(multi, &remaining) {
            guard message.pointee.msg == CURLMSG_DONE, let handle = message.pointee.easy_handle else { continue }
            let result = message.pointee.data.result
            guard let transfer = active.removeValue(forKey: handle) else { continue }
            let response = classify(transfer, result)
            curl_multi_remove_handle(multi, handle)
            recycle(transfer.easy)
            transfer.post.finish(response)
            finished += 1
        }
        return finished
    }

    private func abortActive() {
        for (handle, transfer) in active {
            let sent = requestWentOut(handle)
            curl_multi_remove_handle(multi, handle)
            let reason = CurlEngine.shutDownReason
            transfer.post.finish(sent ? .noAnswer(reason: reason) : .notSent(reason: reason))
        }
        active.removeAll()
        idle.removeAll()
    }

    private func recycle(_ easy: EasyHandle) {
        // The options stay for the next request of the same shape (`Transfer.configure`); the multi
        // handle keeps the connections.
        if idle.count < engine.maxConcurrent {
            idle.append(easy)
        }
    }

    /// Maps curl's result to what it means for the gateway. Any failure after a byte of the
    /// request left is `.noAnswer` (the gateway may have acted on it), whatever curl calls it.
    private func classify(_ transfer: Transfer, _ result: CURLcode) -> HTTPResponse {
        let handle = transfer.easy.handle
        if result == CURLE_OK {
            return .answered(status: responseCode(handle), body: transfer.body, bodyTruncated: false)
        }
        if result == CURLE_WRITE_ERROR && transfer.truncated {
            return .answered(status: responseCode(handle), body: transfer.body, bodyTruncated: true)
        }
        let sent = requestWentOut(handle)
        let reason: String
        switch result {
        case CURLE_UNSUPPORTED_PROTOCOL:
            // After sending, this is curl refusing an answer with no status line (HTTP/0.9).
            reason = sent ? "malformed answer" : "unsupported protocol"
        case CURLE_URL_MALFORMAT:
            reason = "malformed url"
        case CURLE_COULDNT_RESOLVE_HOST:
            reason = "could not resolve host"
        case CURLE_COULDNT_RESOLVE_PROXY:
            reason = "could not resolve proxy"
        case CURLE_COULDNT_CONNECT:
            reason = connectFailure(handle)
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
            CURLE_SSL_CACERT_BADFILE, CURLE_SSL_CRL_BADFILE, CURLE_SSL_ISSUER_ERROR, CURLE_SSL_PINNEDPUBKEYNOTMATCH,
            CURLE_SSL_INVALIDCERTSTATUS, CURLE_SSL_CLIENTCERT, CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED,
            CURLE_SSL_ENGINE_INITFAILED, CURLE_USE_SSL_FAILED, CURLE_SSL_SHUTDOWN_FAILED:
            reason = "TLS: " + detail(transfer, result)
        case CURLE_OPERATION_TIMEDOUT:
            reason = sent ? "timeout" : "connect timeout"
        case CURLE_GOT_NOTHING:
            reason = sent ? "empty reply" : "connection closed"
        case CURLE_RECV_ERROR:
            reason = osErrno(handle) == ECONNRESET ? "connection reset" : "receive error"
        case CURLE_SEND_ERROR:
            reason = osErrno(handle) == ECONNRESET || osErrno(handle) == EPIPE ? "connection reset" : "send error"
        case CURLE_PARTIAL_FILE:
            reason = "incomplete answer"
        case CURLE_WEIRD_SERVER_REPLY:
            reason = "malformed answer"
        case CURLE_ABORTED_BY_CALLBACK where transfer.resendRefused:
            // curl wanted to send the request again: it had gone out, and the connection died.
            return .noAnswer(reason: "connection closed after the request was sent")
        default:
            reason = Transfer.lowercasedFirst(String(cString: curl_easy_strerror(result)))
        }
        return sent ? .noAnswer(reason: reason) : .notSent(reason: reason)
    }

    /// Whether any byte of the request left: then the gateway may have acted on it.
    private func requestWentOut(_ handle: UnsafeMutableRawPointer) -> Bool {
        var requestSize = 0
        var uploaded: curl_off_t = 0
        _ = CCurl_easy_getinfo_long(handle, CURLINFO_REQUEST_SIZE, &requestSize)
        _ = CCurl_easy_getinfo_off_t(handle, CURLINFO_SIZE_UPLOAD_T, &uploaded)
        return requestSize > 0 || uploaded > 0
    }

    private func responseCode(_ handle: UnsafeMutableRawPointer) -> Int {
        var code = 0
        _ = CCurl_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &code)
        return code
    }

    private func osErrno(_ handle: UnsafeMutableRawPointer) -> Int32 {
        var value = 0
        _ = CCurl_easy_getinfo_long(handle, CURLINFO_OS_ERRNO, &value)
        return Int32(truncatingIfNeeded: value)
    }

    private func connectFailure(_ handle: UnsafeMutableRawPointer) -> String {
        switch osErrno(handle) {
        case ECONNREFUSED: "connection refused"
        case ENETUNREACH: "network unreachable"
        case EHOSTUNREACH: "host unreachable"
        case ETIMEDOUT: "connect timeout"
        default: "could not connect"
        }
    }

    /// curl's error buffer text (it names hosts, never credentials or headers), made one short line.
    private func detail(_ transfer: Transfer, _ result: CURLcode) -> String {
        var text = transfer.easy.errorText
        if text.isEmpty {
            text = String(cString: curl_easy_strerror(result))
        }
        var line = String(
            text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? " " : Character($0) }
        ).trimmingSpaces()
        if line.count > 200 {
            line = String(line.prefix(200))
        }
        return line
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        var slice = Substring(self)
        while slice.first == " " { slice.removeFirst() }
        while slice.last == " " { slice.removeLast() }
        return String(slice)
    }
}
