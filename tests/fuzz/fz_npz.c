/*
** Fuzz the .npz reader (tools/npz.c): zip directory, zip64 extra fields,
** local headers, .npy headers (descr, fortran_order, shape) and data sizes.
** A file that reads must be consistent: every element of every array can be
** read (ASan checks the bounds), and a 0-d unicode array converts.
*/
#include <stdio.h>
#include "tools/npz.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fz_file(data, size);
	if (!path)
		return 0;
	KtNpz z;
	KiErr e = { 0 };
	if (kt_npz_read(path, &z, &e) != 0)
		return 0;
	volatile double sink = 0;
	for (int i = 0; i < z.n; i++) {
		const KtArray *a = &z.a[i];
		size_t count = 1;
		for (int k = 0; k < a->ndim; k++)
			count *= (size_t)a->shape[k];
		if (count != a->count)
			fz_bug("npz: element count differs from the shape's product", a->name);
		if (a->kind == 'U') {
			char buf[64];
			kt_array_str(a, buf, sizeof buf);
		} else
			for (size_t k = 0; k < a->count; k++)
				sink += kt_array_get(a, k);
		if (kt_npz_get(&z, a->name) == NULL)
			fz_bug("npz: a member is not found by its name", a->name);
	}
	(void)sink;
	kt_npz_free(&z);
	return 0;
}
