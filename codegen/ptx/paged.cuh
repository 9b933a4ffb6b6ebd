//! paged.cuh: batched and paged caches on the GPU (issue 14; DESIGN §7 "Layouts"), pasted
//! after the KvgArgs declaration and the storage type. kv_tab / kv_roff find the row of
//! logical token t of an instance (contiguous: t * a.sT; paged: through its page table);
//! kv_pgcheck, kv_pgfree and kv_pgappend are the bodies of the policy's kv_paged kernel
//! (kernels.c; one block per sequence, or per (sequence, head) for the append), launched
//! with a.pgop = KVG_PG_CHECK before the score kernels, KVG_PG_FREE after kv_select, and
//! KVG_PG_CHECK then KVG_PG_APPEND for an append (runtime/cuda.c kr_cuda_paged).
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
/* kv_roff for a row index t in [0, 2^32) (every row index is: t < N, an int; the page size a.P
   > 0, an int): the page and the row within it by one 32-bit division, the same numbers. A
   64-bit division is a long instruction sequence for ptxas (and NVVM adds a 32-bit bypass to
   each): kv_select's code, ~15-45 of them, uses this one (kernels.c gen_select; issue 13,
   compile time) — the score and decode kernels keep kv_roff, whose registers it would change */
__device__ __forceinline__ long long kv_rofs(const KvgArgs &a, const int *tb, long long t) {
	if (!tb)
		return t * a.sT;
	const unsigned u = (unsigned)t, p = (unsigned)a.P, q = u / p;
	return (long long)tb[q] * a.sP + (long long)(u - q * p) * a.sT;
}
/* the base of instance (b, l, h) in K or V: per-layer pools (Kl) or one pool / cache */
__device__ __forceinline__ kv_st *kv_ibase(const KvgArgs &a, void *K, void *const *Kl, int b, int l, int h) {
	return Kl ? (kv_st *)Kl[l] + h * a.sH : (kv_st *)K + l * a.sL + b * a.sB + h * a.sH;
}
/* the table loops below are bookkeeping, not attention work (one thread walks a table): kept
   rolled (KV_ROLLED; kv_tabmax's unrolled twice: rolled, ptxas spilled 4 B on sm_80), kv_paged
   compiles in two thirds of the NVVM + ptxas time, registers 40 / 40 -> 40 / 32 (sm_80 / sm_90,
   issue 13) */
/* the longest length over the instances table ti maps (lengths from len), plus one for the
   instances of layer xl (an append) */
__device__ __forceinline__ long long kv_tabmax(const KvgArgs &a, const int *len, int ti, int xl) {
	const int LH = a.L * a.H, k0 = a.phead ? ti : ti * LH, k1 = a.phead ? ti + 1 : k0 + LH;
	long long m = 0;
	KV_UNROLL2
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
	KV_ROLLED
	for (int k = threadIdx.x; k < LH; k += KV_NT) {
		const int n = a.len[b * LH + k];
		if (a.plen) a.plen[b * LH + k] = n;
		if (n < 0 || n + (k / a.H == a.alayer) > a.N) kv_seterr(a.err, KVG_ETABLE);
	}
	if (!a.pt) return;                          /* contiguous: lengths only */
	KV_ROLLED
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
		KV_ROLLED
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
	KV_ROLLED
	for (int ti = t0 + threadIdx.x; ti < t0 + nt; ti += KV_NT) {
		const long long np = kv_tabn(a, ti);
		if (np < 0 || np > a.pmax || (a.ptr && a.ptr[ti] < 0)) continue;
		const int *const tb = kv_tabp(a, ti);
		long long u = kv_tabu(a, ti, kv_tabmax(a, a.plen, ti, a.alayer));   /* as kv_pgcheck marked */
		u = u < np ? u : np;
		KV_ROLLED
		for (long long j = 0; j < u; j++) {
			const int id = tb[j];
			if (id >= 0 && id < a.npool) a.pmap[id] = 0;
		}
	}
	__syncthreads();
	if (threadIdx.x != 0 || a.alayer >= 0 || a.dlay) return;   /* an append or a decode frees nothing */
	int nf = 0;
	KV_ROLLED
	for (int ti = t0; !bad && ti < t0 + nt; ti++) {
		const long long maxn = kv_tabmax(a, a.len, ti, -1), need = (maxn + a.P - 1) / a.P;
		const long long u = kv_tabu(a, ti, kv_tabmax(a, a.plen, ti, -1));
		const int *const tb = kv_tabp(a, ti);
		KV_ROLLED
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
