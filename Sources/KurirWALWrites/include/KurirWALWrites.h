#ifndef KURIR_WAL_WRITES_H
#define KURIR_WAL_WRITES_H

#include <sqlite3.h>

/// Makes kurir's WAL-gathering VFS SQLite's default (see wal_writes.c). Idempotent and thread-safe;
/// returns SQLITE_OK, or an SQLite error code when the default VFS could not be wrapped.
int kurir_wal_writes_install(void);

/// The writes SQLite asked of `connection`'s open WAL file, and the writes made to it, since it was opened;
/// SQLITE_NOTFOUND when that file is not open or not this VFS's.
int kurir_wal_writes_counts(sqlite3 *connection, unsigned long long *writeCalls, unsigned long long *fileWrites);

#endif
