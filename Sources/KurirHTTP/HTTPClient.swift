import CCurl

/// Process-wide libcurl set-up.
public enum HTTPGlobal {
    /// Call once in `main`, before any thread starts (`curl_global_init(CURL_GLOBAL_DEFAULT)`).
    ///
    /// libcurl initialises itself lazily otherwise, which is not safe while other threads run.
    public static func initialize() {
        _ = curl_global_init(CCurl_global_default_flags())
    }
}

/// Async HTTP POST over one libcurl multi handle driven by a dedicated thread.
///
/// `post` only enqueues and wakes the thread; the thread owns every curl handle, runs at most
/// `maxConcurrent` transfers at once (the rest wait in order), reuses connections, and resumes
/// each caller when its transfer ends. Nothing here logs: reasons are short, one line, and never
/// contain header values or URL credentials.
public final class HTTPClient: Sendable {
    private let engine: CurlEngine
    /// Runs Swift tasks that prefer it on the curl thread (see `CurlTaskExecutor`).
    public let executor: CurlTaskExecutor

    /// Starts the curl thread.
    ///
    /// - Parameters:
    ///   - maxConcurrent: transfers in flight at once (≥ 1); also the size of the connection cache.
    ///   - maxBodyBytes: answer bytes kept (≥ 0); a longer answer is cut and marked truncated.
    public init(maxConcurrent: Int = 64, maxBodyBytes: Int = 65_536) throws(HTTPClientError) {
        guard maxConcurrent >= 1 else {
            throw HTTPClientError(code: .invalidArgument, message: "maxConcurrent must be at least 1")
        }
        guard maxBodyBytes >= 0 else {
            throw HTTPClientError(code: .invalidArgument, message: "maxBodyBytes must not be negative")
        }
        engine = try CurlEngine.start(maxConcurrent: maxConcurrent, maxBodyBytes: maxBodyBytes)
        executor = CurlTaskExecutor(engine: engine)
    }

    deinit {
        engine.shutdown()
    }

    /// POSTs `request.body` to `request.url` and returns when the transfer ends.
    ///
    /// Never throws: every failure is a value. `elapsed` runs from this call to the end of the
    /// transfer, so it includes any wait for a free slot. Cancelling the calling task does not
    /// cut the transfer short; the request's own timeouts bound it.
    public func post(_ request: HTTPRequest) async -> (response: HTTPResponse, elapsed: Duration) {
        let started = ContinuousClock.now
        return await withCheckedContinuation { continuation in
            engine.enqueue(PendingPost(request: request, started: started, continuation: continuation))
        }
    }

    /// Stops the curl thread and waits for it to end.
    ///
    /// Posts still waiting for a slot, and any made afterwards, finish as
    /// `.notSent(reason: "client shut down")`; transfers in flight are cut and finish as
    /// `.notSent` or, when the request had already gone out, `.noAnswer` with the same reason.
    /// Safe to call more than once and from any thread but the curl thread.
    public func shutdown() {
        engine.shutdown()
    }
}

/// A task executor whose jobs run on the curl thread, between its passes over the sockets.
///
/// A task that prefers it (`withTaskExecutorPreference`) and awaits a POST is resumed on the thread that
/// finished the transfer, with no hand-off to another thread; and whatever it posts next is picked up
/// by the same thread's next pass. Jobs must not block for long: while one runs, no transfer moves.
/// After `shutdown` the jobs go to Swift's global executor.
public final class CurlTaskExecutor: TaskExecutor {
    private let engine: CurlEngine

    init(engine: CurlEngine) {
        self.engine = engine
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        engine.enqueue(UnownedJob(job), from: self)
    }
}
