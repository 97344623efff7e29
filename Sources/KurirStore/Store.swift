import Foundation
import GRDB
import GRDBSQLite
import KurirCore
import KurirWALWrites
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// kurir's SQLite database: intake, claims, attempts and the event outbox.
///
/// One `DatabaseQueue` serialises every access; each method is one short transaction and is safe to
/// call from any thread (the intake calls `accept` synchronously on the MQTT network thread, before the
/// PUBACKs of the requests it commits).
/// Times are stored as fixed-width `Timestamp.rfc3339` text, so comparing text compares times.
public final class Store: Sendable {
    /// The database file.
    public let path: String
    private let queue: DatabaseQueue
    private let lockFD: Int32
    /// Outbox rows the broker acknowledged that no committed deletion has removed yet.
    private let acknowledgedOutbox = AcknowledgedOutbox()
    private let requestedSync: DatabaseSync
    /// Batches the delivery loop's writes into shared transactions (see `GroupCommitter`).
    private let committer: GroupCommitter
    /// Copies the WAL into the database file off the writers' path (see `Checkpointer`).
    private let checkpointer: Checkpointer
    /// FULL only: which of the group committer's commits still wait for an fsync (see `DeferredSync`).
    let deferredSync: DeferredSync?

    /// Opens (creating with file mode 0600) the database, takes an exclusive `flock` on "<path>.lock"
    /// (non-blocking: a second process gets StoreError locked with message "database <path> is in use
    /// by another kurir process (lock <path>.lock)"), WAL mode, sets PRAGMA synchronous to
    /// FULL(2)/NORMAL(1) AFTER GRDB's WAL switch and reads it back (mismatch → error), busy timeout,
    /// foreign keys, runs migrations.
    public init(path: String, sync: DatabaseSync) throws(StoreError) {
        let lockPath = path + ".lock"
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw StoreError(code: .io, message: "cannot open lock file \(lockPath): \(Self.errnoText())")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let busy = errno == EWOULDBLOCK
            let text = Self.errnoText()
            close(fd)
            if busy {
                throw StoreError(
                    code: .locked, message: "database \(path) is in use by another kurir process (lock \(lockPath))")
            }
            throw StoreError(code: .io, message: "cannot lock \(lockPath): \(text)")
        }
        do throws(StoreError) {
            // Create the file ourselves so SQLite (and its -wal/-shm files, which copy the mode) get 0600.
            let dbFD = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard dbFD >= 0 else {
                throw StoreError(code: .cannotOpen, message: "cannot open database \(path): \(Self.errnoText())")
            }
            close(dbFD)

            deferredSync = sync == .full ? DeferredSync(walPath: path + "-wal") : nil
            // Each WAL commit in one pwrite instead of two per page (wal_writes.c). Should the default VFS
            // not be wrappable, SQLite simply keeps it: the same bytes, more system calls.
            _ = kurir_wal_writes_install()
            var configuration = Configuration()
            configuration.journalMode = .wal
            configuration.busyMode = .timeout(5)
            configuration.foreignKeysEnabled = true
            configuration.label = "kurir"
            let queue: DatabaseQueue
            do {
                queue = try DatabaseQueue(path: path, configuration: configuration)
            } catch {
                throw Self.map(error, "open")
            }
            // GRDB's WAL switch sets synchronous=NORMAL; ours must come after it, and is checked.
            let pragma = sync == .full ? 2 : 1
            let readBack: Int
            do {
                readBack = try queue.writeWithoutTransaction { db in
                    try db.execute(sql: "PRAGMA synchronous = \(pragma)")
                    return try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1
                }
            } catch {
                throw Self.map(error, "set synchronous")
            }
            guard readBack == pragma else {
                throw StoreError(
                    code: .syncMismatch,
                    message: "database \(path): PRAGMA synchronous reads back \(readBack), expected \(pragma) (\(sync.rawValue))")
            }
            do {
                try Self.migrator.migrate(queue)
            } catch {
                throw Self.map(error, "migrate")
            }
            do {
                checkpointer = try Checkpointer(path: path, deferredSync: deferredSync)
            } catch {
                throw Self.map(error, "open checkpoint connection")
            }
            checkpointer.install(on: queue)
            self.queue = queue
        } catch {
            close(fd)
            throw error
        }
        self.path = path
        self.lockFD = fd
        self.requestedSync = sync
        self.committer = GroupCommitter(queue: queue, label: "kurir.store.commit", deferredSync: deferredSync)
    }

    deinit {
        // Pending group-committed writes (outbox deletions) land before the database closes.
        committer.flush()
        checkpointer.close()
        deferredSync?.close()
        // Close the database before releasing the lock, so the next owner never sees it half-open.
        try? queue.close()
        close(lockFD)
    }

    /// The synchronous mode in effect, read back from `PRAGMA synchronous`.
    public var synchronousMode: DatabaseSync {
        let value = try? queue.read { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
        switch value {
        case 2, 3: return .full
        case 1: return .normal
        default: return requestedSync
        }
    }

    // MARK: Intake

    /// One transaction: INSERT OR IGNORE each delivery (UNIQUE(request_id,target)); for each row actually
    /// inserted also insert its events. Returns, per delivery, whether it was inserted. Synchronous:
    /// kurir's network thread calls it once per read of requests, before their PUBACKs.
    ///
    /// `deferringSync`: in FULL, commit at NORMAL and leave the fsync to `syncAccepted()`, which the caller
    /// must call before it acknowledges the request (kurir's network thread does, once for every request
    /// it read in one go). Without it, in FULL, the commit is on disk when this returns.
    public func accept(_ deliveries: [NewDelivery], deferringSync: Bool = false) throws(StoreError) -> [Bool] {
        guard deferringSync, let deferredSync else { return try write("accept") { db in try Self.accept(deliveries, db) } }
        do {
            return try deferredSync.transaction(on: queue) { db in try Self.accept(deliveries, db) }
        } catch {
            throw Self.map(error, "accept")
        }
    }

    /// Puts every request accepted with `deferringSync` so far on disk (an `fdatasync` of the WAL, which
    /// covers every earlier commit); nothing to do in NORMAL or when nothing is owed.
    public func syncAccepted() throws(StoreError) {
        guard let deferredSync, deferredSync.owesSync else { return }
        if let failure = deferredSync.sync(at: DispatchTime.now().uptimeNanoseconds) {
            throw StoreError(code: .io, message: "cannot fsync \(path)-wal: \(failure)")
        }
    }

    private static func accept(_ deliveries: [NewDelivery], _ db: Database) throws -> [Bool] {
        var inserted: [Bool] = []
        inserted.reserveCapacity(deliveries.count)
        // Cached: this runs once per request, and preparing the statement cost more than running it.
        let statement = try db.cachedStatement(
            sql: """
                INSERT OR IGNORE INTO whatsapp_notifications
                  (request_id, route, target, message, priority, reply_to, provider, status,
                   error_message, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """)
        for d in deliveries {
            let created = d.createdAt.rfc3339
            try RawInsert.run(
                statement, db,
                [
                    d.requestID, d.route, d.target, d.message, d.priority.rawValue, d.replyTo, d.provider,
                    d.status.rawValue, d.errorMessage, created, created,
                ])
            let isNew = db.changesCount > 0
            inserted.append(isNew)
            if isNew {
                try Self.insert(d.events, at: created, db)
            }
        }
        return inserted
    }

    // MARK: Delivery loop

    /// At start: every attempt with NULL outcome → outcome 'unknown', error 'interrupted'; every
    /// notification with in_flight_since → cleared (it stays pending/retrying and is due now). Returns
    /// the number of attempts changed.
    ///
    /// An interrupted attempt also counts in its notification's `attempts` (it may have reached the gateway).
    public func recoverInterrupted(now: Timestamp) throws(StoreError) -> Int {
        try write("recover") { db in
            try db.execute(
                sql: """
                    UPDATE whatsapp_notifications
                    SET attempts = attempts + (SELECT COUNT(*) FROM whatsapp_attempts a
                                               WHERE a.notification_id = whatsapp_notifications.id
                                                 AND a.outcome IS NULL),
                        updated_at = ?
                    WHERE id IN (SELECT notification_id FROM whatsapp_attempts WHERE outcome IS NULL)
                    """, arguments: [now.rfc3339])
            try db.execute(
                sql: "UPDATE whatsapp_attempts SET outcome = 'unknown', error = 'interrupted' WHERE outcome IS NULL")
            let changed = db.changesCount
            try db.execute(
                sql: "UPDATE whatsapp_notifications SET in_flight_since = NULL WHERE in_flight_since IS NOT NULL")
            return changed
        }
    }

    /// Claims due rows one per target, in the order the rows were received within a priority: a target
    /// in `busyTargets` (a round in flight) or already taken earlier in this claim is skipped, so its
    /// next row waits for the round before it to finish. Rows with status pending/retrying, not in flight,
    /// due by `now`, ordered by priority (critical, normal, bulk) then id, are marked in flight at `now`.
    ///
    /// Walks the queue index in claim order. SQLite itself passes over the rows of busy targets and of
    /// targets taken earlier in the call, so a backlog of one target (ten thousand alarms to one on-call
    /// group) neither hides the other targets' rows behind it nor costs a decoded row each; `scanLimit`
    /// bounds the rows decoded per call.
    public func claimDueInTargetOrder(
        now: Timestamp, limit: Int, busyTargets: Set<String>, scanLimit: Int = 20_000
    ) throws(StoreError) -> [DeliveryRecord] {
        guard limit > 0 else { return [] }
        return try write("claim") { db in
            try Self.claim(now, limit, busyTargets, scanLimit, firstAttempt: nil, db).records
        }
    }

    /// `claimDueInTargetOrder`, group-committed with the rounds' writes, so the claiming task suspends
    /// instead of blocking an executor thread while another transaction runs.
    ///
    /// `firstAttempt`: for each claimed row on its first round (no attempts yet), also insert an attempt
    /// of this provider with NULL outcome, in the same transaction, and return its id in
    /// `DeliveryRecord.pendingAttempt`; the round uses it for its first attempt instead of a commit of its own.
    ///
    /// A claim that takes fewer than `limit` rows also reads `nextRetryTime` in its transaction: the
    /// delivery loop sleeps until then, and asking in a job of its own cost it a second group transaction.
    public func claimDueGrouped(
        now: Timestamp, limit: Int, busyTargets: Set<String>, firstAttempt: Provider?, scanLimit: Int = 20_000
    ) async throws(StoreError) -> DueClaim {
        guard limit > 0 else { return DueClaim(records: [], nextRetry: nil, tookEveryDueRow: false) }
        let (scan, nextRetryText) = try await committer.run("claim") { db in
            let scan = try Self.claim(now, limit, busyTargets, scanLimit, firstAttempt: firstAttempt, db)
            return (scan, scan.records.count < limit ? try Self.nextRetryText(db) : nil)
        }
        return DueClaim(
            records: scan.records, nextRetry: try parseRetryTime(nextRetryText), tookEveryDueRow: scan.tookEveryDueRow)
    }

    /// The rows one claim took, and whether they are every row that was due: its first page of the queue
    /// held all of them, with no target given as busy and none met twice.
    private struct ClaimScan: Sendable {
        var records: [DeliveryRecord]
        var tookEveryDueRow: Bool
    }

    private static func claim(
        _ now: Timestamp, _ limit: Int, _ busyTargets: Set<String>, _ scanLimit: Int, firstAttempt: Provider?,
        _ db: Database
    ) throws -> ClaimScan {
        var records: [DeliveryRecord] = []
        var pages = 0
        var passedOver = !busyTargets.isEmpty
        var exhausted = false
        var taken = busyTargets
        var afterRank = -1
        var afterID: Int64 = 0
        var scanned = 0
        let page = max(64, min(limit * 2, 1024))
        let select = try db.cachedStatement(
            sql: """
                SELECT id, request_id, route, target, message, priority, reply_to, status, attempts, retries,
                       created_at, \(Self.queueRank) AS rank
                FROM whatsapp_notifications INDEXED BY whatsapp_notifications_queue
                WHERE status IN ('pending', 'retrying') AND in_flight_since IS NULL
                  AND target NOT IN (SELECT value FROM json_each(?))
                  AND (\(Self.queueRank), id) > (?, ?)
                  AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
                ORDER BY \(Self.queueRank), id
                LIMIT ?
                """)
        let mark = try db.cachedStatement(sql: "UPDATE whatsapp_notifications SET in_flight_since = ? WHERE id = ?")
        let nowText = now.rfc3339
        scan: while records.count < limit && scanned < scanLimit {
            let excluded = Self.jsonArray(of: taken)
            let rows = try Row.fetchAll(select, arguments: [excluded, afterRank, afterID, nowText, page])
            pages += 1
            if rows.isEmpty {
                exhausted = true
                break
            }
            for row in rows {
                scanned += 1
                afterRank = row[Self.claimRankColumn]
                afterID = row[0]
                let target: String = row[3]
                guard !taken.contains(target) else {
                    passedOver = true
                    continue
                }
                taken.insert(target)
                var record = try Self.record(row)
                try mark.execute(arguments: [nowText, record.id])
                if let firstAttempt, record.attempts == 0 {
                    record.pendingAttempt = PendingAttempt(
                        id: try Self.beginAttempt(record.id, firstAttempt, now, db), attemptedAt: now)
                }
                records.append(record)
                if records.count == limit { break scan }
            }
            if rows.count < page {
                exhausted = true
                break
            }
        }
        // Later pages leave out the targets taken on earlier ones in SQL, unseen: only a first page tells.
        return ClaimScan(records: records, tookEveryDueRow: exhausted && pages == 1 && !passedOver)
    }

    /// `ids` as a JSON array, for `json_each`.
    static func jsonArray(of ids: [Int64]) -> String {
        "[" + ids.map(String.init).joined(separator: ",") + "]"
    }

    /// `strings` as a JSON array, for `json_each`. Written out here because Foundation's `JSONEncoder`
    /// took 8.6 % of every claim, on the writer's connection (docs/performance.md, change 33).
    static func jsonArray(of strings: Set<String>) -> String {
        var json: [UInt8] = [UInt8(ascii: "[")]
        json.reserveCapacity(2 + strings.reduce(0) { $0 + $1.utf8.count + 3 })
        for (index, string) in strings.enumerated() {
            if index > 0 { json.append(UInt8(ascii: ",")) }
            json.append(UInt8(ascii: "\""))
            for byte in string.utf8 { appendEscaped(byte, to: &json) }
            json.append(UInt8(ascii: "\""))
        }
        json.append(UInt8(ascii: "]"))
        return String(decoding: json, as: UTF8.self)
    }

    /// One byte of a JSON string: the quote, the backslash and control characters escaped, the rest (UTF-8
    /// included) as it is.
    private static func appendEscaped(_ byte: UInt8, to json: inout [UInt8]) {
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"):
            json.append(UInt8(ascii: "\\"))
            json.append(byte)
        case 0..<0x20:
            let hex = Array("0123456789abcdef".utf8)
            json.append(contentsOf: Array("\\u00".utf8))
            json.append(hex[Int(byte >> 4)])
            json.append(hex[Int(byte & 0xF)])
        default:
            json.append(byte)
        }
    }

    /// Earliest `next_attempt_at` of a retry waiting for its time (nil when none); rows without one are
    /// due at once and wake the delivery loop when written, so they need no timer.
    public func nextRetryTime() throws(StoreError) -> Timestamp? {
        try parseRetryTime(read("next retry") { db in try Self.nextRetryText(db) })
    }

    /// `nextRetryTime`, through the group committer (no executor thread blocked behind a transaction).
    public func nextRetryTimeGrouped() async throws(StoreError) -> Timestamp? {
        try parseRetryTime(await committer.run("next retry") { db in try Self.nextRetryText(db) })
    }

    private static func nextRetryText(_ db: Database) throws -> String? {
        // Cached: the delivery loop asks on every idle pass, and preparing it cost more than running it.
        try String.fetchOne(
            db.cachedStatement(
                sql: """
                    SELECT MIN(next_attempt_at) FROM whatsapp_notifications
                    WHERE status IN ('pending', 'retrying') AND in_flight_since IS NULL AND next_attempt_at IS NOT NULL
                    """))
    }

    private func parseRetryTime(_ text: String?) throws(StoreError) -> Timestamp? {
        guard let text else { return nil }
        guard let time = Timestamp(rfc3339: text) else {
            throw StoreError(code: .corrupt, message: "database \(path): malformed time in whatsapp_notifications")
        }
        return time
    }

    /// Inserts an attempt with NULL outcome (committed before the HTTP request goes out), returns its id.
    public func beginAttempt(notificationID: Int64, provider: Provider, at: Timestamp) throws(StoreError) -> Int64 {
        try write("begin attempt") { db in try Self.beginAttempt(notificationID, provider, at, db) }
    }

    /// `beginAttempt`, group-committed: returns once the transaction holding it (and the concurrent
    /// rounds' writes) is committed, so the attempt row survives a crash of kurir before the HTTP request
    /// goes out (in FULL it reaches the disk with the next intake's fsync, see `DeferredSync`).
    public func beginAttemptGrouped(
        notificationID: Int64, provider: Provider, at: Timestamp
    ) async throws(StoreError) -> Int64 {
        try await committer.run("begin attempt") { db in try Self.beginAttempt(notificationID, provider, at, db) }
    }

    private static func beginAttempt(_ notificationID: Int64, _ provider: Provider, _ at: Timestamp, _ db: Database)
        throws -> Int64
    {
        try db.cachedStatement(
            sql: "INSERT INTO whatsapp_attempts (notification_id, provider, outcome, attempted_at) VALUES (?, ?, NULL, ?)"
        ).execute(arguments: [notificationID, provider.rawValue, at.rfc3339])
        return db.lastInsertedRowID
    }

    /// Sets the attempt's outcome/error/http_status/latency, increments the notification's `attempts`,
    /// writes `events`; one transaction.
    ///
    /// The notification's `updated_at` and the events' `created_at` become the attempt's end
    /// (`attempted_at` + latency).
    public func completeAttempt(
        attemptID: Int64, notificationID: Int64, result: AttemptResult, events: [OutboxEvent]
    ) throws(StoreError) {
        let attempt = CompletedAttempt(attemptID: attemptID, result: result, events: events)
        try write("complete attempt") { db in try Self.completeAttempt(attempt, of: notificationID, db) }
    }

    /// `completeAttempt`, group-committed with the other rounds' writes; returns once committed.
    public func completeAttemptGrouped(_ attempt: CompletedAttempt, of notificationID: Int64) async throws(StoreError) {
        try await committer.run("complete attempt") { db in try Self.completeAttempt(attempt, of: notificationID, db) }
    }

    private static func completeAttempt(_ attempt: CompletedAttempt, of notificationID: Int64, _ db: Database) throws {
        let ended = try recordOutcome(attempt, of: notificationID, db)
        try db.cachedStatement(
            sql: "UPDATE whatsapp_notifications SET attempts = attempts + 1, updated_at = ? WHERE id = ?"
        ).execute(arguments: [ended, notificationID])
    }

    /// Writes the attempt's outcome and its events (created at the attempt's end, `attempted_at` +
    /// latency); returns that end. The notification's `attempts` is the caller's to count.
    private static func recordOutcome(_ attempt: CompletedAttempt, of notificationID: Int64, _ db: Database) throws
        -> String
    {
        let result = attempt.result
        func end(of started: Timestamp) -> String {
            Timestamp(millisecondsSinceEpoch: started.millisecondsSinceEpoch + max(0, result.latencyMs)).rfc3339
        }
        let ended: String
        if let known = attempt.startedAt {
            ended = end(of: known)
        } else {
            guard
                let startedText = try String.fetchOne(
                    db.cachedStatement(
                        sql: "SELECT attempted_at FROM whatsapp_attempts WHERE id = ? AND notification_id = ?"),
                    arguments: [attempt.attemptID, notificationID])
            else {
                throw StoreError(
                    code: .notFound, message: "attempt \(attempt.attemptID) of notification \(notificationID) not found")
            }
            ended = Timestamp(rfc3339: startedText).map(end(of:)) ?? startedText
        }
        try db.cachedStatement(
            sql: "UPDATE whatsapp_attempts SET outcome = ?, error = ?, http_status = ?, latency_ms = ? WHERE id = ?"
        ).execute(arguments: [
            result.outcome.rawValue, result.error, result.httpStatus, result.latencyMs, attempt.attemptID,
        ])
        guard db.changesCount == 1 else {
            throw StoreError(code: .notFound, message: "attempt \(attempt.attemptID) of notification \(notificationID) not found")
        }
        try Self.insert(attempt.events, at: ended, db)
        return ended
    }

    /// True when any attempt of this notification (any round) has outcome 'unknown'.
    public func hasUnknownAttempt(notificationID: Int64) throws(StoreError) -> Bool {
        try read("read attempts") { db in try Self.hasUnknownAttempt(notificationID, db) }
    }

    /// `hasUnknownAttempt` through the group committer: a round waiting for it suspends instead of
    /// blocking its thread (the curl thread, which runs the rounds) behind a group transaction.
    public func hasUnknownAttemptGrouped(notificationID: Int64) async throws(StoreError) -> Bool {
        try await committer.run("read attempts") { db in try Self.hasUnknownAttempt(notificationID, db) }
    }

    private static func hasUnknownAttempt(_ notificationID: Int64, _ db: Database) throws -> Bool {
        try Bool.fetchOne(
            db.cachedStatement(
                sql: "SELECT EXISTS (SELECT 1 FROM whatsapp_attempts WHERE notification_id = ? AND outcome = 'unknown')"),
            arguments: [notificationID]) ?? false
    }

    /// Ends a round: sets status, provider, failover, error_message, sent_at, next_attempt_at, retries,
    /// updated_at, clears in_flight_since, writes events; one transaction.
    public func finishRound(
        notificationID: Int64, status: DeliveryStatus, provider: String, failover: Bool,
        errorMessage: String?, sentAt: Timestamp?, nextAttemptAt: Timestamp?, retries: Int,
        at: Timestamp, events: [OutboxEvent]
    ) throws(StoreError) {
        let round = FinishedRound(
            notificationID: notificationID, status: status, provider: provider, failover: failover,
            errorMessage: errorMessage, sentAt: sentAt, nextAttemptAt: nextAttemptAt, retries: retries, at: at,
            events: events)
        try write("finish round") { db in try Self.finish(round, db) }
    }

    /// `finishRound`, group-committed with the other rounds' writes; returns once committed.
    ///
    /// `completing`: the round's last attempt, completed in the same write (one commit instead of two).
    public func finishRoundGrouped(_ round: FinishedRound, completing attempt: CompletedAttempt? = nil)
        async throws(StoreError)
    {
        let error = await withCheckedContinuation { continuation in
            finishRoundLater(round, completing: attempt) { continuation.resume(returning: $0) }
        }
        if let error { throw error }
    }

    /// `finishRoundGrouped` without waiting: `then` runs on the group committer's thread once the round's
    /// end committed (nil) or failed (its error). A round's task ends at once instead of being resumed
    /// only to signal that its round ended (docs/performance.md, change 22).
    public func finishRoundLater(
        _ round: FinishedRound, completing attempt: CompletedAttempt?,
        then: @escaping @Sendable (StoreError?) -> Void
    ) {
        committer.submit(
            "finish round",
            { db in
                if let attempt {
                    _ = try Self.recordOutcome(attempt, of: round.notificationID, db)
                }
                // The finished attempt counts in the same UPDATE that ends the round.
                try Self.finish(round, addingAttempts: attempt == nil ? 0 : 1, db)
            }, then: then)
    }

    private static func finish(_ r: FinishedRound, addingAttempts: Int = 0, _ db: Database) throws {
        try db.cachedStatement(
            sql: """
                UPDATE whatsapp_notifications
                SET status = ?, provider = ?, failover = ?, error_message = ?, sent_at = ?, next_attempt_at = ?,
                    retries = ?, updated_at = ?, in_flight_since = NULL, attempts = attempts + ?
                WHERE id = ?
                """
        ).execute(arguments: [
            r.status.rawValue, r.provider, r.failover ? 1 : 0, r.errorMessage, r.sentAt?.rfc3339,
            r.nextAttemptAt?.rfc3339, r.retries, r.at.rfc3339, addingAttempts, r.notificationID,
        ])
        guard db.changesCount == 1 else {
            throw StoreError(code: .notFound, message: "notification \(r.notificationID) not found")
        }
        try Self.insert(r.events, at: r.at.rfc3339, db)
    }

    /// Clears in_flight_since of a claimed row without changing anything else (shutdown hand-back).
    public func release(notificationID: Int64) throws(StoreError) {
        try write("release") { db in
            try db.execute(
                sql: "UPDATE whatsapp_notifications SET in_flight_since = NULL WHERE id = ?",
                arguments: [notificationID])
        }
    }

    // MARK: Outbox

    /// Outbox rows with id > afterID in id order, at most limit.
    public func outbox(after afterID: Int64, limit: Int) throws(StoreError) -> [(id: Int64, event: OutboxEvent)] {
        try read("read outbox") { db in try Self.outbox(afterID, limit, db) }
    }

    /// `outbox(after:limit:)`, through the group committer (no executor thread blocked behind a transaction).
    public func outboxGrouped(after afterID: Int64, limit: Int) async throws(StoreError) -> [(id: Int64, event: OutboxEvent)] {
        try await committer.run("read outbox") { db in try Self.outbox(afterID, limit, db) }
    }

    private static func outbox(_ afterID: Int64, _ limit: Int, _ db: Database) throws -> [(id: Int64, event: OutboxEvent)] {
        let rows = try Row.fetchAll(
            db.cachedStatement(sql: "SELECT id, event_id, topic, payload FROM event_outbox WHERE id > ? ORDER BY id LIMIT ?"),
            arguments: [afterID, max(0, limit)])
        return rows.map { row in
            // By position in the SELECT above (id, event_id, topic, payload): this runs for every event.
            let payload: Data = row[3] ?? Data()
            return (
                id: row[0],
                event: OutboxEvent(eventID: row[1], topic: row[2], payload: [UInt8](payload))
            )
        }
    }

    /// Deletes one outbox row (its event was acknowledged by the broker); a missing row is not an error.
    public func deleteOutbox(id: Int64) throws(StoreError) {
        try write("delete outbox") { db in
            try db.execute(sql: "DELETE FROM event_outbox WHERE id = ?", arguments: [id])
        }
    }

    /// Deletes an outbox row in the next group commit, without waiting for it.
    ///
    /// Losing such a deletion (a crash before the commit) only republishes the event with its same
    /// `event_id`, which subscribers already drop; so the publisher does not wait for a commit per PUBACK.
    /// The rows acknowledged while one deletion waits for its transaction go with it, in one statement
    /// (docs/performance.md, change 35).
    public func deleteOutboxLater(id: Int64) {
        guard acknowledgedOutbox.add(id) else { return }
        let deletion = OutboxDeletion(from: acknowledgedOutbox)
        committer.submit(
            "delete outbox",
            { db in
                try db.cachedStatement(sql: "DELETE FROM event_outbox WHERE id IN (SELECT value FROM json_each(?))")
                    .execute(arguments: [Self.jsonArray(of: deletion.ids)])
            },
            then: { error in
                // Not committed: the rows wait for the next deletion.
                if error != nil { deletion.giveBack() }
            })
    }

    /// Number of events waiting in the outbox.
    public func outboxCount() throws(StoreError) -> Int {
        try read("count outbox") { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM event_outbox") ?? 0
        }
    }

    // MARK: Inspection

    /// For tests and operators: all notifications, in id order.
    public func notifications() throws(StoreError) -> [NotificationRow] {
        try read("read notifications") { db in
            try Row.fetchAll(db, sql: "SELECT * FROM whatsapp_notifications ORDER BY id").map { row in
                NotificationRow(
                    id: row["id"], requestID: row["request_id"], route: row["route"], target: row["target"],
                    message: row["message"], priority: row["priority"], replyTo: row["reply_to"],
                    provider: row["provider"], status: row["status"], failover: row["failover"],
                    errorMessage: row["error_message"], attempts: row["attempts"], retries: row["retries"],
                    createdAt: row["created_at"], updatedAt: row["updated_at"], sentAt: row["sent_at"],
                    nextAttemptAt: row["next_attempt_at"], inFlightSince: row["in_flight_since"])
            }
        }
    }

    /// For tests and operators: the attempts of one notification, in id order.
    public func attempts(notificationID: Int64) throws(StoreError) -> [AttemptRow] {
        try read("read attempts") { db in try Self.attempts(notificationID, db) }
    }

    /// `attempts` through the group committer (a retried round reads them; see `hasUnknownAttemptGrouped`).
    public func attemptsGrouped(notificationID: Int64) async throws(StoreError) -> [AttemptRow] {
        try await committer.run("read attempts") { db in try Self.attempts(notificationID, db) }
    }

    private static func attempts(_ notificationID: Int64, _ db: Database) throws -> [AttemptRow] {
        try Row.fetchAll(
            db.cachedStatement(sql: "SELECT * FROM whatsapp_attempts WHERE notification_id = ? ORDER BY id"),
            arguments: [notificationID]
        ).map { row in
            AttemptRow(
                id: row["id"], notificationID: row["notification_id"], provider: row["provider"],
                outcome: row["outcome"], error: row["error"], httpStatus: row["http_status"],
                latencyMs: row["latency_ms"], attemptedAt: row["attempted_at"])
        }
    }

    /// `PRAGMA integrity_check`: "ok" when fine, otherwise the problems, one per line.
    public func integrityCheck() throws(StoreError) -> String {
        try read("integrity check") { db in
            try String.fetchAll(db, sql: "PRAGMA integrity_check").joined(separator: "\n")
        }
    }

    /// Caps the database at `pages` pages on this connection (`PRAGMA max_page_count`), returning the cap
    /// in effect; for tests that need a reproducible "disk full".
    public func limitPageCount(_ pages: Int) throws(StoreError) -> Int {
        try write("limit size") { db in
            try Int.fetchOne(db, sql: "PRAGMA max_page_count = \(max(1, pages))") ?? 0
        }
    }

    // MARK: Helpers

    static let migrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE whatsapp_notifications (
                      id INTEGER PRIMARY KEY,
                      request_id TEXT NOT NULL,
                      route TEXT NOT NULL,
                      target TEXT NOT NULL,
                      message TEXT NOT NULL,
                      priority TEXT NOT NULL,
                      reply_to TEXT,
                      provider TEXT NOT NULL,
                      status TEXT NOT NULL,
                      failover INTEGER NOT NULL DEFAULT 0,
                      error_message TEXT,
                      attempts INTEGER NOT NULL DEFAULT 0,
                      retries INTEGER NOT NULL DEFAULT 0,
                      created_at TEXT NOT NULL,
                      updated_at TEXT NOT NULL,
                      sent_at TEXT,
                      next_attempt_at TEXT,
                      in_flight_since TEXT,
                      UNIQUE (request_id, target)
                    );
                    CREATE INDEX whatsapp_notifications_due ON whatsapp_notifications (status, next_attempt_at);
                    CREATE TABLE whatsapp_attempts (
                      id INTEGER PRIMARY KEY,
                      notification_id INTEGER NOT NULL REFERENCES whatsapp_notifications (id),
                      provider TEXT NOT NULL,
                      outcome TEXT,
                      error TEXT,
                      http_status INTEGER,
                      latency_ms INTEGER,
                      attempted_at TEXT NOT NULL
                    );
                    CREATE INDEX whatsapp_attempts_notification ON whatsapp_attempts (notification_id);
                    CREATE TABLE event_outbox (
                      -- AUTOINCREMENT: ids never go back after the table empties, so the
                      -- publisher's "id > cursor" paging never skips a new event.
                      id INTEGER PRIMARY KEY AUTOINCREMENT,
                      event_id TEXT NOT NULL,
                      topic TEXT NOT NULL,
                      payload BLOB NOT NULL,
                      created_at TEXT NOT NULL,
                      UNIQUE (event_id, topic)
                    );
                    """)
        }
        migrator.registerMigration("v2-queue-order") { db in
            // The claim query walks this partial index in claim order, so claiming costs the same with
            // a backlog of 100 or 100,000 rows (without it every claim sorted the whole backlog).
            try db.execute(
                sql: """
                    CREATE INDEX whatsapp_notifications_queue ON whatsapp_notifications
                      (\(Store.queueRank), id)
                    WHERE status IN ('pending', 'retrying') AND in_flight_since IS NULL;
                    CREATE INDEX whatsapp_notifications_retry ON whatsapp_notifications (next_attempt_at)
                    WHERE status IN ('pending', 'retrying') AND in_flight_since IS NULL AND next_attempt_at IS NOT NULL;
                    """)
        }
        migrator.registerMigration("v3-drop-due-index") { db in
            // Replaced by the two partial indexes of v2 and read by no query since; it only cost a page
            // write in every intake and every finished round (docs/performance.md, change 10).
            try db.execute(sql: "DROP INDEX IF EXISTS whatsapp_notifications_due")
        }
        return migrator
    }()

    /// Claim order of a row: critical, normal, bulk.
    static let queueRank = "CASE priority WHEN 'critical' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END"

    private static func insert(_ events: [OutboxEvent], at created: String, _ db: Database) throws {
        guard !events.isEmpty else { return }
        // OR IGNORE: the same event for the same topic is one row, however often it is written.
        let statement = try db.cachedStatement(
            sql: "INSERT OR IGNORE INTO event_outbox (event_id, topic, payload, created_at) VALUES (?, ?, ?, ?)")
        for event in events {
            try statement.execute(arguments: [event.eventID, event.topic, Data(event.payload), created])
        }
    }

    /// The claim's row, by position in its SELECT (id, request_id, route, target, message, priority,
    /// reply_to, status, attempts, retries, created_at, rank): looking columns up by name cost a
    /// case-insensitive search per value on the hot path.
    private static func record(_ row: Row) throws -> DeliveryRecord {
        let id: Int64 = row[0]
        guard let priority = Priority(rawValue: row[5]),
            let status = DeliveryStatus(rawValue: row[7]),
            let created = Timestamp(rfc3339: row[10])
        else {
            throw StoreError(code: .corrupt, message: "whatsapp_notifications row \(id) has a malformed value")
        }
        return DeliveryRecord(
            id: id, requestID: row[1], route: row[2], target: row[3], message: row[4], priority: priority,
            replyTo: row[6], status: status, attempts: row[8], retries: row[9], createdAt: created)
    }

    private static let claimRankColumn = 11

    private func write<T>(_ operation: String, _ body: (Database) throws -> T) throws(StoreError) -> T {
        do {
            return try queue.immediateWrite(body)
        } catch {
            throw Self.map(error, operation)
        }
    }

    private func read<T>(_ operation: String, _ body: (Database) throws -> T) throws(StoreError) -> T {
        do {
            return try queue.read(body)
        } catch {
            throw Self.map(error, operation)
        }
    }

    /// `map`, for the group committer.
    static func mapError(_ error: any Error, _ operation: String) -> StoreError { map(error, operation) }

    /// One line, no SQL and no argument values (they could hold message texts).
    private static func map(_ error: any Error, _ operation: String) -> StoreError {
        if let error = error as? StoreError { return error }
        if let error = error as? DeferredSync.ConnectionLeftAtNormal {
            return StoreError(code: .sqlite, message: "store \(operation) failed: \(error)")
        }
        guard let error = error as? DatabaseError else {
            return StoreError(code: .sqlite, message: "store \(operation) failed: \(type(of: error))")
        }
        let code: StoreError.Code
        switch error.resultCode {
        case .SQLITE_FULL:
            return StoreError(code: .full, message: "store full: \(operation) failed: database or disk is full")
        case .SQLITE_BUSY, .SQLITE_LOCKED: code = .busy
        case .SQLITE_IOERR: code = .io
        case .SQLITE_CORRUPT, .SQLITE_NOTADB: code = .corrupt
        case .SQLITE_CANTOPEN: code = .cannotOpen
        case .SQLITE_READONLY: code = .readOnly
        default: code = .sqlite
        }
        return StoreError(
            code: code, message: "store \(operation) failed: SQLite error \(error.extendedResultCode.description)")
    }

    private static func errnoText() -> String {
        String(cString: strerror(errno))
    }
}

/// Runs a cached INSERT with text arguments straight through SQLite's C API.
///
/// The intake's INSERT runs once per request on the thread that sets kurir's pace during a burst;
/// GRDB's argument handling and execution bookkeeping took about a tenth of that thread (perf). Only for
/// statements that return no rows and are not transaction statements (GRDB tracks those itself).
enum RawInsert {
    private static let transient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

    static func run(_ statement: Statement, _ db: Database, _ arguments: [String?]) throws {
        let handle = statement.sqliteStatement
        sqlite3_reset(handle)
        for (offset, argument) in arguments.enumerated() {
            let index = Int32(offset + 1)
            let code: Int32
            if var text = argument {
                code = text.withUTF8 { bytes in
                    sqlite3_bind_text(handle, index, bytes.baseAddress, Int32(bytes.count), transient)
                }
            } else {
                code = sqlite3_bind_null(handle, index)
            }
            guard code == SQLITE_OK else { throw failure(code, db, statement) }
        }
        let stepped = sqlite3_step(handle)
        let reset = sqlite3_reset(handle)
        guard stepped == SQLITE_DONE else { throw failure(stepped, db, statement) }
        guard reset == SQLITE_OK else { throw failure(reset, db, statement) }
    }

    private static func failure(_ code: Int32, _ db: Database, _ statement: Statement) -> DatabaseError {
        DatabaseError(
            resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)),
            sql: statement.sql)
    }
}

/// The outbox rows waiting for one group-committed deletion, and whether that deletion is queued.
final class AcknowledgedOutbox: Sendable {
    private struct Pending {
        var ids: [Int64] = []
        var deletionQueued = false
    }

    private let pending = Mutex(Pending())

    /// Adds `id`; true when no deletion is queued yet, so the caller must queue one.
    func add(_ id: Int64) -> Bool {
        pending.withLock { pending in
            pending.ids.append(id)
            defer { pending.deletionQueued = true }
            return !pending.deletionQueued
        }
    }

    /// Everything added so far; rows added from now on need a new deletion.
    func take() -> [Int64] {
        pending.withLock { pending in
            pending.deletionQueued = false
            let ids = pending.ids
            pending.ids = []
            return ids
        }
    }

    /// `ids` were not deleted after all: the next deletion takes them again.
    func putBack(_ ids: [Int64]) {
        pending.withLock { $0.ids.append(contentsOf: ids) }
    }
}

/// One group-committed deletion: it takes the acknowledged rows when its transaction first runs, and
/// keeps them if the committer runs it again on its own after a failed batch.
final class OutboxDeletion: Sendable {
    private let source: AcknowledgedOutbox
    private let taken = Mutex<[Int64]?>(nil)

    init(from source: AcknowledgedOutbox) {
        self.source = source
    }

    var ids: [Int64] {
        taken.withLock { taken in
            if let ids = taken { return ids }
            let ids = source.take()
            taken = ids
            return ids
        }
    }

    /// The deletion failed: its rows go back for the next one.
    func giveBack() {
        if let ids = taken.withLock({ $0.take() }) { source.putBack(ids) }
    }
}
