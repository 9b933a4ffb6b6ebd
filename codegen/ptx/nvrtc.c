/*
** NVRTC through dlopen: kvcc builds and runs where CUDA is absent; then
** compiling for a GPU is an error that says NVRTC was not found.
** Looked up: $KVCC_NVRTC, libnvrtc.so, libnvrtc.so.13, libnvrtc.so.12,
** /usr/local/cuda/lib64/libnvrtc.so.
*/
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include "codegen/ptx/ptx.h"

typedef int nvrtcResult;
typedef struct _nvrtcProgram *nvrtcProgram;

static struct {
	int tried, ok;
	char why[256];
	void *h;
	nvrtcResult (*Version)(int *, int *);
	nvrtcResult (*GetNumSupportedArchs)(int *);
	nvrtcResult (*GetSupportedArchs)(int *);
	nvrtcResult (*CreateProgram)(nvrtcProgram *, const char *, const char *, int, const char *const *,
	                             const char *const *);
	nvrtcResult (*DestroyProgram)(nvrtcProgram *);
	nvrtcResult (*CompileProgram)(nvrtcProgram, int, const char *const *);
	nvrtcResult (*GetPTXSize)(nvrtcProgram, size_t *);
	nvrtcResult (*GetPTX)(nvrtcProgram, char *);
	nvrtcResult (*GetCUBINSize)(nvrtcProgram, size_t *);
	nvrtcResult (*GetCUBIN)(nvrtcProgram, char *);
	nvrtcResult (*GetProgramLogSize)(nvrtcProgram, size_t *);
	nvrtcResult (*GetProgramLog)(nvrtcProgram, char *);
	const char *(*GetErrorString)(nvrtcResult);
} nv;
static pthread_mutex_t nvlock = PTHREAD_MUTEX_INITIALIZER;

static void load(void)
{
	if (nv.tried)
		return;
	nv.tried = 1;
	const char *env = getenv("KVCC_NVRTC");
	const char *names[] = { env, "libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12",
	                        "/usr/local/cuda/lib64/libnvrtc.so" };
	for (size_t i = 0; i < sizeof names / sizeof *names && !nv.h; i++)
		if (names[i] && *names[i])
			nv.h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (!nv.h) {
		snprintf(nv.why, sizeof nv.why,
		         "NVRTC not found (tried $KVCC_NVRTC, libnvrtc.so, libnvrtc.so.13, "
		         "/usr/local/cuda/lib64/libnvrtc.so); install the CUDA toolkit or set KVCC_NVRTC");
		return;
	}
#define SYM(f)                                                                                      \
	do {                                                                                        \
		*(void **)&nv.f = dlsym(nv.h, "nvrtc" #f);                                          \
		if (!nv.f) {                                                                        \
			snprintf(nv.why, sizeof nv.why, "NVRTC lacks nvrtc%s (too old?)", #f);       \
			return;                                                                     \
		}                                                                                   \
	} while (0)
	SYM(Version);
	SYM(GetNumSupportedArchs);
	SYM(GetSupportedArchs);
	SYM(CreateProgram);
	SYM(DestroyProgram);
	SYM(CompileProgram);
	SYM(GetPTXSize);
	SYM(GetPTX);
	SYM(GetCUBINSize);
	SYM(GetCUBIN);
	SYM(GetProgramLogSize);
	SYM(GetProgramLog);
	SYM(GetErrorString);
#undef SYM
	nv.ok = 1;
}

int kp_nvrtc_available(int *major, int *minor, char *why, size_t whylen)
{
	pthread_mutex_lock(&nvlock);
	load();
	pthread_mutex_unlock(&nvlock);
	if (!nv.ok) {
		if (why)
			snprintf(why, whylen, "%s", nv.why);
		return -1;
	}
	int a = 0, b = 0;
	nv.Version(&a, &b);
	if (major)
		*major = a;
	if (minor)
		*minor = b;
	return 0;
}

int kp_nvrtc_archs(int *sm, int max)
{
	if (kp_nvrtc_available(NULL, NULL, NULL, 0) != 0)
		return -1;
	int n = 0;
	if (nv.GetNumSupportedArchs(&n) != 0 || n <= 0)
		return -1;
	int *all = malloc((size_t)n * sizeof *all);
	if (!all || nv.GetSupportedArchs(all) != 0) {
		free(all);
		return -1;
	}
	int k = 0;
	for (int i = 0; i < n && k < max; i++)
		sm[k++] = all[i];
	free(all);
	return k;
}

int kp_nvrtc_compile(const char *src, const char *name, int sm, const char **extra, int nextra,
                     KpNvrtcRes *r, char *why, size_t whylen)
{
	memset(r, 0, sizeof *r);
	if (kp_nvrtc_available(NULL, NULL, why, whylen) != 0)
		return -1;
	nvrtcProgram p;
	int rc = nv.CreateProgram(&p, src, name, 0, NULL, NULL);
	if (rc != 0) {
		snprintf(why, whylen, "nvrtcCreateProgram: %s", nv.GetErrorString(rc));
		return -1;
	}
	char arch[48];
	snprintf(arch, sizeof arch, "--gpu-architecture=sm_%d", sm);
	const char *opts[24];
	int no = 0;
	opts[no++] = arch;
	opts[no++] = "-Xptxas=-v";
	opts[no++] = "--std=c++17";
	for (int i = 0; i < nextra && no < 24; i++)
		opts[no++] = extra[i];
	rc = nv.CompileProgram(p, no, opts);
	size_t nl = 0;
	nv.GetProgramLogSize(p, &nl);
	r->log = calloc(nl + 1, 1);
	if (r->log && nl)
		nv.GetProgramLog(p, r->log);
	if (rc != 0) {
		snprintf(why, whylen, "NVRTC (sm_%d): %s: %.300s", sm, nv.GetErrorString(rc), r->log ? r->log : "");
		nv.DestroyProgram(&p);
		return -1;
	}
	size_t n = 0;
	if (nv.GetPTXSize(p, &n) == 0 && n) {
		r->ptx = malloc(n + 1);
		if (r->ptx && nv.GetPTX(p, r->ptx) == 0) {
			r->ptx[n] = 0;
			r->nptx = strlen(r->ptx);
		}
	}
	n = 0;
	if (nv.GetCUBINSize(p, &n) == 0 && n) {
		r->cubin = malloc(n);
		if (r->cubin && nv.GetCUBIN(p, r->cubin) == 0)
			r->ncubin = n;
	}
	nv.DestroyProgram(&p);
	r->ok = r->ptx != NULL;
	if (!r->ok)
		snprintf(why, whylen, "NVRTC (sm_%d) produced no PTX", sm);
	return r->ok ? 0 : -1;
}

void kp_nvrtc_free(KpNvrtcRes *r)
{
	free(r->ptx);
	free(r->cubin);
	free(r->log);
	memset(r, 0, sizeof *r);
}
