/*
** kp_compile_cuda: a policy's CUDA C (kernels.c) compiled by NVRTC (nvrtc.c)
** to PTX and CUBIN for each requested arch, with the launch sizes each arch
** gets (compaction staging rows, score tiles, dynamic shared memory) and the
** registers, shared memory and spills ptxas reports per kernel.
*/
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>
#include "codegen/ptx/gen.h"
#include "compiler/interp.h"

unsigned kp_cuda_dsmem(int dtype, int head_dim, int tile)
{
	return (unsigned)(2 * tile * head_dim * (dtype == KVCC_F32 ? 4 : 2));
}

int kp_cuda_tile(int sm, int dtype, int head_dim, int nthreads)
{
	/* staging budget per target: stays within the default 48 KB on unknown and
	** older parts, uses the opt-in shared memory of A100 (163 KB) and H100 (227 KB) */
	unsigned budget = sm >= 90 ? 128u << 10 : sm == 80 ? 96u << 10 : sm >= 86 ? 64u << 10 : 32u << 10;
	unsigned row = kp_cuda_dsmem(dtype, head_dim, 1);
	int tt = (int)(budget / row);
	if (tt > nthreads)
		tt = nthreads;
	if (tt < 1)
		tt = 1;
	return tt;
}

int kp_cuda_mma(int dtype, int head_dim)
{
	return dtype != KVCC_F32 && head_dim % 16 == 0;
}

unsigned kp_cuda_score_dsmem(int dtype, int head_dim, int group, int sq, int sk)
{
	return kp_cuda_score_dsmem_st(dtype, head_dim, group, sq, sk, 1);
}

/* the layout of kernels.c gen_score: Q rows, st K tiles (kv_qk, row stride KV_DP), the logit
** tile and the obs accumulators (f32) */
unsigned kp_cuda_score_dsmem_st(int dtype, int head_dim, int group, int sq, int sk, int st)
{
	int mma = kp_cuda_mma(dtype, head_dim);
	unsigned dp = (unsigned)head_dim + (mma ? 8u : 1u), esz = mma ? 2u : 4u;
	return (unsigned)(sq + (st > 1 ? st : 1) * sk) * dp * esz + (unsigned)(sq * sk + group * sk) * 4u;
}

void kp_cuda_score_tile(int sm, int dtype, int head_dim, int group, int *sq, int *sk)
{
	kp_cuda_score_tile_from(sm, dtype, head_dim, group, 0, 0, sq, sk);
}

void kp_cuda_score_tile_from(int sm, int dtype, int head_dim, int group, int q0, int k0, int *sq, int *sk)
{
	int st;
	kp_cuda_score_tile_st(sm, dtype, head_dim, group, q0, k0, 1, sq, sk, &st);
}

void kp_cuda_score_tile_st(int sm, int dtype, int head_dim, int group, int q0, int k0, int st0, int *sq, int *sk,
                           int *st)
{
	/* below the opt-in maximum of each part: A100/A30 (sm_80/87) 163 KB, H100/B200
	** (sm_90, sm_100) 227 KB, the others (sm_86, sm_89, sm_120) 99 KB. Tokens per tile:
	** 64; query rows per chunk: as many as fit up to 64·G, at most 256 (G·O of a 64-query
	** window: Q staged once), in steps of 16 (the mma row block) */
	unsigned budget = sm == 80 || sm == 87 ? 160u << 10 : sm >= 90 && sm < 120 ? 220u << 10 : 96u << 10;
	int k = k0 > 0 ? k0 : 64, q = q0 > 0 ? q0 : group < 4 ? 64 * group : 256, b = st0 > 1 ? st0 : 1;
	/* with several K buffers: the query rows down to 64 first, then fewer buffers */
	while (b > 1 && q > 64 && kp_cuda_score_dsmem_st(dtype, head_dim, group, q, k, b) > budget)
		q -= 16;
	while (b > 1 && kp_cuda_score_dsmem_st(dtype, head_dim, group, q, k, b) > budget)
		b--;
	while (q > 16 && kp_cuda_score_dsmem_st(dtype, head_dim, group, q, k, b) > budget)
		q -= 16;
	while (k > 8 && kp_cuda_score_dsmem_st(dtype, head_dim, group, q, k, b) > budget)
		k -= 8;
	*sq = q, *sk = k, *st = b;
}

int kp_cuda_lpt(int head_dim)
{
	int lpt = 1;
	while (lpt < 32 && lpt * 4 < head_dim)
		lpt *= 2;
	return lpt;
}

int kp_gcfgparse(const char *s, KpGpuCfg *c, char *why, size_t wn)
{
	memset(c, 0, sizeof *c);
	if (!s || !*s || !strcmp(s, "default"))
		return 0;
	static const struct { const char *name; size_t off; int lo, hi, step; } F[] = {
		{ "nt", offsetof(KpGpuCfg, nt), 32, 1024, 32 }, { "lpt", offsetof(KpGpuCfg, lpt), 1, 32, 0 },
		{ "sq", offsetof(KpGpuCfg, sq), 16, 1024, 16 }, { "sk", offsetof(KpGpuCfg, sk), 8, 256, 8 },
		{ "tt", offsetof(KpGpuCfg, tt), 1, 1024, 1 }, { "st", offsetof(KpGpuCfg, st), 1, 3, 1 },
	};
	for (const char *p = s; *p;) {
		size_t n = strcspn(p, "=0123456789");
		int k = -1;
		for (int i = 0; i < (int)(sizeof F / sizeof F[0]); i++)
			if (strlen(F[i].name) == n && !strncmp(p, F[i].name, n))
				k = i;
		if (k < 0)
			return snprintf(why, wn, "unknown GPU config field '%.*s' (nt, lpt, sq, sk, tt, st)", (int)n, p), -1;
		p += n + (p[n] == '=');
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p)
			return snprintf(why, wn, "GPU config field '%s' needs a number", F[k].name), -1;
		int pow2 = v > 0 && (v & (v - 1)) == 0;
		if (v < F[k].lo || v > F[k].hi || (F[k].step ? v % F[k].step != 0 : !pow2))
			return snprintf(why, wn, "GPU config %s%ld: must be %s in %d..%d", F[k].name, v,
			                F[k].step > 1 ? "a multiple of the step" : F[k].step ? "a whole number" : "a power of two",
			                F[k].lo, F[k].hi), -1;
		*(int *)((char *)c + F[k].off) = (int)v;
		p = end;
		if (*p == ',')
			p++;
		else if (*p)
			return snprintf(why, wn, "GPU config: unexpected '%c' after '%s'", *p, F[k].name), -1;
	}
	return 0;
}

void kp_gcfgstr(const KpGpuCfg *c, int head_dim, int group, char *buf, size_t n)
{
	KpGpuCfg z = { 0 };
	if (!c)
		c = &z;
	int k = snprintf(buf, n, "nt%d,lpt%d,sq%d,sk%d", c->nt ? c->nt : 256, c->lpt ? c->lpt : kp_cuda_lpt(head_dim),
	                 c->sq ? c->sq : group < 4 ? 64 * group : 256, c->sk ? c->sk : 64);
	if (c->tt && k > 0 && (size_t)k < n)
		k += snprintf(buf + k, n - (size_t)k, ",tt%d", c->tt);
	if (c->st > 1 && k > 0 && (size_t)k < n)
		snprintf(buf + k, n - (size_t)k, ",st%d", c->st);
}

/* "ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem" per entry function */
static void parselog(const char *log, KpCudaOut *out, KpCudaImage *im)
{
	int k = -1;
	for (const char *p = log; p && *p;) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		char line[512];
		snprintf(line, sizeof line, "%.*s", (int)(len < 511 ? len : 511), p);
		const char *q;
		if ((q = strstr(line, "Compiling entry function '")) != NULL) {
			q += strlen("Compiling entry function '");
			k = -1;
			for (int i = 0; i < out->nkern; i++)
				if (!strncmp(q, out->kern[i].name, strlen(out->kern[i].name)) && q[strlen(out->kern[i].name)] == '\'')
					k = i;
		} else if (k >= 0 && (q = strstr(line, "Used ")) != NULL) {
			im->regs[k] = atoi(q + 5);
			const char *sm = strstr(line, "bytes smem");
			if (sm) {
				const char *b = sm;
				while (b > line && b[-1] == ' ')
					b--;
				while (b > line && b[-1] >= '0' && b[-1] <= '9')
					b--;
				im->smem[k] = atoi(b);
			}
		} else if (k >= 0 && (q = strstr(line, "bytes spill stores")) != NULL) {
			const char *b = q;
			while (b > line && b[-1] == ' ')
				b--;
			while (b > line && b[-1] >= '0' && b[-1] <= '9')
				b--;
			im->spill[k] = atoi(b);
		}
		p = eol ? eol + 1 : NULL;
	}
}

static int parsearchs(const char *s, int *sm, int max, const int *have, int nhave, KiErr *e, const KiFn *f)
{
	int n = 0;
	if (!s)
		s = "sm_80,sm_90";
	if (!strcmp(s, "all")) {
		for (int i = 0; i < nhave && n < max; i++)
			sm[n++] = have[i];
		return n;
	}
	while (*s) {
		const char *c = strchr(s, ',');
		size_t len = c ? (size_t)(c - s) : strlen(s);
		char one[32];
		snprintf(one, sizeof one, "%.*s", (int)(len < 31 ? len : 31), s);
		int v = 0;
		if (sscanf(one, "sm_%d", &v) != 1 && sscanf(one, "compute_%d", &v) != 1 && sscanf(one, "%d", &v) != 1)
			return ki_error(e, f->src, 0, 0, "--gpu-arch: '%s' is not an sm_XY name", one), -1;
		int ok = 0;
		for (int i = 0; i < nhave; i++)
			ok |= have[i] == v;
		if (!ok) {
			char list[256] = "";
			for (int i = 0; i < nhave; i++) {
				char t[16];
				snprintf(t, sizeof t, "%ssm_%d", i ? " " : "", have[i]);
				strncat(list, t, sizeof list - strlen(list) - 1);
			}
			return ki_error(e, f->src, 0, 0, "--gpu-arch: NVRTC cannot target sm_%d (supported: %s)", v, list), -1;
		}
		if (n < max)
			sm[n++] = v;
		s += len;
		if (*s == ',')
			s++;
	}
	return n;
}

/*
** NVRTC per arch, concurrently (issue 13: compile time). Each arch is one NVRTC program of the
** same source with its own launch sizes (KV_TT, KV_SQ, KV_SK); NVRTC compiles different programs
** on different threads at once (its front end, NVVM and ptxas all run in the calling thread), so
** the archs go to a pool of worker threads and the results are put together in arch order after
** they all finish: the artifact is byte for byte what the serial loop built. Workers:
** $KVCC_NVRTC_THREADS (0: no thread, the archs one after another in the calling thread, as
** before; default: one per arch, plus one per group of shared PTX for its second NVRTC part
** (group_ptx), up to the online CPUs, at most 8). kp_cuda_start returns while
** they run, so the driver generates the x86 kernels meanwhile (driver.c build).
*/
struct KpCudaJob {
	const KiFn *f;
	KpCudaOut *out;
	int dtype, head_dim, group;
	int narch, sm[KVG_MAXARCH];
	char defs[KVG_MAXARCH][5][32];
	char name[96];
	KpNvrtcRes r[KVG_MAXARCH];
	int rc[KVG_MAXARCH];
	char why[KVG_MAXARCH][512];
	double wall[KVG_MAXARCH], cpu[KVG_MAXARCH];
	pthread_t th[8];
	int nth;
	pthread_mutex_t mu;
	int next;
	/* one NVVM run for the archs of equal defines (see share_archs) */
	int lead[KVG_MAXARCH], share[KVG_MAXARCH], gdone[KVG_MAXARCH];
	KpNvrtcRes g[KVG_MAXARCH];   /* the lead's PTX */
	double gcpu[KVG_MAXARCH];
	pthread_cond_t cv;
	/* the lead's PTX from two NVRTC programs, KV_PART 1 and 2 (group_ptx): claimed, 1 done / -1 failed */
	int pclaim[KVG_MAXARCH][2], pst[KVG_MAXARCH][2], joining[KVG_MAXARCH];
	KpNvrtcRes gp[KVG_MAXARCH][2];
	char pwhy[KVG_MAXARCH][2][512];
};

/* NVRTC part p (KV_PART, prelude.cuh) of group l's source to PTX */
static void part1(KpCudaJob *J, int l, int p)
{
	char def[16];
	snprintf(def, sizeof def, "-DKV_PART=%d", p);
	const char *extra[] = { J->defs[l][0], J->defs[l][1], J->defs[l][2], J->defs[l][3], J->defs[l][4], def };
	double c1 = ki_thread_cpu_ms();
	int rc = kp_nvrtc_compile_to(J->out->src, J->name, J->sm[l], 1, extra, 6, &J->gp[l][p - 1], J->pwhy[l][p - 1],
	                             sizeof J->pwhy[l][p - 1]);
	double c = ki_thread_cpu_ms() - c1;
	pthread_mutex_lock(&J->mu);
	J->gcpu[l] += c;
	J->pst[l][p - 1] = rc == 0 ? 1 : -1;
	pthread_cond_broadcast(&J->cv);
	pthread_mutex_unlock(&J->mu);
}

/*
** Group l's PTX (issue 13: compile time): NVRTC compiles the source's two parts (KV_PART 2, the
** score and select kernels, then 1, the decode kernels and kv_paged) as two programs, each taken
** by the first thread of the group that finds it unclaimed, so two workers run NVVM at once (a
** thread waits only when both are taken: no deadlock at any KVCC_NVRTC_THREADS); the last one
** joins the two PTX modules (nvrtc.c kp_ptx_join: each kernel's PTX is the same as from one
** program but for its local names). A failed part or join: gdone -1, every arch of the group is
** compiled alone (arch1), as without ptxas.
*/
static void group_ptx(KpCudaJob *J, int l)
{
	pthread_mutex_lock(&J->mu);
	for (;;) {
		if (J->gdone[l])
			break;
		int p = !J->pclaim[l][1] ? 2 : !J->pclaim[l][0] ? 1 : 0;
		if (p) {
			J->pclaim[l][p - 1] = 1;
			pthread_mutex_unlock(&J->mu);
			part1(J, l, p);
			pthread_mutex_lock(&J->mu);
			continue;
		}
		if (!J->pst[l][0] || !J->pst[l][1] || J->joining[l]) {
			pthread_cond_wait(&J->cv, &J->mu);
			continue;
		}
		J->joining[l] = 1;
		pthread_mutex_unlock(&J->mu);
		int rc = -1;
		if (J->pst[l][0] > 0 && J->pst[l][1] > 0 &&
		    kp_ptx_join(J->gp[l][0].ptx, J->gp[l][1].ptx, &J->g[l].ptx, &J->g[l].nptx) == 0)
			rc = 0, J->g[l].ok = 1;
		kp_nvrtc_free(&J->gp[l][0]);
		kp_nvrtc_free(&J->gp[l][1]);
		pthread_mutex_lock(&J->mu);
		J->gdone[l] = rc == 0 ? 1 : -1;
		pthread_cond_broadcast(&J->cv);
	}
	pthread_mutex_unlock(&J->mu);
}

/* an arch that shares its lead's PTX: the group's PTX (group_ptx), then ptxas for this arch; 0,
** or -1 when the arch is to be compiled alone */
static int shared1(KpCudaJob *J, int a)
{
	int l = J->lead[a];
	double t1 = ki_now_ms();
	group_ptx(J, l);
	double pc;
	if (J->gdone[l] < 0 || kp_ptxas(J->g[l].ptx, J->g[l].nptx, J->sm[a], &J->r[a], &pc, J->why[a], sizeof J->why[a]) != 0)
		return -1;
	/* the arch's image holds the lead's PTX with its own `.target` line (what NVRTC would have
	** made for it but an unused global) */
	const char *src = J->g[l].ptx, *t = strstr(src, "\n.target sm_");
	char lt[16];
	snprintf(lt, sizeof lt, "sm_%d", J->sm[l]);
	size_t at = t ? (size_t)(t - src) + 9 : 0, ol = t && !strncmp(t + 9, lt, strlen(lt)) ? strlen(lt) : 0;
	char nt[16];
	int nl = snprintf(nt, sizeof nt, "sm_%d", J->sm[a]);
	size_t n = ol ? J->g[l].nptx - ol + (size_t)nl : J->g[l].nptx;
	J->r[a].ptx = malloc(n + 1);
	if (!J->r[a].ptx) {
		kp_nvrtc_free(&J->r[a]);
		return -1;
	}
	if (ol)
		snprintf(J->r[a].ptx, n + 1, "%.*s%s%s", (int)at, src, nt, src + at + ol);
	else
		memcpy(J->r[a].ptx, src, n + 1);
	J->r[a].nptx = n;
	J->rc[a] = 0;
	J->wall[a] = ki_now_ms() - t1, J->cpu[a] = (l == a ? J->gcpu[a] : 0) + pc;
	return 0;
}

static void arch1(KpCudaJob *J, int a)
{
	char *how = J->out->img[a].how;
	size_t hn = sizeof J->out->img[a].how;
	if (J->share[a] && shared1(J, a) == 0) {
		snprintf(how, hn, "sm_%d: the PTX of one NVVM run (two NVRTC parts joined, lead sm_%d), ptxas for this target",
		         J->sm[a], J->sm[J->lead[a]]);
		return;
	}
	int l = J->lead[a];
	if (!J->share[a])
		snprintf(how, hn, "sm_%d: NVRTC alone (no ptxas of NVRTC's release, or KVCC_PTXAS=off)", J->sm[a]);
	else if (J->gdone[l] < 0)
		snprintf(how, hn, "sm_%d: NVRTC alone: the two NVRTC parts were not joined (%.200s)", J->sm[a],
		         J->pst[l][0] < 0 ? J->pwhy[l][0] : J->pst[l][1] < 0 ? J->pwhy[l][1] : "kp_ptx_join refused the modules");
	else
		snprintf(how, hn, "sm_%d: NVRTC alone: ptxas failed: %.200s", J->sm[a], J->why[a]);
	const char *extra[] = { J->defs[a][0], J->defs[a][1], J->defs[a][2], J->defs[a][3], J->defs[a][4] };
	double t1 = ki_now_ms(), c1 = ki_thread_cpu_ms();
	J->rc[a] = kp_nvrtc_compile(J->out->src, J->name, J->sm[a], extra, 5, &J->r[a], J->why[a], sizeof J->why[a]);
	J->wall[a] = ki_now_ms() - t1, J->cpu[a] = ki_thread_cpu_ms() - c1;
}

static void *worker(void *p)
{
	KpCudaJob *J = p;
	for (;;) {
		pthread_mutex_lock(&J->mu);
		int a = J->next++;
		pthread_mutex_unlock(&J->mu);
		if (a >= J->narch)
			break;
		arch1(J, a);
	}
	/* no arch left: an unclaimed NVRTC part of a group (a lone arch's second part) */
	for (int l = 0; l < J->narch; l++) {
		if (!J->share[l] || J->lead[l] != l)
			continue;
		pthread_mutex_lock(&J->mu);
		int p = J->gdone[l] ? 0 : !J->pclaim[l][1] ? 2 : !J->pclaim[l][0] ? 1 : 0;
		if (p)
			J->pclaim[l][p - 1] = 1;
		pthread_mutex_unlock(&J->mu);
		if (p)
			part1(J, l, p);
	}
	return NULL;
}

/* jobs: the archs, plus one per group of shared PTX (its second NVRTC part, group_ptx) */
static int nworkers(int njob)
{
	const char *s = getenv("KVCC_NVRTC_THREADS");
	long n;
	if (s && *s) {
		char *end;
		n = strtol(s, &end, 10);
		if (*end || n < 0)
			n = 1;
	} else {
		n = sysconf(_SC_NPROCESSORS_ONLN);
		if (n < 1)
			n = 1;
	}
	if (n > njob)
		n = njob;
	return n > 8 ? 8 : (int)n;
}

/*
** One NVVM run per set of equal launch sizes (issue 13: compile time). The CUDA C is the same for
** every arch (no __CUDA_ARCH__ test that tells sm_80 from sm_90 apart) and NVVM's PTX for
** compute_80 and compute_90 differs only in `.target` and an unused global; what differs between
** archs is the five defines. Archs with the same defines form a group: its first arch (the lead)
** is compiled by NVRTC to PTX once, and ptxas (nvrtc.c kp_ptxas, NVRTC's own release) makes each
** arch's CUBIN from that PTX: the machine code NVRTC would have made per arch, for one NVVM run
** instead of one per arch. Each image holds the lead's PTX with its own `.target` line. A lone arch
** is a group of one (its NVRTC work still splits in two parts, group_ptx). No usable ptxas:
** NVRTC per arch, as before.
*/
static void share_archs(KpCudaJob *J)
{
	for (int a = 0; a < J->narch; a++) {
		J->lead[a] = a;
		for (int b = 0; b < a && J->lead[a] == a; b++) {
			int same = 1;
			for (int d = 0; d < 5; d++)
				same &= !strcmp(J->defs[a][d], J->defs[b][d]);
			if (same)
				J->lead[a] = J->lead[b];
		}
	}
	/* a lone arch too (session 11): its PTX from two NVRTC programs at once (group_ptx) */
	if (!kp_ptxas_available())
		return;
	for (int a = 0; a < J->narch; a++)
		J->share[a] = 1;
}

int kp_cuda_start(const KiFn *f, const KpCudaOpts *o, KpCudaOut *out, KpCudaJob **job, KiErr *e)
{
	*job = NULL;
	memset(out, 0, sizeof *out);
	const KpGpuCfg *gc = o->cfg;
	out->nthreads = gc && gc->nt ? gc->nt : o->nthreads > 0 ? o->nthreads : 256;
	if (out->nthreads % 32 || out->nthreads > 1024)
		return ki_error(e, f->src, 0, 0, "GPU backend: threads per block must be a multiple of 32 up to 1024"), -1;
	double t0 = ki_now_ms();
	if (kp_generate(f, o, out, e) != 0)
		return -1;
	out->gen_ms = ki_now_ms() - t0;
	if (o->gen_only)
		return 0;
	char why[512];
	if (kp_nvrtc_available(&out->nvrtc_major, &out->nvrtc_minor, why, sizeof why) != 0) {
		ki_error(e, f->src, 0, 0, "GPU backend: %s", why);
		kp_cuda_free(out);
		return -1;
	}
	int have[64], nhave = kp_nvrtc_archs(have, 64), sm[KVG_MAXARCH];
	int narch = parsearchs(o->archs, sm, KVG_MAXARCH, have, nhave, e, f);
	if (narch < 0) {
		kp_cuda_free(out);
		return -1;
	}
	KpCudaJob *J = calloc(1, sizeof *J);
	if (!J) {
		kp_cuda_free(out);
		return ki_error(e, f->src, 0, 0, "out of memory (GPU backend)"), -1;
	}
	J->f = f, J->out = out, J->dtype = o->dtype, J->head_dim = o->head_dim, J->group = o->group, J->narch = narch;
	snprintf(J->name, sizeof J->name, "%s.cu", f->name);
	for (int a = 0; a < narch; a++) {
		KpCudaImage *im = &out->img[out->nimg++];
		snprintf(im->arch, sizeof im->arch, "sm_%d", sm[a]);
		J->sm[a] = im->sm = sm[a];
		im->tile = kp_cuda_tile(sm[a], o->dtype, o->head_dim, out->nthreads);
		if (gc && gc->tt && gc->tt < im->tile)
			im->tile = gc->tt;
		kp_cuda_score_tile_st(sm[a], o->dtype, o->head_dim, o->group, gc ? gc->sq : 0, gc ? gc->sk : 0,
		                      gc ? gc->st : 0, &im->sq, &im->sk, &im->st);
		snprintf(J->defs[a][0], sizeof J->defs[a][0], "-DKV_NT=%d", out->nthreads);
		snprintf(J->defs[a][2], sizeof J->defs[a][2], "-DKV_SQ=%d", im->sq);
		snprintf(J->defs[a][3], sizeof J->defs[a][3], "-DKV_SK=%d", im->sk);
		snprintf(J->defs[a][4], sizeof J->defs[a][4], "-DKV_ST=%d", im->st);
	}
	/* KV_TT: the smallest tile of the archs, for the merge's similarity tiles (merge.c tiled: they
	** fit every arch's staging buffer); the compaction's staging rows come from the launch's
	** dynamic shared memory (kernels.c), so KV_TT is the same define for every arch */
	int tmin = out->img[0].tile;
	for (int a = 1; a < narch; a++)
		tmin = out->img[a].tile < tmin ? out->img[a].tile : tmin;
	for (int a = 0; a < narch; a++)
		snprintf(J->defs[a][1], sizeof J->defs[a][1], "-DKV_TT=%d", tmin);
	share_archs(J);
	pthread_mutex_init(&J->mu, NULL);
	pthread_cond_init(&J->cv, NULL);
	int ngrp = 0;
	for (int a = 0; a < narch; a++)
		ngrp += J->share[a] && J->lead[a] == a;
	int nw = nworkers(narch + ngrp);
	for (int t = 0; t < nw; t++)
		if (pthread_create(&J->th[J->nth], NULL, worker, J) == 0)
			J->nth++;
	if (!J->nth)   /* KVCC_NVRTC_THREADS=0, or no thread could start: here, one arch after another */
		worker(J);
	*job = J;
	return 0;
}

int kp_cuda_finish(KpCudaJob *J, double *cpu, KiErr *e)
{
	if (!J)
		return 0;
	for (int t = 0; t < J->nth; t++)
		pthread_join(J->th[t], NULL);
	pthread_mutex_destroy(&J->mu);
	pthread_cond_destroy(&J->cv);
	for (int a = 0; a < J->narch; a++)
		kp_nvrtc_free(&J->g[a]);
	KpCudaOut *out = J->out;
	int rc = 0;
	for (int a = 0; a < J->narch; a++) {
		if (!rc && J->rc[a] != 0) {   /* the first failing arch in the order asked for */
			ki_error(e, J->f->src, 0, 0, "GPU backend: %s", J->why[a]);
			rc = -1;
		}
		if (rc) {
			kp_nvrtc_free(&J->r[a]);
			continue;
		}
		KpCudaImage *im = &out->img[a];
		im->ms = J->wall[a];
		if (cpu)
			cpu[a] = J->cpu[a];
		im->ptx = J->r[a].ptx, im->nptx = J->r[a].nptx, im->cubin = J->r[a].cubin, im->ncubin = J->r[a].ncubin;
		parselog(J->r[a].log, out, im);
		free(J->r[a].log);
		for (int k = 0; k < out->nkern; k++)
			im->dsmem[k] = out->kern[k].role == KVG_SELECT ? kp_cuda_dsmem(J->dtype, J->head_dim, im->tile)
			               : out->kern[k].tiled ? kp_cuda_score_dsmem_st(J->dtype, J->head_dim, J->group, im->sq, im->sk, im->st)
			                                    : 0;
	}
	if (rc)   /* the images before the failing arch own their PTX / CUBIN; the rest were freed above */
		kp_cuda_free(out);
	free(J);
	return rc;
}

int kp_compile_cuda(const KiFn *f, const KpCudaOpts *o, KpCudaOut *out, KiErr *e)
{
	KpCudaJob *J;
	if (kp_cuda_start(f, o, out, &J, e) != 0)
		return -1;
	return kp_cuda_finish(J, NULL, e);
}

void kp_cuda_free(KpCudaOut *out)
{
	free(out->src);
	for (int i = 0; i < out->nimg; i++) {
		free(out->img[i].ptx);
		free(out->img[i].cubin);
	}
	memset(out, 0, sizeof *out);
}
