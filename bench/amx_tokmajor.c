/*
** bench/amx_tokmajor.c — a standalone prototype (issue 15, session 9 round 2, wt-amx9), not built by
** make all (`make bench-proto` builds it, bench/bench.mk) and not part of kvcc: one head's AMX score
** phase (bf16 K [n][128], 256 query rows, tiles of 64 tokens, SnapKV's softmax-and-sum), written twice by hand with the same exp polynomial:
**   query-major (what codegen/x86 gen_qkt_amx + sstate + sacce do): K's tile packed into the VNNI
**     B layout by 16 x 16 transposes, C = 16 queries x 16 tokens, S [256][64] per tile;
**   token-major: K's 16 rows loaded straight as the A tile, Q packed once per head into the VNNI B
**     layout Qv[c/2][q], C = 16 tokens x 16 queries, S^T [64][256]; the running max and sums are
**     per lane (16 queries a vector, no horizontal max), sacce sums each token's 256 queries.
** Prints qkt alone, the phase (pass 1 = Q·K + max + exps into E + sums), and the token-major phase
** without E (Q·K and the exps again in pass 2). 1 thread, thread CPU time, best of R.
**   cc -O2 -march=sapphirerapids -o /tmp/tokmajor bench/amx_tokmajor.c -lm && /tmp/tokmajor 32768 5
** CH (-DCH=16): the token chunk of one running-max step in the token-major pass 1 (default 64).
** LAZY (-DLAZY=1): the token-major pass 1 reads S^T once, exps against the previous running max,
**   redoing a half tile exactly when a lane's max grew by more than 16 ("lazy redo" counts them).
*/
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <math.h>
enum { D = 128, NQ = 256, AT = 64 };
#ifndef CH
#define CH 64
#endif
static double cpu(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
struct cfg { uint8_t pal, start; uint8_t r[14]; uint16_t colsb[16]; uint8_t rows[16]; };
static void tcfg(void) { struct cfg c; memset(&c, 0, sizeof c); c.pal = 1; for (int t = 0; t < 8; t++) c.colsb[t] = 64, c.rows[t] = 16; _tile_loadconfig(&c); }
static uint16_t *K, *Q; static uint32_t *Qv; static float *S, *ST;
static __m512i mlo, mhi;
static void tr16(__m512i *r) {   /* 16x16 transpose of 32-bit words, four rounds of vpermt2d */
	__m512i n[16];
	for (int round = 0; round < 4; round++) {
		for (int i = 0; i < 8; i++) { n[2*i] = _mm512_permutex2var_epi32(r[i], mlo, r[i+8]); n[2*i+1] = _mm512_permutex2var_epi32(r[i], mhi, r[i+8]); }
		memcpy(r, n, sizeof n);
	}
}
static uint32_t Kp[D/2*AT] __attribute__((aligned(64)));
/* Q packed once per head into the VNNI B layout Qv[c2][q] */
static void packqv(void) { for (int c = 0; c < D/2; c++) for (int q = 0; q < NQ; q++) Qv[c*NQ + q] = (uint32_t)Q[q*D + 2*c] | (uint32_t)Q[q*D + 2*c+1] << 16; }
static void qk_qmajor_tile(int t0) {
		const uint16_t *Kt = K + (size_t)t0 * D;
		for (int c = 0; c < D/2; c += 16)
			for (int jb = 0; jb < AT/16; jb++) {
				__m512i r[16];
				for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_si512(Kt + (size_t)(jb*16+i)*D + 2*c);
				tr16(r);
				for (int i = 0; i < 16; i++) _mm512_store_si512(Kp + (c+i)*AT + jb*16, r[i]);
			}
		for (int q = 0; q < NQ; q += 16) {
			_tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
#define STEP(k) _tile_loadd(4, Q + (size_t)q*D + (k)*32, D*2); \
			_tile_loadd(5, Kp + (k)*16*AT + 0, AT*4); _tile_dpbf16ps(0, 4, 5); \
			_tile_loadd(6, Kp + (k)*16*AT + 16, AT*4); _tile_dpbf16ps(1, 4, 6); \
			_tile_loadd(7, Kp + (k)*16*AT + 32, AT*4); _tile_dpbf16ps(2, 4, 7); \
			_tile_loadd(5, Kp + (k)*16*AT + 48, AT*4); _tile_dpbf16ps(3, 4, 5);
			STEP(0) STEP(1) STEP(2) STEP(3)
#undef STEP
			_tile_stored(0, S + q*AT + 0, AT*4); _tile_stored(1, S + q*AT + 16, AT*4);
			_tile_stored(2, S + q*AT + 32, AT*4); _tile_stored(3, S + q*AT + 48, AT*4);
		}
}
static void qk_tmajor_tile(int t0) {
		const uint16_t *Kt = K + (size_t)t0 * D;
		for (int q = 0; q < NQ; q += 16) {
			_tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
#define STEP(k) _tile_loadd(4, Qv + (k)*16*NQ + q, NQ*4); \
			_tile_loadd(5, Kt + 0*D + (k)*32, D*2); _tile_dpbf16ps(0, 5, 4); \
			_tile_loadd(6, Kt + 16*D + (k)*32, D*2); _tile_dpbf16ps(1, 6, 4); \
			_tile_loadd(7, Kt + 32*D + (k)*32, D*2); _tile_dpbf16ps(2, 7, 4); \
			_tile_loadd(5, Kt + 48*D + (k)*32, D*2); _tile_dpbf16ps(3, 5, 4);
			STEP(0) STEP(1) STEP(2) STEP(3)
#undef STEP
			_tile_stored(0, ST + 0*NQ + q, NQ*4); _tile_stored(1, ST + 16*NQ + q, NQ*4);
			_tile_stored(2, ST + 32*NQ + q, NQ*4); _tile_stored(3, ST + 48*NQ + q, NQ*4);
		}
}

/* --- the score phase prototype: pass 1 (Q·K, running max, exps into E, lane sums), pass 2 (sacce) --- */
static inline __m512 vexp(__m512 x) {   /* 2^(x log2e): scalef of a degree-6 polynomial (prototype; same for both layouts) */
	__m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504f));
	t = _mm512_max_ps(t, _mm512_set1_ps(-126.f));
	__m512 nn = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), f = _mm512_sub_ps(t, nn);
	__m512 p = _mm512_set1_ps(1.535336188e-4f);
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339887440e-3f));
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437357e-3f));
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332471e-2f));
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264791e-1f));
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472028e-1f));
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
	return _mm512_scalef_ps(p, nn);
}
static float *E, *MT, *acc; static int NT, twopass; static long lazyredo;
#ifndef LAZY
#define LAZY 0
#endif
static inline void est(float *p, __m512 v) { if (NT) _mm512_stream_ps(p, v); else _mm512_store_ps(p, v); }
static double phase_q(int n, float a) {   /* query-major: per query row a horizontal max per tile, lane sums */
	float m[NQ]; __m512 L[NQ]; float mp[NQ];
	for (int q = 0; q < NQ; q++) m[q] = -INFINITY, L[q] = _mm512_setzero_ps();
	double t1 = cpu();
	for (int t0 = 0, k = 0; t0 < n; t0 += AT, k++) {
		qk_qmajor_tile(t0);
		float *Ek = E + (size_t)k * NQ * AT;
		for (int q = 0; q < NQ; q++) {
			__m512 v0 = _mm512_mul_ps(_mm512_load_ps(S + q*AT), _mm512_set1_ps(a)), v1 = _mm512_mul_ps(_mm512_load_ps(S + q*AT + 16), _mm512_set1_ps(a));
			__m512 v2 = _mm512_mul_ps(_mm512_load_ps(S + q*AT + 32), _mm512_set1_ps(a)), v3 = _mm512_mul_ps(_mm512_load_ps(S + q*AT + 48), _mm512_set1_ps(a));
			float mt = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(v0, v1), _mm512_max_ps(v2, v3)));
			float mn = mt > m[q] ? mt : m[q];
			__m512 mv = _mm512_set1_ps(mn);
			if (mn > m[q]) L[q] = _mm512_mul_ps(L[q], vexp(_mm512_set1_ps(m[q] - mn)));
			m[q] = mn; MT[k*NQ + q] = mn;
			__m512 e0 = vexp(_mm512_sub_ps(v0, mv)), e1 = vexp(_mm512_sub_ps(v1, mv)), e2 = vexp(_mm512_sub_ps(v2, mv)), e3 = vexp(_mm512_sub_ps(v3, mv));
			est(Ek + q*AT, e0); est(Ek + q*AT + 16, e1); est(Ek + q*AT + 32, e2); est(Ek + q*AT + 48, e3);
			L[q] = _mm512_add_ps(L[q], _mm512_add_ps(_mm512_add_ps(e0, e1), _mm512_add_ps(e2, e3)));
		}
	}
	for (int q = 0; q < NQ; q++) mp[q] = m[q] + logf(_mm512_reduce_add_ps(L[q]));
	t1 = cpu() - t1;
	for (int t0 = 0, k = 0; t0 < n; t0 += AT, k++) {
		const float *Ek = E + (size_t)k * NQ * AT;
		__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
		for (int q = 0; q < NQ; q++) {
			__m512 w = _mm512_set1_ps(expf(MT[k*NQ + q] - mp[q]));
			a0 = _mm512_fmadd_ps(_mm512_load_ps(Ek + q*AT), w, a0); a1 = _mm512_fmadd_ps(_mm512_load_ps(Ek + q*AT + 16), w, a1);
			a2 = _mm512_fmadd_ps(_mm512_load_ps(Ek + q*AT + 32), w, a2); a3 = _mm512_fmadd_ps(_mm512_load_ps(Ek + q*AT + 48), w, a3);
		}
		_mm512_store_ps(acc + t0, a0); _mm512_store_ps(acc + t0 + 16, a1); _mm512_store_ps(acc + t0 + 32, a2); _mm512_store_ps(acc + t0 + 48, a3);
	}
	return t1;
}

/* token-major, E laid out [k][h][t][8 vectors] (h: the 128-query half): pass 1 streams ST's half rows */
static double phase_t(int n, float a) {
	__m512 m[NQ/16], L[NQ/16], mp[NQ/16];
	for (int j = 0; j < NQ/16; j++) m[j] = _mm512_set1_ps(-INFINITY), L[j] = _mm512_setzero_ps();
	__m512 av = _mm512_set1_ps(a);
	double t1 = cpu();
	packqv();
	for (int t0 = 0, k = 0; t0 < n; t0 += AT, k++) {
		qk_tmajor_tile(t0);
		float *Ek = E + (size_t)k * NQ * AT;
		for (int h = 0; h < 2; h++) {
			__m512 x[8], s[8], mn[8];
			for (int j = 0; j < 8; j++) s[j] = _mm512_setzero_ps();
			float *Eh = Ek + h * AT * 128;
			if (LAZY && t0 > 0) {   /* one read of S^T: exps against the running max; redone exactly if a lane's max grew by > 16 */
				for (int j = 0; j < 8; j++) mn[j] = m[h*8+j], x[j] = _mm512_set1_ps(-INFINITY);
				for (int t = 0; t < AT; t++) for (int j = 0; j < 8; j++) {
					__m512 v = _mm512_load_ps(ST + t*NQ + h*128 + j*16);
					x[j] = _mm512_max_ps(x[j], v);
					__m512 e = vexp(_mm512_fmsub_ps(v, av, mn[j]));
					est(Eh + t*128 + j*16, e); s[j] = _mm512_add_ps(s[j], e);
				}
				__mmask16 big = 0;
				for (int j = 0; j < 8; j++) big |= _mm512_cmp_ps_mask(_mm512_fmsub_ps(x[j], av, mn[j]), _mm512_set1_ps(16.f), _CMP_GT_OQ);
				if (!big) {
					for (int j = 0; j < 8; j++) _mm512_store_ps(MT + (k*(AT/CH))*NQ + h*128 + j*16, mn[j]), L[h*8+j] = _mm512_add_ps(L[h*8+j], s[j]);
					if (AT/CH > 1) for (int c = 1; c < AT/CH; c++) for (int j = 0; j < 8; j++) _mm512_store_ps(MT + (k*(AT/CH) + c)*NQ + h*128 + j*16, mn[j]);
					continue;
				}
				for (int j = 0; j < 8; j++) s[j] = _mm512_setzero_ps();
				lazyredo++;
			}
			for (int c0 = 0; c0 < AT; c0 += CH) {   /* chunks of CH tokens: their rows stay in L1 between the max and the exps */
				for (int j = 0; j < 8; j++) x[j] = _mm512_load_ps(ST + c0*NQ + h*128 + j*16);
				for (int t = c0 + 1; t < c0 + CH; t++) for (int j = 0; j < 8; j++) x[j] = _mm512_max_ps(x[j], _mm512_load_ps(ST + t*NQ + h*128 + j*16));
				for (int j = 0; j < 8; j++) {
					mn[j] = _mm512_max_ps(m[h*8+j], _mm512_mul_ps(x[j], av));
					__m512 r = vexp(_mm512_sub_ps(m[h*8+j], mn[j]));
					L[h*8+j] = _mm512_mul_ps(L[h*8+j], r); s[j] = _mm512_mul_ps(s[j], r);
					m[h*8+j] = mn[j]; _mm512_store_ps(MT + (k*(AT/CH) + c0/CH)*NQ + h*128 + j*16, mn[j]);
				}
				for (int t = c0; t < c0 + CH; t++) for (int j = 0; j < 8; j++) {
					__m512 e = vexp(_mm512_fmsub_ps(_mm512_load_ps(ST + t*NQ + h*128 + j*16), av, mn[j]));
					est(Eh + t*128 + j*16, e); s[j] = _mm512_add_ps(s[j], e);
				}
			}
			for (int j = 0; j < 8; j++) L[h*8+j] = _mm512_add_ps(L[h*8+j], s[j]);
		}
	}
	for (int j = 0; j < NQ/16; j++) { float l[16], mm[16]; _mm512_storeu_ps(l, L[j]); _mm512_storeu_ps(mm, m[j]); for (int i = 0; i < 16; i++) l[i] = mm[i] + logf(l[i]); mp[j] = _mm512_loadu_ps(l); }
	t1 = cpu() - t1;
	if (twopass) {   /* pass 2: Q·K again, exps with the final mp, no E */
		for (int t0 = 0; t0 < n; t0 += AT) {
			qk_tmajor_tile(t0);
			for (int t = 0; t < AT; t++) {
				__m512 s0 = _mm512_setzero_ps(), s1 = s0;
				for (int j = 0; j < NQ/16; j += 2) {
					s0 = _mm512_add_ps(s0, vexp(_mm512_fmsub_ps(_mm512_load_ps(ST + t*NQ + j*16), av, mp[j])));
					s1 = _mm512_add_ps(s1, vexp(_mm512_fmsub_ps(_mm512_load_ps(ST + t*NQ + (j+1)*16), av, mp[j+1])));
				}
				acc[t0 + t] = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
			}
		}
		return t1;
	}
	for (int t0 = 0, k = 0; t0 < n; t0 += AT, k++) {
		const float *Ek = E + (size_t)k * NQ * AT;
		__m512 w[NQ/16];
		for (int t = 0; t < AT; t++) {   /* one token: 16 FMAs over its 256 queries (two halves), then a horizontal sum */
			if (t % CH == 0) for (int j = 0; j < NQ/16; j++) w[j] = vexp(_mm512_sub_ps(_mm512_load_ps(MT + (k*(AT/CH) + t/CH)*NQ + j*16), mp[j]));
			const float *e0 = Ek + t*128, *e1 = Ek + AT*128 + t*128;
			__m512 s0 = _mm512_mul_ps(_mm512_load_ps(e0), w[0]), s1 = _mm512_mul_ps(_mm512_load_ps(e1), w[8]);
			for (int j = 1; j < 8; j++) { s0 = _mm512_fmadd_ps(_mm512_load_ps(e0 + j*16), w[j], s0); s1 = _mm512_fmadd_ps(_mm512_load_ps(e1 + j*16), w[8+j], s1); }
			acc[t0 + t] = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
		}
	}
	return t1;
}
int main(int argc, char **argv) {
	int n = argc > 1 ? atoi(argv[1]) : 32768, R = argc > 2 ? atoi(argv[2]) : 7;
	if (syscall(SYS_arch_prctl, 0x1023, 18)) { puts("no AMX permission"); return 1; }
	int lo[16], hi[16];
	for (int i = 0; i < 8; i++) lo[2*i] = i, lo[2*i+1] = 16+i, hi[2*i] = 8+i, hi[2*i+1] = 24+i;
	mlo = _mm512_loadu_si512(lo); mhi = _mm512_loadu_si512(hi);
	K = aligned_alloc(64, (size_t)n*D*2); Q = aligned_alloc(64, NQ*D*2); Qv = aligned_alloc(64, NQ*D*2);
	S = aligned_alloc(64, NQ*AT*4); ST = aligned_alloc(64, NQ*AT*4);
	E = aligned_alloc(64, (size_t)n*NQ*4); MT = aligned_alloc(64, (size_t)(n/AT)*4*NQ*4); acc = aligned_alloc(64, (size_t)n*4);
	float *ref = malloc((size_t)n*4);
	NT = (size_t)n*NQ*4 > (4u << 20);
	srand(1);
	for (size_t i = 0; i < (size_t)n*D; i++) { float f = 4*(rand() / (float)RAND_MAX - .5f); uint32_t u; memcpy(&u, &f, 4); K[i] = u >> 16; }
	for (int i = 0; i < NQ*D; i++) { float f = 4*(rand() / (float)RAND_MAX - .5f); uint32_t u; memcpy(&u, &f, 4); Q[i] = u >> 16; }
	tcfg();
	float a = 1 / sqrtf(D);
	phase_q(n, a); memcpy(ref, acc, (size_t)n*4); phase_t(n, a);
	double md = 0, sm = 0; for (int i = 0; i < n; i++) md = fmax(md, fabs(ref[i] - acc[i])), sm += ref[i];
	printf("n=%d NT=%d phase: max|q - t| %g (sum of scores %g, want %d)\n", n, NT, md, sm, NQ);
	twopass = 1; phase_t(n, a); md = 0; for (int i = 0; i < n; i++) md = fmax(md, fabs(ref[i] - acc[i])); twopass = 0;
	printf("  two-pass token-major: max|q - t| %g\n", md);
	double b[8]; for (int i = 0; i < 8; i++) b[i] = 1e9;
	for (int r = 0; r < R; r++) {
		double t, p1;
		t = cpu(); for (int t0 = 0; t0 < n; t0 += AT) qk_qmajor_tile(t0); t = cpu() - t; if (t < b[0]) b[0] = t;
		t = cpu(); packqv(); for (int t0 = 0; t0 < n; t0 += AT) qk_tmajor_tile(t0); t = cpu() - t; if (t < b[1]) b[1] = t;
		t = cpu(); p1 = phase_q(n, a); t = cpu() - t; if (t < b[2]) b[2] = t; if (p1 < b[4]) b[4] = p1;
		t = cpu(); p1 = phase_t(n, a); t = cpu() - t; if (t < b[3]) b[3] = t; if (p1 < b[5]) b[5] = p1;
		twopass = 1; t = cpu(); p1 = phase_t(n, a); t = cpu() - t; twopass = 0; if (t < b[6]) b[6] = t;
	}
	double fl = 2.0 * n * NQ * D;
	printf("  qkt query-major (K VNNI transposes)   %7.3f ms %7.1f GFLOP/s\n", b[0]*1e3, fl/b[0]*1e-9);
	printf("  qkt token-major (Q packed once)       %7.3f ms %7.1f GFLOP/s\n", b[1]*1e3, fl/b[1]*1e-9);
	printf("  phase query-major                     %7.3f ms (pass 1 %.3f)\n", b[2]*1e3, b[4]*1e3);
	printf("  phase token-major                     %7.3f ms (pass 1 %.3f)\n", b[3]*1e3, b[5]*1e3);
	printf("  lazy redo %ld\n", lazyredo);
	printf("  phase token-major two-pass (no E)     %7.3f ms\n", b[6]*1e3);
	_tile_release();
	return 0;
}
