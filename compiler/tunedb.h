/*
** The tuning database (DESIGN §8, doc/tune.md): $KVCC_CACHE_DIR/tune.db, one text file for
** every device, version and policy. Records are keyed by (kernel hash, phase, shape bucket,
** device fingerprint, kvcc version): timings of one config ('t') and the tuner's pick for a
** kernel ('p', bucket 0, the whole config). The header carries the body's length and FNV-1a
** hash: a truncated or corrupted file is never trusted (lookups see it empty; the next update
** rebuilds it). Updates hold tune.db.lock (flock: a dead writer's lock goes with it), merge with
** what is there, and rename a temporary file into place, so concurrent writers are safe and
** readers never see half a file.
*/
#ifndef KVCC_TUNEDB_H
#define KVCC_TUNEDB_H

#include <stddef.h>
#include <stdint.h>
#include "compiler/ir.h"
#include "kvcc.h"
#include "runtime/kc.h"

typedef struct KtRec {
	char kind;                 /* 't' timing, 'p' pick */
	uint64_t kernel;           /* ki_tdb_kernel */
	char phase[12];            /* "score", "select", "decode", "split", or "pick" */
	int bucket;                /* tokens (0 for a pick) */
	uint64_t dev;              /* ki_tdb_device */
	char devname[96];          /* CPU model (informational; the hash decides) */
	char version[24];
	char cfg[100];             /* the config string (codegen/x86/cfg.c) */
	double ms;                 /* median time (a pick: its geometric-mean ratio to the default) */
} KtRec;

typedef struct KtDb {
	KtRec *r;
	int n, cap;
	int corrupt;               /* the file was there but not trusted (why) */
	char why[160];
} KtDb;

/* $KVCC_CACHE_DIR/tune.db (the cache directory created): 0, or -1 with why (cache off). */
KC_FUNC int ki_tdb_path(char *buf, size_t n, char *why, size_t wn);
/* Read the database: 0 (a missing file is empty; an untrusted one empty with corrupt set). */
KC_FUNC int ki_tdb_load(const char *path, KtDb *db);
KC_FUNC void ki_tdb_free(KtDb *db);
/* Add records under the lock (replacing records with the same key and config; a corrupt file is
** rebuilt from the new records, said on stderr): 0, or -1 with why. */
KC_FUNC int ki_tdb_update(const char *path, const KtRec *add, int nadd, char *why, size_t wn);
/* This host's fingerprint: FNV-1a of the CPU model and its feature flags ($KVCC_TUNE_DEVICE
** replaces the model, to test another device's entries); name = the model. */
KC_FUNC uint64_t ki_tdb_device(char *name, size_t n);
/* The version tuning records belong to: KVCC_VERSION ($KVCC_TUNE_VERSION replaces it, tests). */
KC_FUNC const char *ki_tdb_version(void);
/* The kernel hash of a policy's (passed) KIR for a spec. */
KC_FUNC uint64_t ki_tdb_kernel(const KiFn *f, const kvcc_spec *spec);
/* The pick for (kernel, this device, this version): its config in cfg, 1; 0 when none. With
** verbose, says on stderr how many records of other devices / versions were ignored. */
KC_FUNC int ki_tdb_lookup(const char *path, uint64_t kernel, char *cfg, size_t n, int verbose);
/* issue 15: the tuner's per-bucket compress picks for (kernel, this device, this version): 'p'
** records of phase "bpick", bucket = the tuner's tokens (runtime/artifact.h ka_bucket maps them),
** cfg = the score config measured best there, or "main" (none: the pick's own kernels). cfg[b] =
** bucket b's ("" none); returns how many. */
KC_FUNC int ki_tdb_lookup_buckets(const char *path, uint64_t kernel, char cfg[][128], int nb);
/* The GPU static-model pick for (kernel, GPU targets "sm_80,sm_90", this version): a 'p' record of
** phase "gpu" whose cfg is "ARCHS|CONFIG"; CONFIG in cfg, 1; 0 when none. Not a measurement and
** not tied to this CPU: its device field is ki_tdb_gpudev(archs, NVRTC version). */
KC_FUNC int ki_tdb_gpulookup(const char *path, uint64_t kernel, const char *archs, uint64_t gdev, char *cfg, size_t n);
KC_FUNC uint64_t ki_tdb_gpudev(const char *archs, int nvrtc_major, int nvrtc_minor);
KC_FUNC int ki_tdb_add(KtDb *db, const KtRec *r);

#endif
