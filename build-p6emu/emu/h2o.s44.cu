/* kvcc generated CUDA C — do not edit. Compiles with NVRTC (no headers) and,
** for tests, with a host C++ compiler against tests/emu/cuda_emu.h. */
#ifndef KV_NT
#define KV_NT 256
#endif
#ifndef KV_TT
#define KV_TT 16
#endif
#ifndef KV_SQ
#define KV_SQ 64
#endif
#ifndef KV_SK
#define KV_SK 64
#endif
#define KV_NW (KV_NT / 32)
#ifndef KV_DYNSMEM
#define KV_DYNSMEM(nm) extern __shared__ __align__(16) unsigned char nm[]
#endif
#define KVG_EPOOL 1
#define KVG_ESELECT 2
#define KVG_EHMEAN 3
#define KVG_ECHUNK 4
#define KVG_EMASS 5
#define KVG_EFLOOR 7
__device__ __forceinline__ float kv_nan() { return __int_as_float(0x7fffffff); }
__device__ __forceinline__ float kv_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float kv_max(float a, float b) { return (a != a || b != b) ? kv_nan() : a > b ? a : b; }
__device__ __forceinline__ float kv_min(float a, float b) { return (a != a || b != b) ? kv_nan() : a < b ? a : b; }
__device__ __forceinline__ float kv_rmax(float acc, float v) { return (v != v || v > acc) ? v : acc; }
__device__ __forceinline__ float kv_rmin(float acc, float v) { return (v != v || v < acc) ? v : acc; }
__device__ __forceinline__ float kv_wsum(float v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}
__device__ __forceinline__ float kv_wmax(float v) {
	for (int o = 16; o > 0; o >>= 1) v = kv_max(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}
__device__ __forceinline__ float kv_wmin(float v) {
	for (int o = 16; o > 0; o >>= 1) v = kv_min(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}
/* online softmax: add one logit to (m, s); combine two partial states */
__device__ __forceinline__ void kv_smx_add(float &m, float &s, float v) {
	if (v > m) { s = s * expf(m - v) + 1.f; m = v; } else s += expf(v - m);
}
__device__ __forceinline__ void kv_smx_comb(float &m, float &s, float m2, float s2) {
	const float M = m > m2 ? m : m2;
	const float a = s > 0.f ? s * expf(m - M) : s, b = s2 > 0.f ? s2 * expf(m2 - M) : s2;
	m = M; s = a + b;
}
__device__ __forceinline__ void kv_wsmx(float &m, float &s) {
	for (int o = 16; o > 0; o >>= 1) {
		const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
		kv_smx_comb(m, s, m2, s2);
	}
}
__device__ __forceinline__ void kv_seterr(int *err, int code) { if (err) atomicCAS(err, 0, code); }
/* ki_rand (compiler/interp.c): counter-based, identical on every backend */
__device__ __forceinline__ float kv_rand(double seed, int l, int h, int pos) {
	const unsigned long long c = ((unsigned long long)l << 40) ^ ((unsigned long long)h << 24) ^ (unsigned long long)(long long)pos;
	const unsigned long long s = fabs(seed) < 9223372036854775808.0 ? (unsigned long long)(long long)seed : 0ull;
	unsigned long long z = s + c * 0x9E3779B97F4A7C15ull;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	z = z ^ (z >> 31);
	return (float)(z >> 40) * (1.f / 16777216.f);
}
/* policy h2o: dtype bf16, head_dim 128, group 1 */
#define KV_G 1
#define KV_D 128
typedef unsigned short kv_st;
__device__ __forceinline__ float kv_f(kv_st x) { return __uint_as_float((unsigned)x << 16); }
__device__ __forceinline__ kv_st kv_tost(float x) {
	const unsigned u = __float_as_uint(x);
	if ((u & 0x7fffffffu) > 0x7f800000u) return (kv_st)((u | 0x00400000u) >> 16);
	return (kv_st)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
#define KVG_MAXPAR 16
typedef struct KvgArgs {
	void * K;
	void * V;
	int * len;
	int * pos;
	float * state;
	const void * Q;
	const float * lse;
	const int * qpos;
	float * scores;
	float * ws;
	const void * q;
	float * out;
	int * err;
	const float * wts;
	long long sL;
	long long sH;
	long long sT;
	long long ws_inst;
	long long budget;
	double ratio;
	int L;
	int H;
	int N;
	int O;
	int step;
	int splits;
	double par[KVG_MAXPAR];
	void *const * Kl;
	void *const * Vl;
	const int * pt;
	const int * ptr;
	int * lpl;
	int * plen;
	int * pmap;
	int * freed;
	int * nfreed;
	const void * ak;
	const void * av;
	const int * apos;
	long long sP;
	long long sB;
	int B;
	int P;
	int pmax;
	int npool;
	int phead;
	int fmax;
	int pgop;
	int alayer;
	int dlay;
	int * steps;
} KvgArgs;
#define KV_NST 1
#define KVG_ETABLE 6
#define KVG_PG_CHECK 1
#define KVG_PG_FREE 2
#define KVG_PG_APPEND 3
#define KVG_PG_STEP 4
/* table index of instance li (within its sequence) of sequence b */
__device__ __forceinline__ int kv_tabi(const KvgArgs &a, int b, int li) { return a.phead ? b * a.L * a.H + li : b; }
/* the first page id of table ti (NULL: contiguous) and how many ids it has */
__device__ __forceinline__ const int *kv_tabp(const KvgArgs &a, int ti) {
	return a.pt ? a.pt + (a.ptr ? (long long)a.ptr[ti] : (long long)ti * a.pmax) : 0;
}
__device__ __forceinline__ long long kv_tabn(const KvgArgs &a, int ti) {
	return a.ptr ? (long long)a.ptr[ti + 1] - a.ptr[ti] : a.pmax;
}
__device__ __forceinline__ const int *kv_tab(const KvgArgs &a, int b, int li) { return kv_tabp(a, kv_tabi(a, b, li)); }
/* elements from an instance's base to its logical row t */
__device__ __forceinline__ long long kv_roff(const KvgArgs &a, const int *tb, long long t) {
	return tb ? (long long)tb[t / a.P] * a.sP + (t % a.P) * a.sT : t * a.sT;
}
/* the base of instance (b, l, h) in K or V: per-layer pools (Kl) or one pool / cache */
__device__ __forceinline__ kv_st *kv_ibase(const KvgArgs &a, void *K, void *const *Kl, int b, int l, int h) {
	return Kl ? (kv_st *)Kl[l] + h * a.sH : (kv_st *)K + l * a.sL + b * a.sB + h * a.sH;
}
/* the longest length over the instances table ti maps (lengths from len), plus one for the
   instances of layer xl (an append) */
__device__ __forceinline__ long long kv_tabmax(const KvgArgs &a, const int *len, int ti, int xl) {
	const int LH = a.L * a.H, k0 = a.phead ? ti : ti * LH, k1 = a.phead ? ti + 1 : k0 + LH;
	long long m = 0;
	for (int k = k0; k < k1; k++) {
		const long long v = len[k] + ((k % LH) / a.H == xl);
		m = v > m ? v : m;
	}
	return m;
}
/* ids of table ti in use: dense tables up to the longest length, CSR tables all of theirs */
__device__ __forceinline__ long long kv_tabu(const KvgArgs &a, int ti, long long maxn) {
	return a.ptr ? kv_tabn(a, ti) : (maxn + a.P - 1) / a.P;
}
/* sequence b (block): the lengths (0..N, +1 at layer a.alayer when appending) fit the tables,
   every page id in use is in the pool and used once in the call (a.pmap, all zero before;
   kv_pgfree clears it). Saves the lengths in a.plen. Any failure: KVG_ETABLE, and the other
   kernels of the call return without touching anything. */
__device__ void kv_pgcheck(const KvgArgs &a, int b) {
	const int LH = a.L * a.H, nt = a.phead ? LH : 1, t0 = a.phead ? b * LH : b;
	for (int k = threadIdx.x; k < LH; k += KV_NT) {
		const int n = a.len[b * LH + k];
		if (a.plen) a.plen[b * LH + k] = n;
		if (n < 0 || n + (k / a.H == a.alayer) > a.N) kv_seterr(a.err, KVG_ETABLE);
	}
	if (!a.pt) return;                          /* contiguous: lengths only */
	for (int ti = t0 + threadIdx.x; ti < t0 + nt; ti += KV_NT) {
		const long long np = kv_tabn(a, ti), maxn = kv_tabmax(a, a.len, ti, a.alayer);
		long long cap = np * a.P;
		if (a.ptr && (a.ptr[ti] < 0 || np < 0 || np > a.pmax)) { kv_seterr(a.err, KVG_ETABLE); continue; }
		if (a.ptr && a.lpl && np > 0) {
			if (a.lpl[ti] < 1 || a.lpl[ti] > a.P) { kv_seterr(a.err, KVG_ETABLE); continue; }
			cap = (np - 1) * a.P + a.lpl[ti];
		}
		if (maxn > cap) { kv_seterr(a.err, KVG_ETABLE); continue; }
		const int *const tb = kv_tabp(a, ti);
		const long long u = kv_tabu(a, ti, maxn);
		for (long long j = 0; j < u; j++) {
			const int id = tb[j];
			if (id < 0 || id >= a.npool || atomicCAS(&a.pmap[id], 0, 1) != 0) { kv_seterr(a.err, KVG_ETABLE); break; }
		}
	}
}
/* sequence b (block), after kv_select or an append: clears a.pmap for its pages in use (as
   kv_pgcheck marked them); after kv_select, then writes the pages past the new longest length of each table (shared: over all its
   layers and heads) to a.freed[b * a.fmax ...] in logical order, table by table, their count to
   a.nfreed[b], and the CSR last_page_len; after a failed check only the map is cleared */
__device__ void kv_pgfree(const KvgArgs &a, int b) {
	const int LH = a.L * a.H, nt = a.phead ? LH : 1, t0 = a.phead ? b * LH : b;
	const int bad = *(volatile int *)a.err == KVG_ETABLE;
	if (!a.pt) return;
	for (int ti = t0 + threadIdx.x; ti < t0 + nt; ti += KV_NT) {
		const long long np = kv_tabn(a, ti);
		if (np < 0 || np > a.pmax || (a.ptr && a.ptr[ti] < 0)) continue;
		const int *const tb = kv_tabp(a, ti);
		long long u = kv_tabu(a, ti, kv_tabmax(a, a.plen, ti, a.alayer));   /* as kv_pgcheck marked */
		u = u < np ? u : np;
		for (long long j = 0; j < u; j++) {
			const int id = tb[j];
			if (id >= 0 && id < a.npool) a.pmap[id] = 0;
		}
	}
	__syncthreads();
	if (threadIdx.x != 0 || a.alayer >= 0 || a.dlay) return;   /* an append or a decode frees nothing */
	int nf = 0;
	for (int ti = t0; !bad && ti < t0 + nt; ti++) {
		const long long maxn = kv_tabmax(a, a.len, ti, -1), need = (maxn + a.P - 1) / a.P;
		const long long u = kv_tabu(a, ti, kv_tabmax(a, a.plen, ti, -1));
		const int *const tb = kv_tabp(a, ti);
		for (long long j = need; j < u; j++, nf++)
			if (a.freed) a.freed[(long long)b * a.fmax + nf] = tb[j];
		if (a.ptr && a.lpl) a.lpl[ti] = need ? (int)(maxn - (need - 1) * a.P) : 0;
	}
	if (a.nfreed) a.nfreed[b] = nf;
}
/* block (sequence b, head h): row a.alen... of layer a.alayer gets a.ak / a.av [B][H][D]
   (storage dtype) at its length, the position a.apos[b], the state's initial values (ini, nst
   of them); the length grows by one. Nothing when the check failed. */
__device__ void kv_pgappend(const KvgArgs &a, int b, int h, const float *ini, int nst) {
	if (*(volatile int *)a.err == KVG_ETABLE) return;
	const int l = a.alayer, li = l * a.H + h, inst = b * a.L * a.H + li, n = a.len[inst];
	const int *const tb = kv_tab(a, b, li);
	const long long o = kv_roff(a, tb, n);
	kv_st *const K = kv_ibase(a, a.K, a.Kl, b, l, h) + o, *const V = kv_ibase(a, a.V, a.Vl, b, l, h) + o;
	const kv_st *const k = (const kv_st *)a.ak + ((long long)b * a.H + h) * KV_D;
	const kv_st *const v = (const kv_st *)a.av + ((long long)b * a.H + h) * KV_D;
	for (int c = threadIdx.x; c < KV_D; c += KV_NT) K[c] = k[c], V[c] = v[c];
	if (threadIdx.x == 0) {
		if (a.pos) a.pos[(long long)inst * a.N + n] = a.apos[b];
		for (int s = 0; s < nst; s++) a.state[(((long long)b * nst + s) * a.L * a.H + li) * a.N + n] = ini[s];
	}
	__syncthreads();
	if (threadIdx.x == 0) a.len[inst] = n + 1;
}
__device__ long long kv_nkeep(const KvgArgs &a, int l, long long n);
/* a.qpos [B][O], or by default the positions of the last O held tokens (DESIGN §3),
   extrapolated when O > n */
__device__ __forceinline__ int kv_qpos(const KvgArgs &a, const int *Pb, int n, int O, int o) {
	const int t = n - O + o;
	return a.qpos ? a.qpos[(long long)(blockIdx.x / (a.L * a.H)) * O + o] : t >= 0 ? Pb[t] : (n ? Pb[0] : 0) + t;
}
/* block-wide exclusive scan of a 0/1 flag (warp ballots); *tot = block total */
__device__ __forceinline__ int kv_bscan(int flag, int *wsum, int *tot) {
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	const unsigned b = __ballot_sync(0xffffffffu, flag);
	const int pre = __popc(b & ((1u << lane) - 1u));
	if (lane == 0) wsum[warp] = __popc(b);
	__syncthreads();
	int off = 0, t = 0;
	for (int w = 0; w < KV_NW; w++) { const int c = wsum[w]; if (w < warp) off += c; t += c; }
	__syncthreads();
	*tot = t;
	return off + pre;
}
/* block-wide sum of a double (every thread gets it): sh [KV_NT] and *res shared scratch */
__device__ __forceinline__ double kv_bsumd(double v, double *sh, double *res) {
	__syncthreads();
	sh[threadIdx.x] = v;
	__syncthreads();
	if (threadIdx.x == 0) { double s = 0.0; for (int i = 0; i < KV_NT; i++) s += sh[i]; *res = s; }
	__syncthreads();
	return *res;
}
/* order key of a chunk: protected (sinks t0 < S, the recent window t1 > n - R) by rank,
** sinks first by position, then the newest of the window (DESIGN §3); the others by
** mean score: numbers by value > NaN; -0 == +0 */
__device__ __forceinline__ unsigned kv_key(const float *sc, long long ci, long long ch, long long n,
                                           long long S, long long R) {
	const long long t0 = ci * ch, t1 = t0 + ch < n ? t0 + ch : n;
	if (t0 < S) return 0x80000000u | (0x7ffffffeu - (unsigned)t0);
	if (t1 - 1 >= n - R) return 0x7fffffffu - (unsigned)(n - t1);
	float s = 0.f; int nan = 0;
	for (long long t = t0; t < t1; t++) { const float v = sc[t]; nan |= v != v; s += v; }
	if (nan) return 0u;
	float m = ch == 1 ? s : s / (float)(t1 - t0);
	if (m == 0.f) m = 0.f;
	const unsigned u = __float_as_uint(m);
	return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ int kv_prot(long long ci, long long ch, long long n, long long S, long long R) {
	const long long t0 = ci * ch, t1 = t0 + ch < n ? t0 + ch : n;
	return t0 < S || t1 - 1 >= n - R;
}
/* Top-k of one group of chunks (grp 1: protected, 0: the others) under a budget of
** `want` tokens, as the interpreter's greedy pass over the sorted candidates: full
** chunks by radix select over the key bits (4 x 8-bit histograms; the kfull-th
** largest key T, ties → lower position up to chunk E); the shorter last chunk is
** taken when it fits at its rank. Block-uniform result. */
struct KvSel { long long kfull, used, E, nf; unsigned T; int takep, allf, nonef; };
__device__ void kv_topk(const float *sc, long long n, long long ch, long long S, long long R, int grp,
                        long long want, KvSel &o, unsigned *hist, unsigned *sv, long long *sE, int *wsum) {
	const int tid = threadIdx.x;
	const long long nfull = n / ch, rem = n - nfull * ch;
	const int pin = rem > 0 && kv_prot(nfull, ch, n, S, R) == grp;
	const unsigned kp = pin ? kv_key(sc, nfull, ch, n, S, R) : 0u;
	if (tid == 0) { sv[0] = 0; sv[1] = 0; }
	__syncthreads();
	unsigned c0_ = 0, c1_ = 0;
	for (long long ci = tid; ci < nfull; ci += KV_NT)
		if (kv_prot(ci, ch, n, S, R) == grp) { c0_++; c1_ += pin && kv_key(sc, ci, ch, n, S, R) >= kp; }
	atomicAdd(&sv[0], c0_);
	atomicAdd(&sv[1], c1_);
	__syncthreads();
	const long long nf = sv[0], above = sv[1];
	__syncthreads();
	if (want < 0) want = 0;
	long long kfull = want / ch < nf ? want / ch : nf;
	int takep = 0;
	if (pin) {
		const long long mb = above < want / ch ? above : want / ch;
		takep = mb * ch + rem <= want;
		if (takep) kfull = (want - rem) / ch < nf ? (want - rem) / ch : nf;
	}
	o.nf = nf; o.kfull = kfull; o.takep = takep; o.used = kfull * ch + (takep ? rem : 0);
	o.allf = kfull >= nf; o.nonef = kfull <= 0; o.T = 0; o.E = -1;
	if (o.allf || o.nonef) return;
	if (tid == 0) { sv[0] = 0; sv[1] = 0; sv[2] = (unsigned)kfull; }
	for (int sh = 24; sh >= 0; sh -= 8) {
		for (int b = tid; b < 256; b += KV_NT) hist[b] = 0;
		__syncthreads();
		const unsigned pref = sv[0], mask = sv[1];
		for (long long ci = tid; ci < nfull; ci += KV_NT) {
			if (kv_prot(ci, ch, n, S, R) != grp) continue;
			const unsigned k_ = kv_key(sc, ci, ch, n, S, R);
			if ((k_ & mask) == pref) atomicAdd(&hist[(k_ >> sh) & 255u], 1u);
		}
		__syncthreads();
		if (tid == 0) {
			unsigned cum = 0;
			for (int b = 255; b >= 0; b--) {
				if (cum + hist[b] >= sv[2]) { sv[0] = pref | ((unsigned)b << sh); sv[1] = mask | (255u << sh); sv[2] -= cum; break; }
				cum += hist[b];
			}
		}
		__syncthreads();
	}
	const unsigned T = sv[0];
	const long long need = sv[2];
	if (tid == 0) *sE = -1;
	long long run = 0;
	for (long long c0 = 0; c0 < nfull; c0 += KV_NT) {
		const long long ci = c0 + tid;
		const int eq = ci < nfull && kv_prot(ci, ch, n, S, R) == grp && kv_key(sc, ci, ch, n, S, R) == T;
		int tot;
		const int ex = kv_bscan(eq, wsum, &tot);
		if (eq && run + ex + 1 == need) *sE = ci;
		run += tot;
		if (run >= need) break;
	}
	__syncthreads();
	o.T = T; o.E = *sE;
	__syncthreads();
}
__device__ __forceinline__ int kv_kept(const KvSel &o, const float *sc, long long ci, long long ch, long long n,
                                       long long S, long long R) {
	if (ci >= n / ch) return o.takep;
	if (o.allf) return 1;
	if (o.nonef) return 0;
	const unsigned k_ = kv_key(sc, ci, ch, n, S, R);
	return k_ > o.T || (k_ == o.T && ci <= o.E);
}
#define KV_MMA_T "bf16"
#define KV_MMA_BF16 1
/* Q·Kᵀ on tensor cores: mma.m16n8k16, storage-precision operands, f32 accumulation */
enum { KV_DP = KV_D + 8 };   /* row pad: 4 banks per row, conflict-free fragment loads */
typedef kv_st kv_qk;
__device__ __forceinline__ kv_qk kv_qkcvt(kv_st x) { return x; }
#ifdef KV_EMU
__device__ __forceinline__ unsigned kv_u32(const kv_st *p) { return (unsigned)p[0] | (unsigned)p[1] << 16; }
__device__ __forceinline__ void kv_mma(float d[4], const unsigned a[4], const unsigned b[2]) { kv_emu_mma(KV_MMA_BF16, d, a, b); }
#define KV_UNROLL2
#else
/* two k-steps per iteration: a full unroll makes ptxas spill (NVRTC 13.0, sm_90) */
#define KV_UNROLL2 _Pragma("unroll 2")
__device__ __forceinline__ unsigned kv_u32(const kv_st *p) { return *(const unsigned *)p; }
/* d = a·b + d for one 16x8 block, the whole warp */
__device__ __forceinline__ void kv_mma(float d[4], const unsigned a[4], const unsigned b[2]) {
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." KV_MMA_T "." KV_MMA_T ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
	             : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
	             : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif
/* fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"):
** g = lane >> 2, t = lane & 3, two elements per register, lower column/k first.
**   A 16x16 (rows: queries): a0 (g, 2t), a1 (g+8, 2t), a2 (g, 2t+8), a3 (g+8, 2t+8)
**   B 16x8 (k x token; a K row is a column, k contiguous): b0 (2t, g), b1 (2t+8, g)
**   C/D 16x8 f32: c0, c1 (g, 2t and 2t+1), c2, c3 (g+8, 2t and 2t+1) */
__device__ __forceinline__ void kv_frag_a(const kv_qk *s, unsigned a[4]) {
	const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
	a[0] = kv_u32(s + g * KV_DP + 2 * t);
	a[1] = kv_u32(s + (g + 8) * KV_DP + 2 * t);
	a[2] = kv_u32(s + g * KV_DP + 2 * t + 8);
	a[3] = kv_u32(s + (g + 8) * KV_DP + 2 * t + 8);
}
__device__ __forceinline__ void kv_frag_b(const kv_qk *s, unsigned b[2]) {
	const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
	b[0] = kv_u32(s + g * KV_DP + 2 * t);
	b[1] = kv_u32(s + g * KV_DP + 2 * t + 8);
}
__device__ __forceinline__ void kv_frag_c(float *S, int ld, const float c[4]) {
	const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
	S[g * ld + 2 * t] = c[0];
	S[g * ld + 2 * t + 1] = c[1];
	S[(g + 8) * ld + 2 * t] = c[2];
	S[(g + 8) * ld + 2 * t + 1] = c[3];
}
/* S[r][j] = Q[r]·K[j], r < rows, j < cols: a warp per 16x8 block of S, KV_D / 16 mma each */
__device__ __forceinline__ void kv_logits(float *S, const kv_qk *sq, const kv_qk *sk, int rows, int cols) {
	const int nb = (cols + 7) >> 3, nblk = ((rows + 15) >> 4) * nb;
	for (int b = threadIdx.x >> 5; b < nblk; b += KV_NW) {
		const int m0 = b / nb * 16, n0 = (b - b / nb * nb) * 8;
		float c[4] = { 0.f, 0.f, 0.f, 0.f };
		KV_UNROLL2
		for (int k0 = 0; k0 < KV_D; k0 += 16) {
			unsigned A[4], B[2];
			kv_frag_a(sq + m0 * KV_DP + k0, A);
			kv_frag_b(sk + n0 * KV_DP + k0, B);
			kv_mma(c, A, B);
		}
		kv_frag_c(S + m0 * KV_SK + n0, KV_SK, c);
	}
}
#undef KV_MMA_T
#undef KV_MMA_BF16
/* rows [0, cnt) of src (row stride ld) into dst[rows][KV_DP]; rows past cnt are zero */
__device__ __forceinline__ void kv_stage(kv_qk *dst, int rows, const kv_st *src, long long ld, int cnt) {
	for (int r = threadIdx.x >> 5; r < rows; r += KV_NW) {   /* a warp per row */
		const kv_st *const s = src + r * ld;
		kv_qk *const d = dst + r * KV_DP;
		for (int c = threadIdx.x & 31; c < KV_D; c += 32) d[c] = r < cnt ? kv_qkcvt(s[c]) : (kv_qk)0;
	}
}
/* rows t0 .. t0+cnt-1 of an instance (base Kb, page table Tb or NULL) into dst[rows][KV_DP] */
__device__ __forceinline__ void kv_stagek(kv_qk *dst, int rows, const KvgArgs &a, const kv_st *Kb, const int *Tb,
                                          long long t0, int cnt) {
	for (int r = threadIdx.x >> 5; r < rows; r += KV_NW) {   /* a warp per row */
		const kv_st *const s = r < cnt ? Kb + kv_roff(a, Tb, t0 + r) : Kb;
		kv_qk *const d = dst + r * KV_DP;
		for (int c = threadIdx.x & 31; c < KV_D; c += 32) d[c] = r < cnt ? kv_qkcvt(s[c]) : (kv_qk)0;
	}
}

enum { kv_lpt = 32, kv_tpw = 32 / kv_lpt, kv_cpl = (KV_D + kv_lpt - 1) / kv_lpt, kv_gb = 1,
       kv_rec = KV_G * (KV_D + 2), kv_part = KV_NW * kv_rec };
/* the row of instance inst in q / out: [B][L][H] (every layer) or [B][H] (a.dlay: one layer) */
__device__ __forceinline__ long long kv_qi(const KvgArgs &a, int inst) {
	return a.dlay ? (long long)(inst / (a.L * a.H)) * a.H + inst % a.H : (long long)inst;
}
/* grid (instance, split): block (inst, split) takes an even share of the n tokens (maybe
   none), each warp a contiguous part of it; per warp an online softmax (m, s) and the sum
   of p·V per query head, into the warp's record of the partials at the end of W; the
   logits go to Pr [G][N] */
__device__ __forceinline__ void kv_decode_part(const KvgArgs &a, int inst, int n, int N, const kv_st *Kb,
                                               const kv_st *Vb, const int *Tb, float *W, float *Pr) {
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	const kv_st *const qb = (const kv_st *)a.q + kv_qi(a, inst) * KV_G * KV_D;
	const int nsp = gridDim.y, per = (n + nsp - 1) / nsp;
	const int s0 = (int)blockIdx.y * per < n ? (int)blockIdx.y * per : n, s1 = n - s0 < per ? n : s0 + per;
	const int wper = (s1 - s0 + KV_NW - 1) / KV_NW;
	const int w0 = warp * wper < s1 - s0 ? s0 + warp * wper : s1, w1 = s1 - w0 < wper ? s1 : w0 + wper;
	const int sub = lane % kv_lpt, tg = lane / kv_lpt;
	float *const part = W + a.ws_inst - (long long)nsp * kv_part + ((long long)blockIdx.y * KV_NW + warp) * kv_rec;
	for (int g0 = 0; g0 < KV_G; g0 += kv_gb) {
		float qr[kv_gb][kv_cpl], acc[kv_gb][kv_cpl], m[kv_gb], s[kv_gb];
		for (int i = 0; i < kv_gb; i++) {
			m[i] = -kv_inf(), s[i] = 0.f;
			for (int j = 0; j < kv_cpl; j++) {
				const int c = sub + j * kv_lpt;
				qr[i][j] = g0 + i < KV_G && c < KV_D ? kv_f(qb[(g0 + i) * KV_D + c]) : 0.f;
				acc[i][j] = 0.f;
			}
		}
		for (int tb = w0; tb < w1; tb += kv_tpw) {
			const int t = tb + tg, ok = t < w1;
			float kr[kv_cpl], vr[kv_cpl];
			const long long ro = ok ? kv_roff(a, Tb, t) : 0;
			for (int j = 0; j < kv_cpl; j++) {
				const int c = sub + j * kv_lpt, in = ok && c < KV_D;
				kr[j] = in ? kv_f(Kb[ro + c]) : 0.f;
				vr[j] = in ? kv_f(Vb[ro + c]) : 0.f;
			}
			for (int i = 0; i < kv_gb; i++) {
				float d = 0.f;
				for (int j = 0; j < kv_cpl; j++) d += qr[i][j] * kr[j];
				for (int o = kv_lpt / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
				if (!ok || g0 + i >= KV_G) continue;
				const float x = d / sqrtf((float)KV_D), M = x > m[i] ? x : m[i];
				const float sc = expf(m[i] - M), p = expf(x - M);
				if (sub == 0) Pr[(g0 + i) * N + t] = x;
				s[i] = s[i] * sc + p, m[i] = M;
				for (int j = 0; j < kv_cpl; j++) acc[i][j] = acc[i][j] * sc + p * vr[j];
			}
		}
		/* merge the warp's token groups (lanes holding the same channels) */
		for (int o = 16; o >= kv_lpt; o >>= 1)
			for (int i = 0; i < kv_gb; i++) {
				const float m2 = __shfl_xor_sync(0xffffffffu, m[i], o), s2 = __shfl_xor_sync(0xffffffffu, s[i], o);
				const float M = m[i] > m2 ? m[i] : m2;
				const float f1 = s[i] > 0.f ? expf(m[i] - M) : 0.f, f2 = s2 > 0.f ? expf(m2 - M) : 0.f;
				for (int j = 0; j < kv_cpl; j++)
					acc[i][j] = acc[i][j] * f1 + __shfl_xor_sync(0xffffffffu, acc[i][j], o) * f2;
				s[i] = s[i] * f1 + s2 * f2, m[i] = M;
			}
		if (tg == 0)
			for (int i = 0; i < kv_gb && g0 + i < KV_G; i++) {
				if (sub == 0) part[g0 + i] = m[i], part[KV_G + g0 + i] = s[i];
				for (int j = 0; j < kv_cpl; j++)
					if (sub + j * kv_lpt < KV_D) part[2 * KV_G + (g0 + i) * KV_D + sub + j * kv_lpt] = acc[i][j];
			}
	}
}
/* merges the a.splits * KV_NW partials of kv_decode_part: the attention output (a.out),
   and the logits in Pr become the probabilities x.attn; s_m, s_s: [KV_G] shared */
__device__ __forceinline__ void kv_decode_merge(const KvgArgs &a, int inst, int n, int N, float *W, float *Pr,
                                                float *s_m, float *s_s) {
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int np = a.splits * KV_NW;
	const float *const part = W + a.ws_inst - (long long)a.splits * kv_part;
	for (int ig = warp; ig < KV_G; ig += KV_NW) {
		float m_ = -kv_inf(), s_ = 0.f;
		for (int p = lane; p < np; p += 32) kv_smx_comb(m_, s_, part[p * kv_rec + ig], part[p * kv_rec + KV_G + ig]);
		kv_wsmx(m_, s_);
		if (lane == 0) { s_m[ig] = m_; s_s[ig] = s_; }
	}
	__syncthreads();
	if (a.out)
		for (int e_ = tid; e_ < KV_G * KV_D; e_ += KV_NT) {
			const int ig = e_ / KV_D, c = e_ - ig * KV_D;
			float acc_ = 0.f;
			for (int p = 0; p < np; p++) {
				const float *const r = part + (long long)p * kv_rec;
				if (r[KV_G + ig] > 0.f) acc_ += r[2 * KV_G + ig * KV_D + c] * expf(r[ig] - s_m[ig]);
			}
			a.out[(kv_qi(a, inst) * KV_G + ig) * KV_D + c] = s_s[ig] > 0.f ? acc_ / s_s[ig] : 0.f;
		}
	/* the logits become the probabilities x.attn */
	for (int e_ = tid; e_ < KV_G * n; e_ += KV_NT) {
		const int ig = e_ / n, it = e_ - ig * n;
		Pr[ig * N + it] = expf(Pr[ig * N + it] - s_m[ig]) / s_s[ig];
	}
	__syncthreads();
}

extern "C" __global__ void __launch_bounds__(KV_NT) kv_decode(const KvgArgs a)
{
	const int inst = a.dlay ? (int)((blockIdx.x / a.H * a.L + a.dlay - 1) * a.H + blockIdx.x % a.H) : (int)blockIdx.x;
	const int b = inst / (a.L * a.H), li = inst - b * a.L * a.H;
	const int l = li / a.H, h = li - l * a.H;
	if (a.pt && *(volatile int *)a.err == KVG_ETABLE) return;
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int n = a.len[inst], N = a.N, O = a.O;
	kv_st *const Kb = kv_ibase(a, a.K, a.Kl, b, l, h);
	kv_st *const Vb = kv_ibase(a, a.V, a.Vl, b, l, h);
	const int *const Tb = kv_tab(a, b, li);
	const kv_st *const Qb = a.Q ? (const kv_st *)a.Q + (long long)inst * KV_G * O * KV_D : 0;
	int *const Pb = a.pos + (long long)inst * N;
	float *const W = a.ws + (long long)inst * a.ws_inst;
	(void)l; (void)h; (void)tid; (void)lane; (void)warp; (void)n; (void)N; (void)O;
	(void)Kb; (void)Vb; (void)Qb; (void)Pb; (void)W; (void)Tb;
	float *const Pr = W + (2LL + 2LL*(long long)N + 0LL*(long long)O + 0LL*(long long)N*O);
	kv_decode_part(a, inst, n, N, Kb, Vb, Tb, W, Pr);
}

extern "C" __global__ void __launch_bounds__(KV_NT) kv_decode_comb(const KvgArgs a)
{
	const int inst = a.dlay ? (int)((blockIdx.x / a.H * a.L + a.dlay - 1) * a.H + blockIdx.x % a.H) : (int)blockIdx.x;
	const int b = inst / (a.L * a.H), li = inst - b * a.L * a.H;
	const int l = li / a.H, h = li - l * a.H;
	if (a.pt && *(volatile int *)a.err == KVG_ETABLE) return;
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int n = a.len[inst], N = a.N, O = a.O;
	kv_st *const Kb = kv_ibase(a, a.K, a.Kl, b, l, h);
	kv_st *const Vb = kv_ibase(a, a.V, a.Vl, b, l, h);
	const int *const Tb = kv_tab(a, b, li);
	const kv_st *const Qb = a.Q ? (const kv_st *)a.Q + (long long)inst * KV_G * O * KV_D : 0;
	int *const Pb = a.pos + (long long)inst * N;
	float *const W = a.ws + (long long)inst * a.ws_inst;
	(void)l; (void)h; (void)tid; (void)lane; (void)warp; (void)n; (void)N; (void)O;
	(void)Kb; (void)Vb; (void)Qb; (void)Pb; (void)W; (void)Tb;
	float *const Pr = W + (2LL + 2LL*(long long)N + 0LL*(long long)O + 0LL*(long long)N*O);
	__shared__ float s_m[KV_G], s_s[KV_G];
	float *const B2 = W + (0LL + 0LL*(long long)N + 0LL*(long long)O + 0LL*(long long)N*O); (void)B2;
	float *const B3 = W + (1LL + 1LL*(long long)N + 0LL*(long long)O + 0LL*(long long)N*O); (void)B3;
	kv_decode_merge(a, inst, n, N, W, Pr, s_m, s_s);
	/* observe hook */
	/* %2 = sum over group (thread per output) */
	for (int e_ = tid; e_ < 1*n; e_ += KV_NT) {
		int r_ = e_; (void)r_;
		const int it = r_ % n; r_ /= n;
		float acc_ = 0.f;
		for (int xg = 0; xg < KV_G; xg += 1) {
			const float x0 = Pr[(xg)*N+(it)]; /* %1 attn */
			acc_ += x0;
		}
		B2[(it)] = acc_;
	}
	__syncthreads();
	/* %3 = add, materialized */
	for (int e_ = tid; e_ < 1*n; e_ += KV_NT) {
		int r_ = e_; (void)r_;
		const int it = r_ % n; r_ /= n;
		const float x1 = a.state[(((long long)b*KV_NST+0)*a.L*a.H+li)*N+(it)]; /* %0 state */
		const float x2 = (x1) + (B2[(it)]); /* %3 add */
		B3[(it)] = x2;
	}
	__syncthreads();
	for (int it = tid; it < n; it += KV_NT) {
		a.state[(((long long)b * KV_NST + 0) * a.L * a.H + li) * N + it] = B3[(it)];
	}
}

extern "C" __global__ void __launch_bounds__(KV_NT) kv_score0(const KvgArgs a)
{
	const int inst = blockIdx.x;
	const int b = inst / (a.L * a.H), li = inst - b * a.L * a.H;
	const int l = li / a.H, h = li - l * a.H;
	if (a.pt && *(volatile int *)a.err == KVG_ETABLE) return;
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int n = a.len[inst], N = a.N, O = a.O;
	kv_st *const Kb = kv_ibase(a, a.K, a.Kl, b, l, h);
	kv_st *const Vb = kv_ibase(a, a.V, a.Vl, b, l, h);
	const int *const Tb = kv_tab(a, b, li);
	const kv_st *const Qb = a.Q ? (const kv_st *)a.Q + (long long)inst * KV_G * O * KV_D : 0;
	int *const Pb = a.pos + (long long)inst * N;
	float *const W = a.ws + (long long)inst * a.ws_inst;
	(void)l; (void)h; (void)tid; (void)lane; (void)warp; (void)n; (void)N; (void)O;
	(void)Kb; (void)Vb; (void)Qb; (void)Pb; (void)W; (void)Tb;
	/* scores (NaN past the held tokens) */
	for (int it = tid; it < N; it += KV_NT) {
		if (it >= n) { a.scores[(long long)inst * N + it] = kv_nan(); continue; }
		const float x3 = a.state[(((long long)b*KV_NST+0)*a.L*a.H+li)*N+(it)]; /* %0 state */
		a.scores[(long long)inst * N + it] = x3;
	}
}

/* ki_nkeep (compiler/interp.c) */
__device__ long long kv_nkeep(const KvgArgs &a, int l, long long n) {
	const long long budget = a.budget; const double ratio = a.ratio; (void)l;
	const double keep = budget >= 0 ? (double)(budget < n ? budget : n) : __dmul_rn((double)n, __dsub_rn(1.0, ratio));
	long long nk = budget >= 0 ? (budget < n ? budget : n) : (long long)floor(keep);
	if (nk < 0) nk = 0;
	if (nk > n) nk = n;
	return nk;
}

extern "C" __global__ void __launch_bounds__(KV_NT) kv_select(const KvgArgs a)
{
	const int inst = blockIdx.x;
	const int b = inst / (a.L * a.H), li = inst - b * a.L * a.H;
	const int l = li / a.H, h = li - l * a.H;
	if (a.pt && *(volatile int *)a.err == KVG_ETABLE) return;
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int n = a.len[inst], N = a.N, O = a.O;
	kv_st *const Kb = kv_ibase(a, a.K, a.Kl, b, l, h);
	kv_st *const Vb = kv_ibase(a, a.V, a.Vl, b, l, h);
	const int *const Tb = kv_tab(a, b, li);
	const kv_st *const Qb = a.Q ? (const kv_st *)a.Q + (long long)inst * KV_G * O * KV_D : 0;
	int *const Pb = a.pos + (long long)inst * N;
	float *const W = 0;
	(void)l; (void)h; (void)tid; (void)lane; (void)warp; (void)n; (void)N; (void)O;
	(void)Kb; (void)Vb; (void)Qb; (void)Pb; (void)W; (void)Tb;
	__shared__ unsigned hist[256], sv[4];
	__shared__ long long s_E;
	__shared__ int wsum[KV_NW];
	__shared__ int sdst[KV_NT];
	KV_DYNSMEM(kv_dsm);
	kv_st *const stK = (kv_st *)kv_dsm, *const stV = stK + KV_TT * KV_D;
	const float *const sc = a.scores + (long long)inst * N;
	const long long S = (long long)(0), R = (long long)(a.par[0]), ch = (long long)(1);
	if (S < 0 || R < 0 || ch < 1) { if (tid == 0) kv_seterr(a.err, KVG_ESELECT); return; }
	const long long want = kv_nkeep(a, l, n);
	/* protected chunks first (sinks, then the newest recent), then the others */
	KvSel s1, s0;
	kv_topk(sc, n, ch, S, R, 1, want, s1, hist, sv, &s_E, wsum);
	kv_topk(sc, n, ch, S, R, 0, want - s1.used, s0, hist, sv, &s_E, wsum);
	/* stable in-place compaction, one tile of KV_NT tokens at a time; rows are
	   staged in shared memory KV_TT at a time (destinations never pass sources) */
	long long run = 0;
	for (long long t0 = 0; t0 < n; t0 += KV_NT) {
		const long long t = t0 + tid;
		int keep = 0;
		if (t < n) {
			const long long ci = t / ch;
			keep = kv_kept(kv_prot(ci, ch, n, S, R) ? s1 : s0, sc, ci, ch, n, S, R);
		}
		int tot;
		const int ex = kv_bscan(keep, wsum, &tot);
		sdst[tid] = keep ? (int)(run + ex) : -1;
		const int pv = keep ? Pb[t] : 0;
		const float stv0 = keep ? a.state[(((long long)b * KV_NST + 0) * a.L * a.H + li) * N + t] : 0.f;
		__syncthreads();
		const int cnt = n - t0 < KV_NT ? (int)(n - t0) : KV_NT;
		if (!(run == t0 && tot == cnt))
			for (int r0 = 0; r0 < cnt; r0 += KV_TT) {
				const int rows = cnt - r0 < KV_TT ? cnt - r0 : KV_TT;
				for (int e_ = tid; e_ < rows * KV_D; e_ += KV_NT) {
					const int rr = e_ / KV_D, c = e_ - rr * KV_D;
					if (sdst[r0 + rr] >= 0) {
						const long long o_ = kv_roff(a, Tb, t0 + r0 + rr) + c;
						stK[e_] = Kb[o_];
						stV[e_] = Vb[o_];
					}
				}
				__syncthreads();
				for (int e_ = tid; e_ < rows * KV_D; e_ += KV_NT) {
					const int rr = e_ / KV_D, c = e_ - rr * KV_D, dd = sdst[r0 + rr];
					if (dd >= 0) {
						const long long o_ = kv_roff(a, Tb, dd) + c;
						Kb[o_] = stK[e_];
						Vb[o_] = stV[e_];
					}
				}
				__syncthreads();
			}
		if (keep) {
			Pb[run + ex] = pv;
			a.state[(((long long)b * KV_NST + 0) * a.L * a.H + li) * N + run + ex] = stv0;
		}
		run += tot;
		__syncthreads();
	}
	if (tid == 0) a.len[inst] = (int)run;
}

extern "C" __global__ void __launch_bounds__(KV_NT) kv_paged(const KvgArgs a)
{
	const float ini[2] = { 0.000000000e+00f, 0.f };
	if (a.pgop == KVG_PG_CHECK) kv_pgcheck(a, blockIdx.x);
	else if (a.pgop == KVG_PG_FREE) kv_pgfree(a, blockIdx.x);
	else if (a.pgop == KVG_PG_APPEND) kv_pgappend(a, blockIdx.x / a.H, blockIdx.x % a.H, ini, KV_NST);
	else if (a.pgop == KVG_PG_STEP && a.steps && a.dlay && threadIdx.x == 0) a.steps[blockIdx.x * a.L + a.dlay - 1]++;
}
