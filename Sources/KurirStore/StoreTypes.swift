import KurirCore

/// A store failure: a stable code and one line for operators (never a message text, target or token).
public struct StoreError: Error, Sendable, CustomStringConvertible, Equatable {
    /// What kind of failure; compare with the static members (`.locked`, `.full`, …).
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Kind: String, Sendable {
            case locked, syncMismatch, full, busy, io, corrupt, cannotOpen, readOnly, notFound, sqlite
        }
        private let kind: Kind
        private init(_ kind: Kind) { self.kind = kind }

        /// Another kurir process holds the database's lock file.
        public static let locked = Code(.locked)
        /// `PRAGMA synchronous` did not read back as the requested mode.
        public static let syncMismatch = Code(.syncMismatch)
        /// The database or disk is full (`SQLITE_FULL`).
        public static let full = Code(.full)
        /// The database stayed busy past the busy timeout.
        public static let busy = Code(.busy)
        /// An I/O error (`SQLITE_IOERR`) or a file system call failed.
        public static let io = Code(.io)
        /// The file is not a database or is damaged.
        public static let corrupt = Code(.corrupt)
        /// The file could not be opened.
        public static let cannotOpen = Code(.cannotOpen)
        /// The database is read-only.
        public static let readOnly = Code(.readOnly)
        /// A row that should exist does not (a programming error in the caller).
        public static let notFound = Code(.notFound)
        /// Any other SQLite error.
        public static let sqlite = Code(.sqlite)

        /// The code's name, e.g. `full`.
        public var description: String { kind.rawValue }
    }

    /// What kind of failure.
    public var code: Code
    /// One line for operators.
    public var message: String

    /// Creates an error.
    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    /// The one-line message.
    public var description: String { message }
}

/// An event row to publish, written in the same transaction as the state change that causes it.
public struct OutboxEvent: Sendable, Equatable {
    /// The event's `event_id` (the same when published again).
    public var eventID: String
    /// Topic to publish on.
    public var topic: String
    /// The JSON payload.
    public var payload: [UInt8]

    /// Creates an outbox event.
    public init(eventID: String, topic: String, payload: [UInt8]) {
        self.eventID = eventID
        self.topic = topic
        self.payload = payload
    }
}

/// `whatsapp_notifications.status`.
public enum DeliveryStatus: String, Sendable, CaseIterable {
    /// Accepted, first round not finished.
    case pending
    /// Failed on every gateway, another round is scheduled.
    case retrying
    /// A gateway accepted it.
    case sent
    /// Failed for good.
    case failed
    /// The request was invalid.
    case rejected
    /// `WHATSAPP_ENABLED=false`: recorded, not sent.
    case disabled
}

/// One delivery (request × target) to record at intake.
public struct NewDelivery: Sendable {
    /// The request id (producer's or generated).
    public var requestID: String
    /// The topic part after `notify/whatsapp/`.
    public var route: String
    /// The normalised target (or, for a rejected request, what could be recorded of it).
    public var target: String
    /// The message text.
    public var message: String
    /// The request's priority.
    public var priority: Priority
    /// The request's `reply_to` topic.
    public var replyTo: String?
    /// The primary gateway's name.
    public var provider: String
    /// `pending`, or a final status for rejected/disabled requests.
    public var status: DeliveryStatus
    /// The rejection reason, if any.
    public var errorMessage: String?
    /// When the request was received.
    public var createdAt: Timestamp
    /// Written in the same transaction, only if the row was inserted (not a duplicate).
    public var events: [OutboxEvent]

    /// Creates a delivery to record.
    public init(
        requestID: String, route: String, target: String, message: String, priority: Priority,
        replyTo: String?, provider: String, status: DeliveryStatus, errorMessage: String?,
        createdAt: Timestamp, events: [OutboxEvent]
    ) {
        self.requestID = requestID
        self.route = route
        self.target = target
        self.message = message
        self.priority = priority
        self.replyTo = replyTo
        self.provider = provider
        self.status = status
        self.errorMessage = errorMessage
        self.createdAt = createdAt
        self.events = events
    }
}

/// An attempt row with NULL outcome that the claim inserted for a round's first attempt.
public struct PendingAttempt: Sendable, Equatable {
    /// Its row id.
    public var id: Int64
    /// Its `attempted_at` (the claim's time).
    public var attemptedAt: Timestamp

    /// Creates a pending attempt.
    public init(id: Int64, attemptedAt: Timestamp) {
        self.id = id
        self.attemptedAt = attemptedAt
    }
}

/// A claimed delivery: what the delivery loop needs to run a round.
public struct DeliveryRecord: Sendable, Equatable {
    /// Row id.
    public var id: Int64
    /// The request id.
    public var requestID: String
    /// The route.
    public var route: String
    /// The normalised target.
    public var target: String
    /// The message text.
    public var message: String
    /// The priority.
    public var priority: Priority
    /// The `reply_to` topic.
    public var replyTo: String?
    /// Status before this round (`pending` or `retrying`).
    public var status: DeliveryStatus
    /// Gateway attempts so far.
    public var attempts: Int
    /// Retry rounds already started after the first round.
    public var retries: Int
    /// When the request was received.
    public var createdAt: Timestamp
    /// The first attempt's row, inserted by the claim (`claimDueGrouped(firstAttempt:)`), NULL outcome.
    public var pendingAttempt: PendingAttempt? = nil

    /// Creates a record.
    public init(
        id: Int64, requestID: String, route: String, target: String, message: String, priority: Priority,
        replyTo: String?, status: DeliveryStatus, attempts: Int, retries: Int, createdAt: Timestamp
    ) {
        self.id = id
        self.requestID = requestID
        self.route = route
        self.target = target
        self.message = message
        self.priority = priority
        self.replyTo = replyTo
        self.status = status
        self.attempts = attempts
        self.retries = retries
        self.createdAt = createdAt
    }
}

/// Every column of `whatsapp_notifications`, for tests and operators.
public struct NotificationRow: Sendable, Equatable {
    /// `id`.
    public var id: Int64
    /// `request_id`.
    public var requestID: String
    /// `route`.
    public var route: String
    /// `target`.
    public var target: String
    /// `message`.
    public var message: String
    /// `priority`.
    public var priority: String
    /// `reply_to`.
    public var replyTo: String?
    /// `provider`.
    public var provider: String
    /// `status`.
    public var status: String
    /// `failover` (stored as 0/1).
    public var failover: Bool
    /// `error_message`.
    public var errorMessage: String?
    /// `attempts`.
    public var attempts: Int
    /// `retries`.
    public var retries: Int
    /// `created_at`.
    public var createdAt: String
    /// `updated_at`.
    public var updatedAt: String
    /// `sent_at`.
    public var sentAt: String?
    /// `next_attempt_at`.
    public var nextAttemptAt: String?
    /// `in_flight_since`.
    public var inFlightSince: String?
}

/// Every column of `whatsapp_attempts`, for tests and operators.
public struct AttemptRow: Sendable, Equatable {
    /// `id`.
    public var id: Int64
    /// `notification_id`.
    public var notificationID: Int64
    /// `provider`.
    public var provider: String
    /// `outcome`; nil while the attempt is in flight.
    public var outcome: String?
    /// `error`.
    public var error: String?
    /// `http_status`.
    public var httpStatus: Int?
    /// `latency_ms`.
    public var latencyMs: Int64?
    /// `attempted_at`.
    public var attemptedAt: String
}

/// The end of a round, as `Store.finishRound` writes it.
public struct FinishedRound: Sendable, Equatable {
    /// The notification row.
    public var notificationID: Int64
    /// Its new status (`sent`, `retrying` or `failed`).
    public var status: DeliveryStatus
    /// The gateway that delivered, or the primary when none did.
    public var provider: String
    /// Delivered by a gateway other than the first of the chain.
    public var failover: Bool
    /// The contract's error message for `retrying`/`failed`.
    public var errorMessage: String?
    /// When it was delivered.
    public var sentAt: Timestamp?
    /// When the next retry is due.
    public var nextAttemptAt: Timestamp?
    /// Retry rounds started so far.
    public var retries: Int
    /// When the round ended.
    public var at: Timestamp
    /// Events written with the state change.
    public var events: [OutboxEvent]

    /// Creates a finished round.
    public init(
        notificationID: Int64, status: DeliveryStatus, provider: String, failover: Bool, errorMessage: String?,
        sentAt: Timestamp?, nextAttemptAt: Timestamp?, retries: Int, at: Timestamp, events: [OutboxEvent]
    ) {
        self.notificationID = notificationID
        self.status = status
        self.provider = provider
        self.failover = failover
        self.errorMessage = errorMessage
        self.sentAt = sentAt
        self.nextAttemptAt = nextAttemptAt
        self.retries = retries
        self.at = at
        self.events = events
    }
}

/// What `Store.claimDueGrouped` took.
public struct DueClaim: Sendable {
    /// The rows claimed, marked in flight.
    public var records: [DeliveryRecord]
    /// When fewer rows than asked were claimed: the earliest `next_attempt_at` of a retry waiting for
    /// its time (nil when none). Not read (nil) when the claim took all it was asked for.
    public var nextRetry: Timestamp?
    /// Every row due at the claim's time is in `records`: none waits for a target with a round in
    /// flight (no busy targets were given, and no target had two due rows) or for a free slot. Until
    /// more rows arrive, a round's end then frees nothing another claim could take.
    public var tookEveryDueRow: Bool
}

/// A gateway attempt's outcome waiting to be written (see `Store.finishRoundGrouped`).
public struct CompletedAttempt: Sendable, Equatable {
    /// The attempt row `beginAttempt` returned.
    public var attemptID: Int64
    /// Its outcome.
    public var result: AttemptResult
    /// Events written with it (failover).
    public var events: [OutboxEvent]
    /// Its `attempted_at`, when the caller knows it (saves reading it back); nil reads the row.
    public var startedAt: Timestamp?

    /// Creates a completed attempt.
    public init(attemptID: Int64, result: AttemptResult, events: [OutboxEvent], startedAt: Timestamp? = nil) {
        self.attemptID = attemptID
        self.result = result
        self.events = events
        self.startedAt = startedAt
    }
}
