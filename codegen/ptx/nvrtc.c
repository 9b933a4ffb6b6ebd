/*
** NVRTC through dlopen: kvcc builds and runs where CUDA is absent; then
** compiling for a GPU is an error that says NVRTC was not found.
** Looked up: $KVCC_NVRTC, libnvrtc.so, libnvrtc.so.13, libnvrtc.so.12,
** /usr/local/cuda/lib64/libnvrtc.so.
*/
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <spawn.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include "codegen/ptx/ptx.h"

extern char **environ;

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
	return kp_nvrtc_compile_to(src, name, sm, 0, extra, nextra, r, why, whylen);
}

/* ptx_only: --gpu-architecture=compute_SM, PTX alone (NVRTC's front end and NVVM, no ptxas) */
int kp_nvrtc_compile_to(const char *src, const char *name, int sm, int ptx_only, const char **extra, int nextra,
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
	snprintf(arch, sizeof arch, "--gpu-architecture=%s_%d", ptx_only ? "compute" : "sm", sm);
	const char *opts[24];
	int no = 0;
	opts[no++] = arch;
	if (!ptx_only)
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
	if (!ptx_only && nv.GetCUBINSize(p, &n) == 0 && n) {
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

/*
** ptxas, the toolkit's standalone assembler (issue 13: compile time): one NVVM run for several
** targets — NVRTC's PTX for the lowest arch (compute_XY), then ptxas once per arch (compile.c).
** Used only when its release is NVRTC's own: then each kernel's machine code is what NVRTC's
** built-in ptxas makes (checked section by section, runtime/STATUS.md wt-ctime10). Looked up:
** $KVCC_PTXAS ("off": never; then every arch is one NVRTC program as before), bin/ptxas beside
** the folder NVRTC was loaded from, /usr/local/cuda/bin/ptxas. Not found, another release or a
** failing run: the caller compiles that arch with NVRTC alone.
*/
static struct {
	int tried, ok;
	char path[1024];
} px;

static int slurp(const char *path, char **buf, size_t *n)
{
	*buf = NULL, *n = 0;
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return -1;
	size_t cap = 1 << 16, len = 0;
	char *b = malloc(cap + 1);
	for (size_t k; b && (k = fread(b + len, 1, cap - len, fp)) > 0;) {
		len += k;
		if (len == cap) {
			char *nb = realloc(b, 2 * cap + 1);
			if (!nb)
				free(b);
			b = nb, cap *= 2;
		}
	}
	fclose(fp);
	if (!b)
		return -1;
	b[len] = 0;
	*buf = b, *n = len;
	return 0;
}

/* argv[0] with stdout and stderr to outpath; its exit status (-1: not run, and why says why:
** a failing file action or spawn, each checked), its CPU in *ru */
static int spawn(char *const argv[], const char *outpath, struct rusage *ru, char *why, size_t whylen)
{
	posix_spawn_file_actions_t fa;
	int e = posix_spawn_file_actions_init(&fa);
	if (e != 0)
		return snprintf(why, whylen, "posix_spawn_file_actions_init: %s", strerror(e)), -1;
	const char *what = "posix_spawn_file_actions_addopen";
	if ((e = posix_spawn_file_actions_addopen(&fa, 1, outpath, O_WRONLY | O_CREAT | O_TRUNC, 0600)) == 0)
		what = "posix_spawn_file_actions_adddup2", e = posix_spawn_file_actions_adddup2(&fa, 1, 2);
	pid_t pid;
	if (e == 0)
		what = "posix_spawn", e = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (e != 0)
		return snprintf(why, whylen, "%s (%s): %s", what, argv[0], strerror(e)), -1;
	int st;
	while (wait4(pid, &st, 0, ru) < 0)
		if (errno != EINTR)
			return snprintf(why, whylen, "wait4 (%s): %s", argv[0], strerror(errno)), -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int tmpdir(char *dir, size_t n)
{
	const char *t = getenv("TMPDIR");
	snprintf(dir, n, "%s/kvcc-ptxas-XXXXXX", t && *t ? t : "/tmp");
	return mkdtemp(dir) ? 0 : -1;
}

static int release_ok(const char *path)
{
	char dir[512], out[600], *txt;
	size_t n;
	if (access(path, X_OK) != 0 || tmpdir(dir, sizeof dir) != 0)
		return 0;
	snprintf(out, sizeof out, "%s/version", dir);
	char *argv[] = { (char *)path, "--version", NULL };
	struct rusage ru;
	char why[300];
	int ok = spawn(argv, out, &ru, why, sizeof why) == 0 && slurp(out, &txt, &n) == 0;
	int a = -1, b = -1, ma = 0, mi = 0;
	if (ok) {
		const char *r = strstr(txt, "release ");
		ok = r && sscanf(r, "release %d.%d", &a, &b) == 2;
		free(txt);
	}
	remove(out);
	rmdir(dir);
	nv.Version(&ma, &mi);
	return ok && a == ma && b == mi;
}

int kp_ptxas_available(void)
{
	pthread_mutex_lock(&nvlock);
	if (!px.tried) {
		px.tried = 1;
		const char *env = getenv("KVCC_PTXAS");
		Dl_info di;
		if (env && !strcmp(env, "off"))
			;
		else if (env && *env)
			snprintf(px.path, sizeof px.path, "%s", env), px.ok = nv.ok && release_ok(px.path);
		else if (nv.ok) {
			if (dladdr(*(void **)&nv.CompileProgram, &di) && di.dli_fname && strchr(di.dli_fname, '/')) {
				snprintf(px.path, sizeof px.path, "%s", di.dli_fname);
				*strrchr(px.path, '/') = 0;
				size_t l = strlen(px.path);
				snprintf(px.path + l, sizeof px.path - l, "/../bin/ptxas");
				px.ok = release_ok(px.path);
			}
			if (!px.ok)
				snprintf(px.path, sizeof px.path, "/usr/local/cuda/bin/ptxas"), px.ok = release_ok(px.path);
		}
	}
	int ok = px.ok;
	pthread_mutex_unlock(&nvlock);
	return ok;
}

int kp_ptxas(const char *ptx, size_t nptx, int sm, KpNvrtcRes *r, double *cpu_ms, char *why, size_t whylen)
{
	memset(r, 0, sizeof *r);
	*cpu_ms = 0;
	if (!kp_ptxas_available())
		return snprintf(why, whylen, "ptxas not used"), -1;
	char dir[512], in[600], cub[600], log[600], arch[32], swhy[300] = "";
	if (tmpdir(dir, sizeof dir) != 0)
		return snprintf(why, whylen, "ptxas: no temporary folder"), -1;
	snprintf(in, sizeof in, "%s/in.ptx", dir);
	snprintf(cub, sizeof cub, "%s/out.cubin", dir);
	snprintf(log, sizeof log, "%s/log", dir);
	snprintf(arch, sizeof arch, "-arch=sm_%d", sm);
	int rc = -1;
	FILE *fp = fopen(in, "wb");
	if (fp) {
		int wok = fwrite(ptx, 1, nptx, fp) == nptx;
		if (fclose(fp) == 0 && wok) {
			char *argv[] = { px.path, arch, "-v", in, "-o", cub, NULL };
			struct rusage ru;
			memset(&ru, 0, sizeof ru);
			rc = spawn(argv, log, &ru, swhy, sizeof swhy);
			*cpu_ms = ru.ru_utime.tv_sec * 1e3 + ru.ru_utime.tv_usec / 1e3 + ru.ru_stime.tv_sec * 1e3 +
			          ru.ru_stime.tv_usec / 1e3;
		}
	}
	size_t n;
	if (rc == 0 && slurp(log, &r->log, &n) == 0 && slurp(cub, (char **)&r->cubin, &r->ncubin) == 0 && r->ncubin)
		r->ok = 1;
	else {
		if (*swhy)   /* not run: a file action, the spawn or the wait failed */
			snprintf(why, whylen, "ptxas (sm_%d) not run: %s", sm, swhy);
		else
			snprintf(why, whylen, "ptxas (sm_%d) failed (exit %d)", sm, rc);
		kp_nvrtc_free(r);
	}
	remove(in), remove(cub), remove(log);
	rmdir(dir);
	return r->ok ? 0 : -1;
}

/*
** Two NVRTC programs' PTX as one module (issue 13: compile time; compile.c compiles the parts
** KV_PART 1 and 2 of one source on two threads). NVVM compiles each kernel alone (every device
** function is inlined into it), so a kernel's PTX is the same in either program but for the
** names NVVM numbers per module function (labels $L__BB<k>_, __local_depot<k>), which are local
** to the kernel: ptxas makes the same machine code (tests/gpu/ptxas_same.sh compares it). The
** result is A, then B without its header (.version / .target / .address_size, which must equal
** A's) and without the module-scope declarations that A holds verbatim. -1 (the caller compiles
** the whole source instead) when the headers differ or B declares a name of A's otherwise.
*/
static int ptx_decl(const char *l, size_t n)
{
	static const char *const kw[] = { ".extern", ".global", ".shared", ".const", ".visible", ".weak",
	                                  ".entry", ".func", ".common" };
	for (size_t i = 0; i < sizeof kw / sizeof *kw; i++) {
		size_t k = strlen(kw[i]);
		if (n > k && !strncmp(l, kw[i], k) && (l[k] == ' ' || l[k] == '\t'))
			return 1;
	}
	return 0;
}

/* the name a module-scope declaration line declares: the first identifier (not a .directive)
** followed by '(', '[', ';', '=' or the line's end; its length, 0 when none */
static size_t ptx_declname(const char *l, size_t n, const char **nm)
{
	for (size_t i = 0; i < n;) {
		int dot = l[i] == '.';
		size_t s = i + (size_t)dot, j = s;
		while (j < n && (l[j] == '_' || l[j] == '$' || (l[j] >= 'a' && l[j] <= 'z') || (l[j] >= 'A' && l[j] <= 'Z') ||
		                 (j > s && l[j] >= '0' && l[j] <= '9')))
			j++;
		if (j == s) {
			i = j + 1;
			continue;
		}
		size_t k = j;
		while (k < n && (l[k] == ' ' || l[k] == '\t'))
			k++;
		if (!dot && (k == n || l[k] == '(' || l[k] == '[' || l[k] == ';' || l[k] == '='))
			return *nm = l + s, j - s;
		i = j;
	}
	return 0;
}

/* the end of the header (after the .address_size line), or NULL */
static const char *ptx_hdrend(const char *p)
{
	const char *a = strstr(p, "\n.address_size");
	if (!a)
		return NULL;
	const char *e = strchr(a + 1, '\n');
	return e ? e + 1 : a + strlen(a);
}

/* does module-scope text [p, e) hold the line l (n bytes) verbatim / a declaration of name nm? */
static int ptx_has(const char *p, const char *e, const char *l, size_t n, const char *nm, size_t nn)
{
	while (p < e) {
		const char *q = memchr(p, '\n', (size_t)(e - p));
		size_t m = q ? (size_t)(q - p) : (size_t)(e - p);
		if (!l && ptx_decl(p, m)) {
			const char *x;
			size_t xn = ptx_declname(p, m, &x);
			if (xn == nn && !memcmp(x, nm, nn))
				return 1;
		} else if (l && m == n && !memcmp(p, l, n))
			return 1;
		p = q ? q + 1 : e;
	}
	return 0;
}

int kp_ptx_join(const char *a, const char *b, char **out, size_t *nout)
{
	*out = NULL, *nout = 0;
	const char *ha = ptx_hdrend(a), *hb = ptx_hdrend(b);
	if (!ha || !hb)
		return -1;
	/* the header lines from .version on must be the same (the NVVM banner comments may not) */
	const char *va = strstr(a, "\n.version"), *vb = strstr(b, "\n.version");
	if (!va || !vb || va > ha || vb > hb || ha - va != hb - vb || memcmp(va, vb, (size_t)(ha - va)))
		return -1;
	size_t na = strlen(a), nb = strlen(b);
	char *r = malloc(na + nb + 2), *w = r;
	if (!r)
		return -1;
	memcpy(w, a, na), w += na;
	if (na && a[na - 1] != '\n')
		*w++ = '\n';
	const char *ae = a + na;
	for (const char *p = hb; *p;) {
		const char *q = strchr(p, '\n');
		size_t m = q ? (size_t)(q - p) : strlen(p);
		if (ptx_decl(p, m)) {
			const char *nm;
			size_t nn = ptx_declname(p, m, &nm);
			int dup = p[m ? m - 1 : 0] == ';' && ptx_has(a, ae, p, m, NULL, 0);
			if (!dup && (!nn || ptx_has(a, ae, NULL, 0, nm, nn))) {
				free(r);
				return -1;
			}
			if (dup) {
				p = q ? q + 1 : p + m;
				continue;
			}
		}
		memcpy(w, p, m), w += m;
		if (q)
			*w++ = '\n';
		p = q ? q + 1 : p + m;
	}
	*w = 0;
	*out = r, *nout = (size_t)(w - r);
	return 0;
}
