import GRDB

extension DatabaseQueue {
    /// `body` in one `immediateTransaction` on the writer.
    func immediateWrite<T>(_ body: (Database) throws -> T) throws -> T {
        try writeWithoutTransaction { db in try db.immediateTransaction { try body(db) } }
    }
}

extension Database {
    /// `BEGIN IMMEDIATE` … `COMMIT` with cached statements, rolled back when `body` or the commit throws.
    ///
    /// GRDB's `write` and `inTransaction` compile both statements afresh for every transaction; on the
    /// hot paths (an intake per request, a group transaction per batch) that cost about as much as the
    /// INSERT itself (perf).
    func immediateTransaction<T>(_ body: () throws -> T) throws -> T {
        try cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
        do {
            let result = try body()
            try cachedStatement(sql: "COMMIT TRANSACTION").execute()
            return result
        } catch {
            if isInsideTransaction { try? rollback() }
            throw error
        }
    }
}
