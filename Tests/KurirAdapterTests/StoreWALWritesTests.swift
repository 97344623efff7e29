import GRDB
import KurirWALWrites
import Testing

/// The writes SQLite asked of the connection's WAL and those made to the file.
private func walWrites(_ db: Database) throws -> (asked: UInt64, made: UInt64) {
    var asked: UInt64 = 0
    var made: UInt64 = 0
    let rc = kurir_wal_writes_counts(db.sqliteConnection, &asked, &made)
    try #require(rc == SQLITE_OK, "the connection's WAL is not kurir's (rc \(rc))")
    return (asked, made)
}

private func walQueue(_ path: String) throws -> DatabaseQueue {
    var configuration = Configuration()
    configuration.journalMode = .wal
    return try DatabaseQueue(path: path, configuration: configuration)
}

@Suite("Store: a WAL commit in one write")
struct StoreWALWritesTests {
    init() {
        #expect(kurir_wal_writes_install() == SQLITE_OK)
    }

    /// The intake's shape: one row with two indexes is three pages, six writes asked of the WAL.
    @Test func aSmallCommitIsOneWrite() throws {
        let dir = try Scratch()
        let queue = try walQueue(dir.database)
        try queue.write { db in
            try db.execute(
                sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT NOT NULL UNIQUE, b TEXT); CREATE INDEX t_b ON t (b)")
        }
        try queue.writeWithoutTransaction { db in
            let before = try walWrites(db)
            try db.execute(sql: "INSERT INTO t (a, b) VALUES ('one', 'x')")
            let after = try walWrites(db)
            #expect(after.asked - before.asked >= 6)
            #expect(after.made - before.made == 1)
        }
    }

    /// A transaction of about 1 MB goes out in pieces no larger than the default VFS writes, and another
    /// connection reads every row of it, before and after a checkpoint.
    @Test func aLargeCommitIsReadBackWhole() throws {
        let dir = try Scratch()
        let writer = try walQueue(dir.database)
        let rows = 2_000
        try writer.write { db in
            try db.execute(sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            for n in 0..<rows {
                try db.execute(sql: "INSERT INTO t (body) VALUES (?)", arguments: [String(repeating: "\(n % 10)", count: 500)])
            }
        }
        try writer.writeWithoutTransaction { db in
            let (asked, made) = try walWrites(db)
            #expect(made > 10 && made < asked / 10, "\(made) writes for \(asked) asked")
        }
        let reader = try walQueue(dir.database)
        let (count, bytes, check) = try reader.read { db in
            (
                try Int.fetchOne(db, sql: "SELECT count(*) FROM t"),
                try Int.fetchOne(db, sql: "SELECT sum(length(body)) FROM t"),
                try String.fetchOne(db, sql: "PRAGMA integrity_check")
            )
        }
        #expect(count == rows)
        #expect(bytes == rows * 500)
        #expect(check == "ok")
        try writer.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
        }
        let sevens = try reader.read { db in
            try Int.fetchOne(db, sql: "SELECT count(*) FROM t WHERE body = printf('%.*c', 500, '7')")
        }
        #expect(sevens == rows / 10)
    }
}
