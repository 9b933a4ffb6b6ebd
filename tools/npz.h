/*
** NumPy .npz files (a zip of .npy arrays, stored uncompressed, as np.savez
** writes them): the input and output format of `kvcc run`. Reading is
** bounds-checked throughout; a malformed file is an error, never a crash.
*/
#ifndef KVCC_NPZ_H
#define KVCC_NPZ_H

#include "compiler/ir.h"

typedef struct KtArray {
	char name[96];            /* without the .npy suffix */
	char kind;                /* 'f' float, 'i' int, 'u' unsigned, 'b' bool, 'U' unicode */
	int itemsize;             /* bytes per element (UCS4 chars x 4 for 'U') */
	int ndim;
	long shape[8];
	size_t count;             /* elements */
	void *data;               /* little-endian, C order */
} KtArray;

typedef struct KtNpz {
	KtArray *a;
	int n;
} KtNpz;

KC_FUNC int kt_npz_read(const char *path, KtNpz *z, KiErr *e);
KC_FUNC const KtArray *kt_npz_get(const KtNpz *z, const char *name);
KC_FUNC void kt_npz_free(KtNpz *z);
/* Element k of a numeric array as a double (bool/int/float). */
KC_FUNC double kt_array_get(const KtArray *a, size_t k);
/* A 0-d unicode array as a C string (ASCII only). */
KC_FUNC int kt_array_str(const KtArray *a, char *buf, size_t len);

/* Writing: arrays added to a list, then written at once. `descr` is a
** numpy type string ("<f4", "<f8", "<i4"). The data is copied; kt_npz_add
** returns -1 when memory runs out (the list is unchanged). */
KC_FUNC int kt_npz_add(KtNpz *z, const char *name, const char *descr, int ndim, const long *shape,
                       const void *data);
KC_FUNC int kt_npz_write(const char *path, const KtNpz *z, KiErr *e);

#endif
