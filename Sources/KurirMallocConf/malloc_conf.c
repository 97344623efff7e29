#include "KurirMallocConf.h"

// jemalloc reads this at its first allocation (the MALLOC_CONF environment variable still overrides it).
// Freed pages go back to the system after about a second instead of ten: with the defaults the daemon's
// peak RSS at the end of a 100,000-request burst ranged 53.6-64.1 MiB over six runs, with these
// 52.2-53.8 MiB, at the same rate (docs/performance.md, change 30).
const char *malloc_conf = "dirty_decay_ms:1000,muzzy_decay_ms:0";
