/*
** bench/mf32_amx3.c — a standalone prototype (issue 12, session 10, wt-mf3210), not built by make and
** not part of kvcc: the f32 nearest-kept similarity of one head (cosine of keys, head_dim 128, the
** evicted x kept arg-max of merge nearest) two ways, by hand:
**   exact: what kvcc's f32 path computes today (codegen/x86 qkt + mbest): per pair the f32 dot as
**     one FMA chain over c = 0..D-1 from 0, sim = dot / max(|e| |k|, 1e-8) (f32 norms: sqrt of a
**     sequential sum of squares), the arg-max with ties -> the lower kept index; register-blocked
**     4 evicted rows x 64 kept tokens (4 x 4 zmm accumulators; the per-pair order is the chain, so
**     the blocking does not change a bit);
**   amx3: every row normalized (x / |x|) and split once into hi = bf16(x), lo = bf16(x - hi) (the
**     kept rows packed once per head into the VNNI B layout), the approximate cosine
**     hi.hi + hi.lo + lo.hi as three tdpbf16ps accumulating in f32, per lane the best, its index
**     and the second best (v2 = max(v2, min(x, v1)); v1 = max(v1, x)), the lanes reduced once per
**     row; a row whose best beats every other candidate by no more than 2B (B below), or that is
**     not finite / has a tiny norm, is re-checked with the exact path (its arg-max over all kept
**     rows: the exact path's result bit for bit).
** The bound B (doc/merge-f32-amx.md derives it; u = 2^-24, D = head_dim): for rows with finite
** elements and |e| |k| >= 2e-8 (so that the exact path's clamp max(., 1e-8) is not active),
**   |amx3 cosine - exact path's sim| <= B = (800 + 7 D) u   (D = 128: 1,696 u = 1.0e-4)
** so a gap best - second > 2B means the exact path has the same unique arg-max.
** Prints, per distribution, the exact path's CPU time, amx3's (split + pack, products + top-2,
** re-check separately), the re-checked rows, and checks every row's arg-max against the exact
** path's (the exact path runs over every row: it is the baseline). 1 thread, thread CPU time,
** best of R.
**   cc -O2 -march=sapphirerapids -o /tmp/mf32 bench/mf32_amx3.c -lm && /tmp/mf32 32768 3
** -DKVCC: the exact path is kvcc's own f32 kernels of policies/snapkv_merge.lua (mscal, qkt, mbest of
** the compiled artifact, runtime/merge.c's lane reduction; run from the repository root):
**   cc -DKVCC -O2 -march=sapphirerapids -I. -Iinclude -o /tmp/mf32k bench/mf32_amx3.c -Lbuild -lkvcc \
**      -lkvcc_rt -Wl,-rpath,$PWD/build -lm -lpthread && /tmp/mf32k 4096 3
** (the in-tree version: codegen/x86/mamx3.c, runtime/merge.c similarity3, doc/merge-f32-amx.md; the
** bound there, B = (800 + 7D) u, is the one used here)
** NOEPI=1 in the environment: the products only, no top-2 epilogue (timing only: the targets are wrong).
** dist 0: Gaussian keys; 1: a common direction + noise (cosines concentrated: more near ties);
** 2: adversarial: kept rows duplicated and nudged by one ulp, evicted rows copies of kept rows
**    (exact and near ties everywhere), a NaN and an inf row, a zero row.
*/
#define _GNU_SOURCE
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#ifdef KVCC
#include "kvcc_compiler.h"
#include "runtime/rt.h"
#endif
enum { D = 128, AT = 64, MBK = 256 };
static double cpu(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
struct cfg { uint8_t pal, start; uint8_t r[14]; uint16_t colsb[16]; uint8_t rows[16]; };
static void tcfg(void) { struct cfg c; memset(&c, 0, sizeof c); c.pal = 1; for (int t = 0; t < 8; t++) c.colsb[t] = 64, c.rows[t] = 16; _tile_loadconfig(&c); }

static uint64_t rs = 88172645463325252ull;
static double urand(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return ((rs >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static float gauss(void) { return (float)(sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand())); }

static int n, m, nE;
static float *K, *E, *Kk;          /* all rows; the evicted rows; the kept rows [.][D] */
static float *ne, *nk;             /* f32 norms (the exact path's) */
static float *KtF;                 /* exact: kept rows transposed per 64-token tile [t][c][64] */
static uint16_t *Eh, *El;          /* amx3: evicted rows normalized, hi / lo [nE][D] */
static uint32_t *Kh, *Kl;          /* amx3: kept rows normalized, hi / lo, VNNI [t][D/2][64] */
static int32_t *xbest, *abest;     /* arg-max: exact, amx3 */
static float *v1, *v2; static int32_t *i1;   /* amx3 per row and lane [MBK][16] */
static float Cb[2 * 16 * AT] __attribute__((aligned(64)));
static int32_t *rk, *rkout;                /* rows to re-check */
static uint8_t *ebad;              /* evicted row not finite / tiny norm: exact path */

static float normf(const float *x) { float s = 0; for (int c = 0; c < D; c++) s = fmaf(x[c], x[c], s); return sqrtf(s); }


#ifdef KVCC
/* the exact path = kvcc's own f32 kernels of policies/snapkv_merge.lua (the artifact's mscal, qkt,
** mbest and runtime/merge.c's lane reduction), on rows R: the re-check's result is kvcc's bit for bit */
static const kvcc_artifact *KA;
static const KaHdr *KH;
static double kpar[64];
static float *kes, *kks, *kesr, *kS, *kKp, *kEf, *klv;
static int32_t *kli;
enum { KMB = 512 };
static void kvcc_setup(void)
{
	static kvcc_policy *pol;
	if (!pol) {
		kvcc_spec sp = { KVCC_F32, D, 4, KVCC_TARGET_NATIVE };
		if (kvcc_compile_file("policies/snapkv_merge.lua", &sp, &pol) != 0) { printf("compile: %s\n", kvcc_last_error()); exit(1); }
		KA = pol->a, KH = pol->h;
		for (int i = 0; i < kvcc_param_count(pol) && i < 64; i++) { const char *nm; kvcc_param_info(pol, i, &nm, &kpar[i]); }
		size_t N = (size_t)n + 64;
		kes = malloc(((size_t)KH->nes + 1) * N * 4 + 256), kks = malloc(((size_t)KH->nks + 1) * N * 4 + 256);
		kesr = malloc(((size_t)KH->nes + 1) * N * 4 + 256);
		kS = aligned_alloc(64, KMB * AT * 4), kKp = aligned_alloc(64, 2 * D * AT * 4), kEf = aligned_alloc(64, (size_t)KMB * D * 4);
		klv = malloc(KMB * 16 * 4), kli = malloc(KMB * 16 * 4);
	}
	for (int i = 0; i < nE; i++) kes[(size_t)KH->nes * nE + i] = 1;
	for (int j = 0; j < m; j++) kks[(size_t)KH->nks * m + j] = 1;
	KA->mscal(E, E, D, nE, 0, kpar, kes, nE);
	KA->mscal(Kk, Kk, D, m, 1, kpar, kks, m);
}
static void exact_rows(const int32_t *R, int nr, int32_t *out)
{
	int W = KH->vec_width > 1 && KH->vec_width <= 16 ? KH->vec_width : 1;
	for (int s = 0; s <= KH->nes; s++) for (int q = 0; q < nr; q++) kesr[(size_t)s * nr + q] = kes[(size_t)s * nE + R[q]];
	for (int q0 = 0; q0 < nr; q0 += KMB) {
		int qn = nr - q0 < KMB ? nr - q0 : KMB;
		for (int q = 0; q < qn; q++) memcpy(kEf + (size_t)q * D, E + (size_t)R[q0 + q] * D, D * 4);
		for (int i = 0; i < qn * W; i++) klv[i] = -INFINITY, kli[i] = -1;
		for (int j0 = 0; j0 < m; j0 += AT) {
			int nt = m - j0 < AT ? m - j0 : AT;
			KA->qkt(Kk + (size_t)j0 * D, D, nt, kEf, qn, kS, kKp);
			KA->mbest(kS, qn, nt, j0, kesr + q0, nr, kks, m, kpar, klv, kli);
		}
		for (int q = 0; q < qn; q++) {   /* runtime/merge.c lanes() */
			const float *v = klv + (size_t)q * W; const int32_t *x = kli + (size_t)q * W;
			float bv = -INFINITY; int32_t bi = -1;
			for (int l = 0; l < W; l++)
				if (x[l] >= 0 && (bi < 0 || v[l] > bv || (v[l] == bv && x[l] < bi))) bv = v[l], bi = x[l];
			out[q0 + q] = bi;
		}
	}
}
#else
static void kvcc_setup(void) {}
/* exact: rows R[0..nr) (evicted indices) -> xbest / out; sims in the exact path's order */
static void exact_rows(const int32_t *R, int nr, int32_t *out)
{
	int mt = (m + AT - 1) / AT;
	for (int q0 = 0; q0 < nr; q0 += 4) {
		int qn = nr - q0 < 4 ? nr - q0 : 4;
		const float *er[4]; float en[4];
		for (int q = 0; q < 4; q++) { int r = R[q0 + (q < qn ? q : 0)]; er[q] = E + (size_t)r * D; en[q] = ne[r]; }
		__m512 bv[4]; __m512i bi[4];
		for (int q = 0; q < 4; q++) bv[q] = _mm512_set1_ps(-INFINITY), bi[q] = _mm512_set1_epi32(-1);
		for (int t = 0; t < mt; t++) {
			const float *kt = KtF + (size_t)t * D * AT;
			__m512 a[4][4];
			for (int q = 0; q < 4; q++) for (int v = 0; v < 4; v++) a[q][v] = _mm512_setzero_ps();
			for (int c = 0; c < D; c++) {
				__m512 k0 = _mm512_load_ps(kt + c * AT), k1 = _mm512_load_ps(kt + c * AT + 16);
				__m512 k2 = _mm512_load_ps(kt + c * AT + 32), k3 = _mm512_load_ps(kt + c * AT + 48);
				for (int q = 0; q < 4; q++) {
					__m512 e = _mm512_set1_ps(er[q][c]);
					a[q][0] = _mm512_fmadd_ps(e, k0, a[q][0]); a[q][1] = _mm512_fmadd_ps(e, k1, a[q][1]);
					a[q][2] = _mm512_fmadd_ps(e, k2, a[q][2]); a[q][3] = _mm512_fmadd_ps(e, k3, a[q][3]);
				}
			}
			for (int v = 0; v < 4; v++) {
				int j0 = t * AT + v * 16;
				__m512i j = _mm512_add_epi32(_mm512_set1_epi32(j0), _mm512_setr_epi32(0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15));
				__mmask16 ok = _mm512_cmplt_epi32_mask(j, _mm512_set1_epi32(m));
				__m512 kn = _mm512_maskz_loadu_ps(ok, nk + j0);
				for (int q = 0; q < 4; q++) {
					__m512 den = _mm512_max_ps(_mm512_mul_ps(_mm512_set1_ps(en[q]), kn), _mm512_set1_ps(1e-8f));
					__m512 s = _mm512_div_ps(a[q][v], den);
					/* valid, not NaN, and (none yet or strictly greater) */
					__mmask16 b = ok & _mm512_cmp_ps_mask(s, s, _CMP_ORD_Q) &
					              (_mm512_cmplt_epi32_mask(bi[q], _mm512_setzero_si512()) | _mm512_cmp_ps_mask(s, bv[q], _CMP_GT_OQ));
					bv[q] = _mm512_mask_mov_ps(bv[q], b, s), bi[q] = _mm512_mask_mov_epi32(bi[q], b, j);
				}
			}
		}
		for (int q = 0; q < qn; q++) {
			float v[16]; int32_t x[16];
			_mm512_storeu_ps(v, bv[q]), _mm512_storeu_si512(x, bi[q]);
			float b = -INFINITY; int32_t ix = -1;
			for (int l = 0; l < 16; l++)
				if (x[l] >= 0 && (ix < 0 || v[l] > b || (v[l] == b && x[l] < ix))) b = v[l], ix = x[l];
			out[q0 + q] = ix;
		}
	}
}

#endif

static void pack_exact(void)
{
	int mt = (m + AT - 1) / AT;
	memset(KtF, 0, (size_t)mt * D * AT * 4);
	for (int j = 0; j < m; j++) for (int c = 0; c < D; c++) KtF[(size_t)(j / AT) * D * AT + c * AT + j % AT] = Kk[(size_t)j * D + c];
}

/* amx3's split: x / |x| into hi, lo (0 for a row the exact path takes); vcvtneps2bf16 rounds to
** nearest even (denormal inputs and outputs flushed: the bound's absolute term) */
static void split(const float *x, float nx, uint16_t *h, uint16_t *l, int ok)
{
	__m512 r = _mm512_set1_ps(ok ? 1.0f / nx : 0.0f);
	for (int c = 0; c < D; c += 16) {
		__m512 y = ok ? _mm512_mul_ps(_mm512_loadu_ps(x + c), r) : _mm512_setzero_ps();
		__m256i a = (__m256i)_mm512_cvtneps_pbh(y);
		__m512 hy = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(a), 16));
		__m256i b = (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(y, hy));
		_mm256_storeu_si256((__m256i *)(h + c), a), _mm256_storeu_si256((__m256i *)(l + c), b);
	}
}

static int head_exact_only;   /* a kept row not finite or of tiny norm: the head takes the exact path */
static float nkmin;
static double t_split, t_prod, t_chk;
static int nchk, noepi;

static void amx3(double B)
{
	double c0 = cpu();
	int mt = (m + AT - 1) / AT;
	head_exact_only = 0, nkmin = INFINITY;
	for (int j = 0; j < m; j++) {
		if (!(nk[j] < INFINITY) || nk[j] < 1e-30f) head_exact_only = 1;
		nkmin = nk[j] < nkmin ? nk[j] : nkmin;
	}
	if (head_exact_only) {   /* (not timed apart: rare) */
		for (int i = 0; i < nE; i++) rk[i] = i;
		exact_rows(rk, nE, abest), nchk = nE;
		t_split = t_prod = 0, t_chk = cpu() - c0;
		return;
	}
	uint16_t hrow[D], lrow[D];
	memset(Kh, 0, (size_t)mt * D / 2 * AT * 4), memset(Kl, 0, (size_t)mt * D / 2 * AT * 4);
	for (int j = 0; j < m; j++) {
		split(Kk + (size_t)j * D, nk[j], hrow, lrow, 1);
		uint32_t *ph = Kh + (size_t)(j / AT) * D / 2 * AT, *pl = Kl + (size_t)(j / AT) * D / 2 * AT;
		for (int c2 = 0; c2 < D / 2; c2++) {
			ph[c2 * AT + j % AT] = hrow[2 * c2] | (uint32_t)hrow[2 * c2 + 1] << 16;
			pl[c2 * AT + j % AT] = lrow[2 * c2] | (uint32_t)lrow[2 * c2 + 1] << 16;
		}
	}
	for (int i = 0; i < nE; i++) {
		const float *x = E + (size_t)i * D;
		int fin = ne[i] < INFINITY;
		for (int c = 0; c < D && fin; c++) fin = isfinite(x[c]);
		ebad[i] = !fin || !(ne[i] * nkmin >= 2e-8f);
		split(x, ne[i], Eh + (size_t)i * D, El + (size_t)i * D, !ebad[i]);
	}
	double c1 = cpu();
	tcfg();
	nchk = 0;
	const __m512i iota = _mm512_setr_epi32(0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15);
	for (int e0 = 0; e0 < nE; e0 += MBK) {
		int nb = nE - e0 < MBK ? nE - e0 : MBK, nb16 = (nb + 15) / 16 * 16;
		for (int i = 0; i < nb16 * 16; i++) v1[i] = v2[i] = -INFINITY, i1[i] = -1;
		for (int t = 0; t < mt; t++) {
			const uint32_t *bh = Kh + (size_t)t * D / 2 * AT, *bl = Kl + (size_t)t * D / 2 * AT;
			int nt = m - t * AT < AT ? m - t * AT : AT;
			__mmask16 vm[4];
			for (int s = 0; s < 4; s++) { int r = nt - s * 16; vm[s] = r >= 16 ? 0xffff : r <= 0 ? 0 : (__mmask16)((1u << r) - 1); }
			/* software-pipelined: the tiles of block r0 compute while the epilogue reads block
			** r0 - 16's C (stored into the other half of Cb) */
			for (int r0 = 0; r0 <= nb16; r0 += 16) {
				if (r0 < nb16) {
					const uint16_t *ah = Eh + (size_t)(e0 + r0) * D, *al = El + (size_t)(e0 + r0) * D;
					_tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
#define STEP(k) \
					_tile_loadd(4, ah + (k) * 32, D * 2); _tile_loadd(5, al + (k) * 32, D * 2); \
					_tile_loadd(6, bh + (k) * 16 * AT + 0, AT * 4); _tile_loadd(7, bl + (k) * 16 * AT + 0, AT * 4); \
					_tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(0, 4, 7); _tile_dpbf16ps(0, 5, 6); \
					_tile_loadd(6, bh + (k) * 16 * AT + 16, AT * 4); _tile_loadd(7, bl + (k) * 16 * AT + 16, AT * 4); \
					_tile_dpbf16ps(1, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(1, 5, 6); \
					_tile_loadd(6, bh + (k) * 16 * AT + 32, AT * 4); _tile_loadd(7, bl + (k) * 16 * AT + 32, AT * 4); \
					_tile_dpbf16ps(2, 4, 6); _tile_dpbf16ps(2, 4, 7); _tile_dpbf16ps(2, 5, 6); \
					_tile_loadd(6, bh + (k) * 16 * AT + 48, AT * 4); _tile_loadd(7, bl + (k) * 16 * AT + 48, AT * 4); \
					_tile_dpbf16ps(3, 4, 6); _tile_dpbf16ps(3, 4, 7); _tile_dpbf16ps(3, 5, 6);
					STEP(0) STEP(1) STEP(2) STEP(3)
#undef STEP
				}
				if (r0 > 0 && !noepi) {
					const float *cb = Cb + ((r0 / 16 - 1) & 1) * 16 * AT;
					for (int r = 0; r < 16; r++) {
						int row = r0 - 16 + r;
						float *pv1 = v1 + (size_t)row * 16, *pv2 = v2 + (size_t)row * 16;
						int32_t *pi = i1 + (size_t)row * 16;
						__m512 a = _mm512_load_ps(pv1), b = _mm512_load_ps(pv2);
						__m512i ix = _mm512_load_si512(pi);
						for (int s = 0; s < 4; s++) {
							__m512 x = _mm512_load_ps(cb + r * AT + s * 16);
							__m512i j = _mm512_add_epi32(iota, _mm512_set1_epi32(t * AT + s * 16));
							__mmask16 gt = _mm512_mask_cmp_ps_mask(vm[s], x, a, _CMP_GT_OQ);
							b = _mm512_mask_max_ps(b, vm[s], b, _mm512_min_ps(x, a));
							a = _mm512_mask_mov_ps(a, gt, x), ix = _mm512_mask_mov_epi32(ix, gt, j);
						}
						_mm512_store_ps(pv1, a), _mm512_store_ps(pv2, b), _mm512_store_si512(pi, ix);
					}
				}
				if (r0 < nb16) {
					float *cb = Cb + ((r0 / 16) & 1) * 16 * AT;
					_tile_stored(0, cb + 0, AT * 4); _tile_stored(1, cb + 16, AT * 4);
					_tile_stored(2, cb + 32, AT * 4); _tile_stored(3, cb + 48, AT * 4);
				}
			}
		}
		for (int q = 0; q < nb; q++) {   /* the lanes: the best (ties -> the lower index), the runner-up */
			const float *a = v1 + (size_t)q * 16, *b = v2 + (size_t)q * 16;
			const int32_t *x = i1 + (size_t)q * 16;
			int bl = -1;
			for (int l = 0; l < 16; l++)
				if (x[l] >= 0 && (bl < 0 || a[l] > a[bl] || (a[l] == a[bl] && x[l] < x[bl]))) bl = l;
			float sec = bl >= 0 ? b[bl] : -INFINITY;
			for (int l = 0; l < 16; l++) if (l != bl && a[l] > sec) sec = a[l];
			int i = e0 + q;
			abest[i] = bl >= 0 ? x[bl] : -1;
			if (ebad[i] || bl < 0 || !(a[bl] - sec > 2 * B)) rk[nchk++] = i;
		}
	}
	_tile_release();
	double c2 = cpu();
	exact_rows(rk, nchk, rkout);
	for (int q = 0; q < nchk; q++) abest[rk[q]] = rkout[q];
	double c3 = cpu();
	t_split = c1 - c0, t_prod = c2 - c1, t_chk = c3 - c2;
}

static void gen(int dist)
{
	float mu[D];
	for (int c = 0; c < D; c++) mu[c] = 2 * gauss();
	for (size_t i = 0; i < (size_t)n * D; i++) K[i] = gauss();
	if (dist == 1)
		for (int t = 0; t < n; t++) for (int c = 0; c < D; c++) K[(size_t)t * D + c] += mu[c];
	/* kept: a random half (sorted); evicted: the rest */
	uint8_t *kp = calloc((size_t)n, 1);
	m = 0;
	for (int t = 0; t < n; t++) kp[t] = urand() < 0.5;
	nE = 0;
	for (int t = 0; t < n; t++) {
		if (kp[t]) memcpy(Kk + (size_t)m++ * D, K + (size_t)t * D, D * 4);
		else memcpy(E + (size_t)nE++ * D, K + (size_t)t * D, D * 4);
	}
	free(kp);
	if (dist == 2) {   /* near / exact ties */
		for (int j = 1; j < m; j += 2) {
			memcpy(Kk + (size_t)j * D, Kk + (size_t)(j - 1) * D, D * 4);
			if (j % 4 == 1) { float *y = Kk + (size_t)j * D + (j / 4) % D; *y = nextafterf(*y, INFINITY); }
		}
		for (int i = 0; i < nE; i += 3) {
			memcpy(E + (size_t)i * D, Kk + (size_t)((i * 7) % m) * D, D * 4);
			if (i % 2) E[(size_t)i * D + i % D] *= 1 + 1e-7f;
		}
		if (nE > 10) {
			E[5 * D + 3] = NAN, E[7 * D] = INFINITY;
			memset(E + 8 * D, 0, D * 4);
			for (int c = 0; c < D; c++) E[9 * D + c] = 1e-30f;
		}
	}
	for (int j = 0; j < m; j++) nk[j] = normf(Kk + (size_t)j * D);
	for (int i = 0; i < nE; i++) ne[i] = normf(E + (size_t)i * D);
	memset(Eh + (size_t)nE * D, 0, 16 * D * 2), memset(El + (size_t)nE * D, 0, 16 * D * 2);
}

int main(int argc, char **argv)
{
	n = argc > 1 ? atoi(argv[1]) : 4096;
	int R = argc > 2 ? atoi(argv[2]) : 3, d0 = argc > 3 ? atoi(argv[3]) : 0, d1 = argc > 3 ? d0 : 2;
	if (syscall(SYS_arch_prctl, 0x1023, 18)) { puts("no AMX permission"); return 1; }
	const double u = 1.0 / 16777216.0, B = (800 + 7 * D) * u;
	size_t N = (size_t)n + 64;
	K = aligned_alloc(64, N * D * 4), E = aligned_alloc(64, N * D * 4), Kk = aligned_alloc(64, N * D * 4);
	ne = malloc(N * 4), nk = malloc(N * 4 + 256), KtF = aligned_alloc(64, N * D * 4);
	Eh = aligned_alloc(64, N * D * 2), El = aligned_alloc(64, N * D * 2);
	Kh = aligned_alloc(64, N * D * 2), Kl = aligned_alloc(64, N * D * 2);
	xbest = malloc(N * 4), abest = malloc(N * 4), rk = malloc(N * 4), rkout = malloc(N * 4), ebad = malloc(N);
	v1 = aligned_alloc(64, (MBK + 16) * 64), v2 = aligned_alloc(64, (MBK + 16) * 64), i1 = aligned_alloc(64, (MBK + 16) * 64);
	int32_t *all = malloc(N * 4);
	noepi = getenv("NOEPI") != NULL;
	printf("%s, n %d, head_dim %d, B = %.3g (2B = %.3g), 1 thread, thread CPU time, best of %d\n",
#ifdef KVCC
	       "exact = kvcc's f32 kernels (snapkv_merge)",
#else
	       "exact = this file's f32 FMA chain",
#endif
	       n, D, B, 2 * B, R);
	for (int dist = d0; dist <= d1; dist++) {
		gen(dist);
		pack_exact();
		kvcc_setup();
		for (int i = 0; i < nE; i++) all[i] = i;
		double bx = 1e30, bs = 1e30, bp = 1e30, bc = 1e30, ba = 1e30;
		int bad = 0;
		for (int r = 0; r < R; r++) {   /* interleaved: exact, amx3 */
			double c0 = cpu();
			exact_rows(all, nE, xbest);
			double c1 = cpu();
			bx = c1 - c0 < bx ? c1 - c0 : bx;
			amx3(B);
			bs = t_split < bs ? t_split : bs, bp = t_prod < bp ? t_prod : bp, bc = t_chk < bc ? t_chk : bc;
			ba = t_split + t_prod + t_chk < ba ? t_split + t_prod + t_chk : ba;
			for (int i = 0; i < nE; i++) bad += xbest[i] != abest[i];
		}
		double fl = 2.0 * nE * m * D;
		printf("dist %d: |E| %d, |S| %d: exact %.1f ms (%.0f GFLOP/s); amx3 %.1f ms = split+pack %.1f + products/top-2 %.1f "
		       "(%.0f GFLOP/s of bf16 products) + re-check %.1f (%d rows, %.2f %%): %.2fx; arg-max differs in %d rows\n",
		       dist, nE, m, bx * 1e3, fl / bx * 1e-9, ba * 1e3, bs * 1e3, bp * 1e3, 3 * fl / bp * 1e-9, bc * 1e3, nchk,
		       100.0 * nchk / nE, bx / ba, bad);
	}
	return 0;
}
