#ifndef KURIR_MALLOC_CONF_H
#define KURIR_MALLOC_CONF_H

/// jemalloc's compiled-in options for the kurir daemon (see malloc_conf.c).
extern const char *malloc_conf;

#endif
