/*
** The compile cache (DESIGN §6): $KVCC_CACHE_DIR (default ~/.cache/kvcc; "off"
** disables it) holds one artifact per complete key, named NAME-DTYPE-dD-gG-KEY.so.
** Each artifact ends with a trailer (ignored by the dynamic loader): the key
** description, the key, the size and FNV-1a hash of the ELF bytes. A lookup reads
** and checks the whole file before anything is loaded, so a truncated, corrupted or
** mismatched file is a miss that rebuilds. Builds go to a temporary file that is
** renamed into place, under NAME…KEY.lock (O_EXCL, holds the pid): waiters poll
** until the artifact appears; a lock whose pid is dead is removed; after
** $KVCC_CACHE_LOCK_TIMEOUT seconds (default 30) a waiter builds without the lock
** (safe: rename is atomic, both builds are identical).
*/
#ifndef KVCC_CACHE_H
#define KVCC_CACHE_H

#include <stddef.h>
#include "compiler/ir.h"
#include "kvcc.h"
#include "runtime/kc.h"


/* The cache directory (created), or -1 when the cache is off or unusable (*why says). */
KC_FUNC int ki_cache_dir(char *buf, size_t n, char *why, size_t wn);
/* Builds an artifact into `out` (the driver's code generation and link); 0 or -1 with e set. */
typedef int (*KiBuild)(void *ud, const char *out, double *ms, KiErr *e);
/* A valid artifact for (f, spec) in the cache, built by build(ud, …) under the lock when missing:
** 0 with its path; 1 when the cache is off/unusable (the caller builds without it); -1 with *e
** set when the policy does not compile. `extra` (may be NULL) joins the key and its description
** ("gpu=sm_80,sm_90 nvrtc=13.0": another target list or NVRTC is a miss that names them).
** verbose: say hit/miss and why on stderr. */
KC_FUNC int ki_cache_get(const KiFn *f, const kvcc_spec *spec, const char *extra, int verbose, KiBuild build,
                         void *ud, char *path, size_t n, KiErr *e);
/* Check an artifact file against `key` (trailer, size, hash, key): 0 or -1 with *why. */
KC_FUNC int ki_cache_check(const char *path, uint64_t key, const char *desc, char *why, size_t wn);
/* Append the trailer to a freshly built artifact. */
KC_FUNC int ki_cache_seal(const char *path, uint64_t key, const char *desc);

#endif
