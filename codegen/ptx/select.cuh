//! select.cuh: the select skeleton's device code, after the KvgArgs declaration:
//! kv_qpos, a block-wide scan (kv_bscan), the order key of a chunk's mean score
//! (kv_key), protections (kv_prot), and kv_topk, the radix top-k of one class of
//! chunks of an instance (kv_select calls it twice: protected chunks, then the others).
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
** mean score: numbers by value > NaN; -0 == +0. roll (a constant at every call; kv_topk's and
** kv_kept's pass theirs): the loop over the chunk's scores kept rolled (KV_ROLLED; its adds are
** serial anyway, unrolled it is only more code). kv_select's code rolls it (kernels.c gen_select,
** issue 13 compile time); kv_select_grp and kv_sched keep it unrolled (rolled, ptxas spilled 48 B
** in adakv's kv_select_grp on sm_80) */
__device__ __forceinline__ unsigned kv_key(const float *sc, long long ci, long long ch, long long n,
                                           long long S, long long R, int roll = 0) {
	const long long t0 = ci * ch, t1 = t0 + ch < n ? t0 + ch : n;
	if (t0 < S) return 0x80000000u | (0x7ffffffeu - (unsigned)t0);
	if (t1 - 1 >= n - R) return 0x7fffffffu - (unsigned)(n - t1);
	float s = 0.f; int nan = 0;
	if (roll) {
		KV_ROLLED
		for (long long t = t0; t < t1; t++) { const float v = sc[t]; nan |= v != v; s += v; }
	} else
		for (long long t = t0; t < t1; t++) { const float v = sc[t]; nan |= v != v; s += v; }
	if (nan) return 0u;
	float m = ch == 1 ? s : s / (float)(t1 - t0);
	if (m == 0.f) m = 0.f;
	const unsigned u = __float_as_uint(m);
	return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
/* a chunk's mean score in double, as the reference computes it (threshold's compare with tau) */
__device__ __forceinline__ double kv_cmean(const float *sc, long long ci, long long ch, long long n) {
	const long long t0 = ci * ch, t1 = t0 + ch < n ? t0 + ch : n;
	double s = 0.0;
	for (long long t = t0; t < t1; t++) s += (double)sc[t];
	return ch == 1 ? s : s / (double)(t1 - t0);
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
                        long long want, KvSel &o, unsigned *hist, unsigned *sv, long long *sE, int *wsum,
                        int roll = 0) {
	const int tid = threadIdx.x;
	const long long nfull = n / ch, rem = n - nfull * ch;
	const int pin = rem > 0 && kv_prot(nfull, ch, n, S, R) == grp;
	const unsigned kp = pin ? kv_key(sc, nfull, ch, n, S, R, roll) : 0u;
	if (tid == 0) { sv[0] = 0; sv[1] = 0; }
	__syncthreads();
	unsigned c0_ = 0, c1_ = 0;
	for (long long ci = tid; ci < nfull; ci += KV_NT)
		if (kv_prot(ci, ch, n, S, R) == grp) { c0_++; c1_ += pin && kv_key(sc, ci, ch, n, S, R, roll) >= kp; }
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
			const unsigned k_ = kv_key(sc, ci, ch, n, S, R, roll);
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
		const int eq = ci < nfull && kv_prot(ci, ch, n, S, R) == grp && kv_key(sc, ci, ch, n, S, R, roll) == T;
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
                                       long long S, long long R, int roll = 0) {
	if (ci >= n / ch) return o.takep;
	if (o.allf) return 1;
	if (o.nonef) return 0;
	const unsigned k_ = kv_key(sc, ci, ch, n, S, R, roll);
	return k_ > o.T || (k_ == o.T && ci <= o.E);
}
