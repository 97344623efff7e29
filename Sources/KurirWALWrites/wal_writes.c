// A pass-through SQLite VFS that hands the frames of a WAL commit to the kernel in one write.
//
// SQLite writes each WAL frame as two pwrites (its 24-byte header, then the page), so the intake's
// one-row commit (three pages: the row and two indexes) cost six pwrites; they were a fifth of the
// intake thread's time (docs/performance.md, change 31). Here the writes to a WAL file are gathered
// while they are contiguous and written together when the commit frame's page arrives, so a commit
// is one pwrite of the same bytes at the same offsets. Everything else is the default VFS's.
//
// Why this is safe: other connections find frames only through the wal-index, which SQLite updates
// after the last frame of a commit is written, so the gathered bytes are in the file by then. The
// connection itself reads its WAL only through this file, which writes what it holds first; so does
// every other operation on the WAL that SQLite uses (sync, size, truncate, file control, close; SQLite
// takes no locks on a WAL file). A failed write is reported by the write that completes the commit, as
// a failed pwrite was before. As a last guard, the database file's shared-memory barrier, which SQLite
// calls before publishing a new wal-index header, writes anything still held.

#include "KurirWALWrites.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

// SQLite's WAL file format: a 32-byte file header, then frames of a 24-byte header and a page.
// Bytes 4-7 of a frame header are non-zero only in the last frame of a commit.
enum { FRAME_HEADER_SIZE = 24 };
// Gathered bytes are written once they reach this size even mid-transaction, bounding the memory per
// connection; no write is larger than LARGEST_WRITE, for the default VFS writes at most 128 KiB - 1 at
// once (it masks the size to 17 bits and reports anything longer as "disk full").
enum { FLUSH_AT = 64 * 1024, LARGEST_WRITE = 96 * 1024 };

typedef struct GatheredWrites {
    unsigned char *bytes;
    size_t length;
    size_t capacity;
    sqlite3_int64 offset;  // where bytes[0] goes in the file
    int commitPageNext;    // the last write was a commit frame's header: its page comes next
} GatheredWrites;

typedef struct ShimFile ShimFile;
struct ShimFile {
    sqlite3_file base;
    sqlite3_file *real;  // the default VFS's file, in the same allocation right after this struct
    GatheredWrites *gathered;  // WAL files only
    ShimFile *wal;  // main database files only: the connection's open WAL, written out at the barrier
    ShimFile *database;  // WAL files only: the main database file whose `wal` this is
    unsigned long long writeCalls;  // WAL files only: writes SQLite asked for
    unsigned long long fileWrites;  // WAL files only: writes made to the file
};

static sqlite3_vfs *realVFS;
static sqlite3_vfs shimVFS;

static int writeGathered(ShimFile *file) {
    GatheredWrites *g = file->gathered;
    if (g == NULL || g->length == 0) return SQLITE_OK;
    int rc = file->real->pMethods->xWrite(file->real, g->bytes, (int)g->length, g->offset);
    file->fileWrites += 1;
    g->length = 0;
    g->commitPageNext = 0;
    return rc;
}

static int gather(GatheredWrites *g, const void *bytes, int amount, sqlite3_int64 offset) {
    size_t needed = g->length + (size_t)amount;
    if (needed > g->capacity) {
        size_t capacity = g->capacity ? g->capacity : 16 * 1024;
        while (capacity < needed) capacity *= 2;
        unsigned char *grown = realloc(g->bytes, capacity);
        if (grown == NULL) return 0;
        g->bytes = grown;
        g->capacity = capacity;
    }
    if (g->length == 0) g->offset = offset;
    memcpy(g->bytes + g->length, bytes, (size_t)amount);
    g->length = needed;
    return 1;
}

static int isCommitFrameHeader(const void *bytes, int amount) {
    if (amount != FRAME_HEADER_SIZE) return 0;
    const unsigned char *b = bytes;
    return (b[4] | b[5] | b[6] | b[7]) != 0;
}

// MARK: WAL file methods

static int walWrite(sqlite3_file *pFile, const void *bytes, int amount, sqlite3_int64 offset) {
    ShimFile *file = (ShimFile *)pFile;
    GatheredWrites *g = file->gathered;
    file->writeCalls += 1;
    // Taken first: writing out what is gathered below forgets it.
    int commitPage = g->commitPageNext;
    int contiguous = offset == g->offset + (sqlite3_int64)g->length;
    if (g->length > 0 && (!contiguous || g->length + (size_t)amount > LARGEST_WRITE)) {
        int rc = writeGathered(file);
        if (rc != SQLITE_OK) return rc;
    }
    if (!gather(g, bytes, amount, offset)) {
        // Out of memory for the buffer: write what is held, then this, directly.
        int rc = writeGathered(file);
        if (rc != SQLITE_OK) return rc;
        file->fileWrites += 1;
        rc = file->real->pMethods->xWrite(file->real, bytes, amount, offset);
        g->commitPageNext = isCommitFrameHeader(bytes, amount);
        return rc;
    }
    g->commitPageNext = isCommitFrameHeader(bytes, amount);
    if (commitPage || g->length >= FLUSH_AT) return writeGathered(file);
    return SQLITE_OK;
}

static int walClose(sqlite3_file *pFile) {
    ShimFile *file = (ShimFile *)pFile;
    int rc = writeGathered(file);
    if (file->database != NULL && file->database->wal == file) file->database->wal = NULL;
    free(file->gathered->bytes);
    free(file->gathered);
    file->gathered = NULL;
    int closed = file->real->pMethods->xClose(file->real);
    return rc != SQLITE_OK ? rc : closed;
}

static int walRead(sqlite3_file *pFile, void *bytes, int amount, sqlite3_int64 offset) {
    ShimFile *file = (ShimFile *)pFile;
    int rc = writeGathered(file);
    if (rc != SQLITE_OK) return rc;
    return file->real->pMethods->xRead(file->real, bytes, amount, offset);
}

static int walTruncate(sqlite3_file *pFile, sqlite3_int64 size) {
    ShimFile *file = (ShimFile *)pFile;
    int rc = writeGathered(file);
    if (rc != SQLITE_OK) return rc;
    return file->real->pMethods->xTruncate(file->real, size);
}

static int walSync(sqlite3_file *pFile, int flags) {
    ShimFile *file = (ShimFile *)pFile;
    int rc = writeGathered(file);
    if (rc != SQLITE_OK) return rc;
    return file->real->pMethods->xSync(file->real, flags);
}

static int walFileSize(sqlite3_file *pFile, sqlite3_int64 *size) {
    ShimFile *file = (ShimFile *)pFile;
    int rc = writeGathered(file);
    if (rc != SQLITE_OK) return rc;
    return file->real->pMethods->xFileSize(file->real, size);
}

static int walFileControl(sqlite3_file *pFile, int op, void *argument) {
    ShimFile *file = (ShimFile *)pFile;
    int rc = writeGathered(file);
    if (rc != SQLITE_OK) return rc;
    return file->real->pMethods->xFileControl(file->real, op, argument);
}

// MARK: Methods that only pass through (main database files, and the rest of a WAL file's)

static int passClose(sqlite3_file *pFile) {
    ShimFile *file = (ShimFile *)pFile;
    if (file->wal != NULL) file->wal->database = NULL;
    return file->real->pMethods->xClose(file->real);
}

static int passRead(sqlite3_file *pFile, void *bytes, int amount, sqlite3_int64 offset) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xRead(file->real, bytes, amount, offset);
}

static int passWrite(sqlite3_file *pFile, const void *bytes, int amount, sqlite3_int64 offset) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xWrite(file->real, bytes, amount, offset);
}

static int passTruncate(sqlite3_file *pFile, sqlite3_int64 size) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xTruncate(file->real, size);
}

static int passSync(sqlite3_file *pFile, int flags) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xSync(file->real, flags);
}

static int passFileSize(sqlite3_file *pFile, sqlite3_int64 *size) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xFileSize(file->real, size);
}

static int passLock(sqlite3_file *pFile, int level) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xLock(file->real, level);
}

static int passUnlock(sqlite3_file *pFile, int level) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xUnlock(file->real, level);
}

static int passCheckReservedLock(sqlite3_file *pFile, int *reserved) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xCheckReservedLock(file->real, reserved);
}

static int passFileControl(sqlite3_file *pFile, int op, void *argument) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xFileControl(file->real, op, argument);
}

static int passSectorSize(sqlite3_file *pFile) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xSectorSize(file->real);
}

static int passDeviceCharacteristics(sqlite3_file *pFile) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xDeviceCharacteristics(file->real);
}

static int passShmMap(sqlite3_file *pFile, int region, int size, int extend, void volatile **mapped) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xShmMap(file->real, region, size, extend, mapped);
}

static int passShmLock(sqlite3_file *pFile, int offset, int count, int flags) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xShmLock(file->real, offset, count, flags);
}

static void shmBarrier(sqlite3_file *pFile) {
    ShimFile *file = (ShimFile *)pFile;
    if (file->wal != NULL && file->wal->gathered->length > 0) {
        // Never reached in practice: the commit frame's page writes what is gathered. Should SQLite ever
        // publish frames some other way, they must be in the file first, and a barrier cannot fail.
        if (writeGathered(file->wal) != SQLITE_OK) {
            sqlite3_log(SQLITE_IOERR, "kurir: WAL frames could not be written before publishing them");
            abort();
        }
    }
    file->real->pMethods->xShmBarrier(file->real);
}

static int passShmUnmap(sqlite3_file *pFile, int deleteFlag) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xShmUnmap(file->real, deleteFlag);
}

static int passFetch(sqlite3_file *pFile, sqlite3_int64 offset, int amount, void **pointer) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xFetch(file->real, offset, amount, pointer);
}

static int passUnfetch(sqlite3_file *pFile, sqlite3_int64 offset, void *pointer) {
    ShimFile *file = (ShimFile *)pFile;
    return file->real->pMethods->xUnfetch(file->real, offset, pointer);
}

static const sqlite3_io_methods databaseMethods = {
    3, passClose, passRead, passWrite, passTruncate, passSync, passFileSize, passLock, passUnlock,
    passCheckReservedLock, passFileControl, passSectorSize, passDeviceCharacteristics, passShmMap, passShmLock,
    shmBarrier, passShmUnmap, passFetch, passUnfetch,
};

static const sqlite3_io_methods walMethods = {
    3, walClose, walRead, walWrite, walTruncate, walSync, walFileSize, passLock, passUnlock,
    passCheckReservedLock, walFileControl, passSectorSize, passDeviceCharacteristics, passShmMap, passShmLock,
    shmBarrier, passShmUnmap, passFetch, passUnfetch,
};

// MARK: The VFS

static int shimOpen(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *pFile, int flags, int *outFlags) {
    (void)vfs;
    ShimFile *file = (ShimFile *)pFile;
    memset(file, 0, sizeof *file);
    file->real = (sqlite3_file *)(file + 1);
    int isWAL = (flags & SQLITE_OPEN_WAL) != 0;
    if (isWAL) {
        file->gathered = calloc(1, sizeof *file->gathered);
        if (file->gathered == NULL) return SQLITE_NOMEM;
    }
    int rc = realVFS->xOpen(realVFS, name, file->real, flags, outFlags);
    // SQLite calls xClose of a file whose xOpen set methods, even when the open failed.
    if (file->real->pMethods == NULL) {
        free(file->gathered);
        file->gathered = NULL;
        file->base.pMethods = NULL;
        return rc;
    }
    file->base.pMethods = isWAL ? &walMethods : &databaseMethods;
    if (rc == SQLITE_OK && isWAL && name != NULL) {
        sqlite3_file *database = sqlite3_database_file_object(name);
        if (database != NULL && database->pMethods == &databaseMethods) {
            file->database = (ShimFile *)database;
            file->database->wal = file;
        }
    }
    return rc;
}

static int shimDelete(sqlite3_vfs *vfs, const char *name, int syncDirectory) {
    (void)vfs;
    return realVFS->xDelete(realVFS, name, syncDirectory);
}

static int shimAccess(sqlite3_vfs *vfs, const char *name, int flags, int *result) {
    (void)vfs;
    return realVFS->xAccess(realVFS, name, flags, result);
}

static int shimFullPathname(sqlite3_vfs *vfs, const char *name, int size, char *out) {
    (void)vfs;
    return realVFS->xFullPathname(realVFS, name, size, out);
}

static void *shimDlOpen(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return realVFS->xDlOpen(realVFS, name);
}

static void shimDlError(sqlite3_vfs *vfs, int size, char *message) {
    (void)vfs;
    realVFS->xDlError(realVFS, size, message);
}

static void (*shimDlSym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void) {
    (void)vfs;
    return realVFS->xDlSym(realVFS, handle, symbol);
}

static void shimDlClose(sqlite3_vfs *vfs, void *handle) {
    (void)vfs;
    realVFS->xDlClose(realVFS, handle);
}

static int shimRandomness(sqlite3_vfs *vfs, int size, char *out) {
    (void)vfs;
    return realVFS->xRandomness(realVFS, size, out);
}

static int shimSleep(sqlite3_vfs *vfs, int microseconds) {
    (void)vfs;
    return realVFS->xSleep(realVFS, microseconds);
}

static int shimCurrentTime(sqlite3_vfs *vfs, double *now) {
    (void)vfs;
    return realVFS->xCurrentTime(realVFS, now);
}

static int shimGetLastError(sqlite3_vfs *vfs, int size, char *out) {
    (void)vfs;
    return realVFS->xGetLastError(realVFS, size, out);
}

static int shimCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *now) {
    (void)vfs;
    return realVFS->xCurrentTimeInt64(realVFS, now);
}

static int installResult = SQLITE_ERROR;
static pthread_once_t installOnce = PTHREAD_ONCE_INIT;

static void install(void) {
    realVFS = sqlite3_vfs_find(NULL);
    // The methods tables above are version 3 (shared memory and mmap), as the default unix VFS's are.
    if (realVFS == NULL || strcmp(realVFS->zName, "unix") != 0) {
        installResult = SQLITE_ERROR;
        return;
    }
    shimVFS = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(ShimFile) + realVFS->szOsFile,
        .mxPathname = realVFS->mxPathname,
        .zName = "kurir-wal-writes",
        .xOpen = shimOpen,
        .xDelete = shimDelete,
        .xAccess = shimAccess,
        .xFullPathname = shimFullPathname,
        .xDlOpen = shimDlOpen,
        .xDlError = shimDlError,
        .xDlSym = shimDlSym,
        .xDlClose = shimDlClose,
        .xRandomness = shimRandomness,
        .xSleep = shimSleep,
        .xCurrentTime = shimCurrentTime,
        .xGetLastError = shimGetLastError,
        .xCurrentTimeInt64 = shimCurrentTimeInt64,
    };
    installResult = sqlite3_vfs_register(&shimVFS, 1);
}

int kurir_wal_writes_install(void) {
    pthread_once(&installOnce, install);
    return installResult;
}

int kurir_wal_writes_counts(sqlite3 *connection, unsigned long long *writeCalls, unsigned long long *fileWrites) {
    sqlite3_file *wal = NULL;
    int rc = sqlite3_file_control(connection, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);
    if (rc != SQLITE_OK) return rc;
    if (wal == NULL || wal->pMethods != &walMethods) return SQLITE_NOTFOUND;
    *writeCalls = ((ShimFile *)wal)->writeCalls;
    *fileWrites = ((ShimFile *)wal)->fileWrites;
    return SQLITE_OK;
}
