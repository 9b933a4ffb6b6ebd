/*
** Seeds for the descriptor half of fz_artifact: the CPU descriptor of each
** policy.so named, written as 'D' + its bytes to DIR/seed-desc-<name> (the file name without .so).
**
**   descseed DIR policy.so...      (make fuzz-descseeds: the shipped policies)
*/
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "runtime/artifact.h"

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: descseed DIR policy.so...\n");
		return 2;
	}
	for (int i = 2; i < argc; i++) {
		void *dl = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
		const kvcc_artifact *a = dl ? dlsym(dl, KVCC_DESC_SYMBOL) : NULL;
		if (!a || !a->desc) {
			fprintf(stderr, "descseed: %s: %s\n", argv[i], dl ? "no descriptor" : dlerror());
			return 1;
		}
		const char *base = strrchr(argv[i], '/');
		base = base ? base + 1 : argv[i];
		const char *dot = strrchr(base, '.');
		char out[4096];
		snprintf(out, sizeof out, "%s/seed-desc-%.*s", argv[1], (int)(dot ? dot - base : (long)strlen(base)), base);
		FILE *fp = fopen(out, "wb");
		if (!fp || fputc('D', fp) == EOF || fwrite(a->desc, 1, a->desc->size, fp) != a->desc->size ||
		    fclose(fp) != 0) {
			fprintf(stderr, "descseed: cannot write %s\n", out);
			return 1;
		}
		dlclose(dl);
	}
	return 0;
}
