//! select_grp.cuh: select scopes layer and model (kv_select_grp, pasted only for those
//! scopes): kv_gpick ranks the chunks of all instances of a scope group and leaves each
//! instance a record (4 ints per class at the start of its workspace) that kv_select
//! compacts from; with AdaKV's floor (scope layer, chunk 1) two more records per instance
//! (its own top floor(alpha n_keep), per class) that the layer's ranking leaves out.
/* an instance's rows and scores as the ranking sees them: with merge summary (kernels.c
** gen_selgrp) the ordinary rows only, from kv_select_grp's copy in the workspace */
#ifndef KV_GLEN
#define KV_GLEN(a, k) ((long long)(a).len[k])
#define KV_GSC(a, k) ((a).scores + (long long)(k) * (a).N)
#endif
__device__ __forceinline__ long long kv_clen(long long ci, long long ch, long long n) {
	return (ci + 1) * ch <= n ? ch : n - ci * ch;
}
__device__ __forceinline__ int *kv_grec(const KvgArgs &a, int k, int grp) {
	return (int *)(a.ws + (long long)k * a.ws_inst) + 4 * grp;
}
__device__ __forceinline__ KvSel kv_ldrec(const int *r) {
	KvSel o = {};
	o.T = (unsigned)r[0]; o.E = r[1]; o.takep = r[2]; o.allf = r[3]; o.nonef = 0;
	return o;
}
/* a kv_topk result as a record (none kept: T above every key, E -1) */
__device__ __forceinline__ void kv_strec(int *r, const KvSel &o) {
	r[0] = !o.allf && o.nonef ? (int)0xffffffffu : (int)o.T; r[1] = !o.allf && o.nonef ? -1 : (int)o.E;
	r[2] = o.takep; r[3] = o.allf;
}
/* chunk ci of instance k takes part in the ranking of class grp: of that class and, with
** AdaKV's floor (fl 1), not already kept by its head's own floor (records 2 + grp); with a
** threshold (fl 2), an unprotected chunk only when its mean score (double, as the reference's)
** is >= tau (NaN never); with merge summary (fl 3, chunk 1), only within its head's cap
** (records 2 + grp: its own top no - C when the group evicts and it has no block); with mass
** over chunks (fl 4), an unprotected chunk only when it is in the group's mass prefix (records
** 2, kernels.c gen_grpmass); with merge summary and AdaKV's floor (fl 5, chunk 1), within its
** head's cap (records 2 + grp) and not already kept by its floor (records 4 + grp); with merge
** summary and threshold (fl 6, chunk 1), within its head's cap and a candidate (>= tau) */
__device__ __forceinline__ int kv_gin(const KvgArgs &a, int k, long long ci, long long ch, long long n, long long S,
                                      long long R, int grp, int fl, double tau) {
	if (kv_prot(ci, ch, n, S, R) != grp) return 0;
	if (fl == 2) return grp || kv_cmean(KV_GSC(a, k), ci, ch, n) >= tau;
	if (fl == 3) return kv_kept(kv_ldrec(kv_grec(a, k, 2 + grp)), KV_GSC(a, k), ci, ch, n, S, R);
	if (fl == 4) return grp || kv_kept(kv_ldrec(kv_grec(a, k, 2)), KV_GSC(a, k), ci, ch, n, S, R);
	if (fl == 6) return kv_kept(kv_ldrec(kv_grec(a, k, 2 + grp)), KV_GSC(a, k), ci, ch, n, S, R) &&
	                    (grp || kv_cmean(KV_GSC(a, k), ci, ch, n) >= tau);
	if (fl == 5) return kv_kept(kv_ldrec(kv_grec(a, k, 2 + grp)), KV_GSC(a, k), ci, ch, n, S, R) &&
	                    !kv_kept(kv_ldrec(kv_grec(a, k, 4 + grp)), KV_GSC(a, k), ci, ch, n, S, R);
	return !fl || !kv_kept(kv_ldrec(kv_grec(a, k, 2 + grp)), KV_GSC(a, k), ci, ch, n, S, R);
}
/* The interpreter's greedy pass (compiler/interp.c pick) over the chunks of class grp of
** instances i0 .. i0+ni-1 under w tokens, candidates ordered by key, then instance, then
** position: the prefix that fits is found by a radix select weighted by chunk length
** (threshold key T; ties in order up to the first candidate P that does not fit); after
** P only shorter last chunks can fit, and the greedy pass takes, one at a time, the best
** of those that still fit. Writes the records; returns the tokens taken. With cw, w counts
** chunks (each weighs 1): the best w candidates, no greedy pass (mass's prefix, gen_grpmass). */
__device__ long long kv_gpick(const KvgArgs &a, int i0, int ni, long long ch, long long S, long long R, int grp,
                              long long w, unsigned long long *hist, unsigned long long *sv, int *wsum, int fl,
                              double tau, int cw = 0) {
	const int tid = threadIdx.x;
	if (w < 0) w = 0;
	if (tid == 0) sv[0] = 0;
	__syncthreads();
	unsigned long long tot = 0;
	for (int k = i0; k < i0 + ni; k++) {
		const long long n = KV_GLEN(a, k), nch = (n + ch - 1) / ch;
		for (long long ci = tid; ci < nch; ci += KV_NT)
			if (kv_gin(a, k, ci, ch, n, S, R, grp, fl, tau)) tot += cw ? 1ull : (unsigned long long)kv_clen(ci, ch, n);
	}
	atomicAdd(&sv[0], tot);
	__syncthreads();
	const int allf = sv[0] <= (unsigned long long)w;
	const unsigned long long total = sv[0];
	__syncthreads();
	unsigned T = 0;
	long long rem = w, Pk = -1, Pc = -1;
	if (!allf) {
		if (tid == 0) { sv[0] = 0; sv[1] = 0; sv[2] = (unsigned long long)w; }
		for (int sh = 24; sh >= 0; sh -= 8) {
			for (int b = tid; b < 256; b += KV_NT) hist[b] = 0;
			__syncthreads();
			const unsigned pref = (unsigned)sv[0], mask = (unsigned)sv[1];
			for (int k = i0; k < i0 + ni; k++) {
				const long long n = KV_GLEN(a, k), nch = (n + ch - 1) / ch;
				const float *const sc = KV_GSC(a, k);
				for (long long ci = tid; ci < nch; ci += KV_NT) {
					if (!kv_gin(a, k, ci, ch, n, S, R, grp, fl, tau)) continue;
					const unsigned k_ = kv_key(sc, ci, ch, n, S, R);
					if ((k_ & mask) == pref) atomicAdd(&hist[(k_ >> sh) & 255u], cw ? 1ull : (unsigned long long)kv_clen(ci, ch, n));
				}
			}
			__syncthreads();
			if (tid == 0) {
				unsigned long long cum = 0;
				for (int b = 255; b >= 0; b--) {
					if (cum + hist[b] > sv[2]) { sv[0] = pref | ((unsigned)b << sh); sv[1] = mask | (255u << sh); sv[2] -= cum; break; }
					cum += hist[b];
				}
			}
			__syncthreads();
		}
		T = (unsigned)sv[0];
		const long long remT = (long long)sv[2];
		__syncthreads();
		/* ties at T in order: P is the one whose weight crosses remT */
		long long run = 0;
		for (int k = i0; k < i0 + ni && Pk < 0; k++) {
			const long long n = KV_GLEN(a, k), nch = (n + ch - 1) / ch, nf = n / ch;
			const float *const sc = KV_GSC(a, k);
			for (long long c0 = 0; c0 < nch; c0 += KV_NT) {
				const long long ci = c0 + tid;
				const int eq = ci < nch && kv_gin(a, k, ci, ch, n, S, R, grp, fl, tau) && kv_key(sc, ci, ch, n, S, R) == T;
				int cnt;
				const int ex = kv_bscan(eq, wsum, &cnt);
				/* the shorter chunk is the instance's last: only full chunks precede a tie here */
				const long long before = run + (cw ? 1 : ch) * ex;
				if (eq && before <= remT && before + (cw ? 1 : kv_clen(ci, ch, n)) > remT) { sv[3] = (unsigned long long)k; sv[4] = (unsigned long long)ci; sv[5] = (unsigned long long)before; }
				const int seq = nf < nch && nf >= c0 && nf < c0 + KV_NT && kv_gin(a, k, nf, ch, n, S, R, grp, fl, tau) && kv_key(sc, nf, ch, n, S, R) == T;
				run += cw ? cnt : ch * cnt - (seq ? ch - (n - nf * ch) : 0);
				__syncthreads();
				if (run > remT) { Pk = (long long)sv[3]; Pc = (long long)sv[4]; rem = remT - (long long)sv[5]; break; }
			}
		}
	}
	/* records; a shorter last chunk in the prefix is kept */
	for (int k = i0 + tid; k < i0 + ni; k += KV_NT) {
		const long long n = KV_GLEN(a, k), nf = n / ch;
		int *const r = kv_grec(a, k, grp);
		const int hasp = nf * ch < n && kv_gin(a, k, nf, ch, n, S, R, grp, fl, tau);
		const unsigned kp = hasp ? kv_key(KV_GSC(a, k), nf, ch, n, S, R) : 0u;
		r[0] = (int)T; r[1] = k < Pk ? 0x7fffffff : k == Pk ? (int)(Pc - 1) : -1; r[3] = allf;
		r[2] = hasp && (allf || kp > T || (kp == T && (k < Pk || (k == Pk && nf < Pc))));
	}
	__syncthreads();
	if (allf) return (long long)total;
	if (cw) return w;
	/* after P: the best shorter chunk that still fits, until none does */
	for (int round = 0; round < ni; round++) {
		if (tid == 0) sv[6] = 0;
		__syncthreads();
		unsigned long long best = 0;
		for (int k = i0 + tid; k < i0 + ni; k += KV_NT) {
			const long long n = KV_GLEN(a, k), nf = n / ch;
			if (nf * ch == n || n - nf * ch > rem || !kv_gin(a, k, nf, ch, n, S, R, grp, fl, tau) || kv_grec(a, k, grp)[2]) continue;
			const unsigned long long v = (unsigned long long)kv_key(KV_GSC(a, k), nf, ch, n, S, R) << 32 | (0xffffffffu - (unsigned)(k - i0));
			best = v > best ? v : best;
		}
		atomicMax(&sv[6], best);
		__syncthreads();
		const unsigned long long b = sv[6];
		if (b == 0) break;
		const int k = i0 + (int)(0xffffffffu - (unsigned)(b & 0xffffffffu));
		rem -= KV_GLEN(a, k) - KV_GLEN(a, k) / ch * ch;
		if (tid == 0) kv_grec(a, k, grp)[2] = 1;
		__syncthreads();
	}
	return w - rem;
}
