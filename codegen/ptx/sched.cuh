//! sched.cuh: the model budget schedules (DESIGN §3 "Global rules"; pasted only for the
//! prefix and dynamic schedules, after select_grp.cuh): kv_sched, one block per sequence,
//! sets every instance's count from all of the sequence's scores and leaves it in the
//! instance's record (ints 8-9 of its workspace) for kv_select's per-head top-k, as
//! runtime/compress.c schedcounts does for x86 and compiler/select.c defines. Radix
//! selections over the score bits only (no sort).
/* a 64-bit value as two ints (workspace records are only 4-byte aligned) */
__device__ __forceinline__ void kv_stll(int *r, long long v) {
	r[0] = (int)(unsigned)((unsigned long long)v & 0xffffffffull); r[1] = (int)(unsigned)((unsigned long long)v >> 32);
}
__device__ __forceinline__ long long kv_ldll(const int *r) {
	return (long long)(((unsigned long long)(unsigned)r[1] << 32) | (unsigned long long)(unsigned)r[0]);
}
/* slot j of instance k's schedule record: 0 its count, 1-3 scratch (after kv_gpick's records) */
__device__ __forceinline__ int *kv_srec(const KvgArgs &a, int k, int j) {
	return (int *)(a.ws + (long long)k * a.ws_inst) + 8 + 2 * j;
}
__device__ __forceinline__ long long kv_schcnt(const KvgArgs &a, int k) { return kv_ldll(kv_srec(a, k, 0)); }

/* PrefixKV at mass p for one instance (n scores >= 0, total tot): the smallest count m of
** its best tokens whose mass reaches p of tot (n + 1: none does). A radix descent over the
** score bits (4 x 8 bits) carrying each bucket's count and mass: the bucket where the
** cumulative mass reaches p, then the ties of the final key in one step. Block-uniform. */
__device__ __noinline__ long long kv_pfxm(const float *sc, long long n, double tot, double p, unsigned *hc, double *hm,
                             unsigned *sv, double *sd) {
	const int tid = threadIdx.x;
	if (!(tot > 0.0) || n <= 0) return n + 1;
	__syncthreads();
	if (tid == 0) { sv[0] = 0; sv[1] = 0; sv[2] = 0; sv[3] = 0; sv[4] = 0; sd[0] = 0.0; }
	for (int sh = 24; sh >= 0; sh -= 8) {
		for (int b = tid; b < 256; b += KV_NT) { hc[b] = 0; hm[b] = 0.0; }
		__syncthreads();
		const unsigned pref = sv[0], mask = sv[1];
		for (long long t = tid; t < n; t += KV_NT) {
			const float v = sc[t];
			const unsigned u = v == 0.f ? 0u : __float_as_uint(v);
			if ((u & mask) == pref) { atomicAdd(&hc[(u >> sh) & 255u], 1u); atomicAdd(&hm[(u >> sh) & 255u], (double)v); }
		}
		__syncthreads();
		if (tid == 0 && !sv[2]) {
			double cum = sd[0];
			unsigned c = sv[3];
			int b = 255, bl = -1;
			double cl = 0.0;
			unsigned ccl = 0;
			for (; b >= 0; b--) {
				if (!hc[b]) continue;
				if (__ddiv_rn(__dadd_rn(cum, hm[b]), tot) >= p) break;
				bl = b, cl = cum, ccl = c;
				cum = __dadd_rn(cum, hm[b]), c += hc[b];
			}
			/* none reaches p: at the top, no count does; deeper (the sub-buckets' sum rounded
			   below the bucket's), the last nonempty bucket */
			if (b < 0 && sh == 24) sv[2] = 1;
			else {
				if (b < 0) b = bl, cum = cl, c = ccl;
				sv[0] = pref | ((unsigned)b << sh); sv[1] = mask | (255u << sh); sd[0] = cum; sv[3] = c; sv[4] = hc[b];
			}
		}
		__syncthreads();
		if (sv[2]) break;
	}
	long long m;
	if (sv[2]) m = n + 1;
	else {
		const double v = (double)__uint_as_float(sv[0]), cnt = (double)sv[4];
		double j = v > 0.0 ? ceil(__ddiv_rn(__dsub_rn(__dmul_rn(p, tot), sd[0]), v)) : cnt;
		j = j < 1.0 ? 1.0 : j > cnt ? cnt : j;
		m = (long long)sv[3] + (long long)j;
	}
	__syncthreads();
	return m;
}
/* the evictions n - m - protected (PrefixKV: n - (first index with cdf >= p) - 1 - protected) */
__device__ __forceinline__ long long kv_pfxev(long long n, long long m, long long prot) {
	const long long k = n - m - prot;
	return k > 0 ? k : 0;
}

/* The prefix schedule over instances i0 .. i0+ni-1 (one sequence): one mass p shared by all,
** bisected until the evictions are within tol of the target, scaled and truncated. */
__device__ void kv_sched_prefix(const KvgArgs &a, int i0, int ni, long long S, long long R, double tol, double iters) {
	__shared__ unsigned hc[256], sv[8];
	__shared__ double hm[256], sd[4], dred[KV_NT];
	const int tid = threadIdx.x;
	if (!(tol >= 0.0 && tol <= 1e9) || !(iters >= 0.0 && iters <= 1e4) || iters != floor(iters)) {
		if (tid == 0) kv_seterr(a.err, KVG_ESCHED);
		return;
	}
	double target = 0.0, ntot = 0.0;
	for (int k = i0; k < i0 + ni; k++) {
		const long long n = a.len[k];
		const float *const sc = a.scores + (long long)k * a.N;
		double part = 0.0;
		int bad = 0;
		for (long long t = tid; t < n; t += KV_NT) {
			const float v = sc[t];
			bad |= !(v >= 0.f && v <= 3.402823466e38f);
			part += (double)v;
		}
		const double tot = kv_bsumd(part, dred, &sd[2]);
		if (kv_bsumd((double)bad, dred, &sd[3]) > 0.0 || !(tot <= 1.7976931348623157e308)) {
			if (tid == 0) kv_seterr(a.err, KVG_ESCHED);
			return;
		}
		if (tid == 0) { kv_stll(kv_srec(a, k, 1), __double_as_longlong(tot)); kv_stll(kv_srec(a, k, 2), 1); }
		ntot += (double)n;
		target += (double)n - (double)(a.budget < n ? a.budget : n);
	}
	if (a.budget < 0) target = __dmul_rn(ntot, a.ratio);     /* the code's sum(n) * ratio */
	__syncthreads();
	const long long prot = S + R;
	double lo = 0.0, hi = 1.0;
	for (long long it = 0; it < (long long)iters && lo < hi; it++) {
		const double mid = __ddiv_rn(__dadd_rn(lo, hi), 2.0);
		double count = 0.0;
		for (int k = i0; k < i0 + ni; k++) {
			const long long n = a.len[k];
			const long long m = kv_pfxm(a.scores + (long long)k * a.N, n, __longlong_as_double(kv_ldll(kv_srec(a, k, 1))),
			                            mid, hc, hm, sv, sd);
			if (tid == 0) kv_stll(kv_srec(a, k, 2), m);
			count += (double)kv_pfxev(n, m, prot);
		}
		if (fabs(count - target) < tol) break;
		if (count < target) hi = mid;
		else lo = mid;
	}
	__syncthreads();
	double sum = 0.0;
	for (int k = i0; k < i0 + ni; k++)
		sum += (double)kv_pfxev(a.len[k], kv_ldll(kv_srec(a, k, 2)), prot);
	__syncthreads();
	for (int k = i0 + tid; k < i0 + ni; k += KV_NT) {
		const long long n = a.len[k];
		long long e = kv_pfxev(n, kv_ldll(kv_srec(a, k, 2)), prot);
		if (sum != 0.0) e = (long long)__ddiv_rn(__dmul_rn((double)e, target), sum);
		kv_stll(kv_srec(a, k, 0), e < n ? n - e : 0);
	}
}

/* Python's float floor division a // b (b > 0), as the DynamicKV code */
__device__ double kv_pyfloordiv(double a, double b) {
	const double mod = fmod(a, b);
	double div = __ddiv_rn(__dsub_rn(a, mod), b);
	if (mod != 0.0 && ((b < 0.0) != (mod < 0.0))) div = __dsub_rn(div, 1.0);
	if (div == 0.0) return copysign(0.0, __ddiv_rn(a, b));
	const double fd = floor(div);
	return __dsub_rn(div, fd) > 0.5 ? __dadd_rn(fd, 1.0) : fd;
}

/* The dynamic schedule over the L x H instances from i0 (one sequence, one length): per round
** (after every `every`-th layer) a global top-k over the first n - w tokens of the layers so far
** (kv_gpick: ties by instance, then position), each layer's share of it, then the code's
** arithmetic (f32 norm, floor division); a layer keeps its smallest share, plus the window. */
__device__ void kv_sched_dynamic(const KvgArgs &a, int i0, int L, int H, long long R, double rmax, double every,
                                 unsigned long long *hist, unsigned long long *sv, int *wsum) {
	const int tid = threadIdx.x, LH = L * H;
	if (!(rmax >= 0.0 && rmax <= 1e6) || !(every >= 1.0 && every <= 1e6) || every != floor(every)) {
		if (tid == 0) kv_seterr(a.err, KVG_ESCHED);
		return;
	}
	const long long n = a.len[i0];
	for (int k = i0 + 1; k < i0 + LH; k++)
		if (a.len[k] != n) { if (tid == 0) kv_seterr(a.err, KVG_ESCHED); return; }
	const long long B = a.budget >= 0 ? (a.budget < n ? a.budget : n) : (long long)floor(__dmul_rn((double)n, __dsub_rn(1.0, a.ratio)));
	const long long w = R < n ? R : n, m = n - w, base = B - w;
	if (base <= 0 || m <= 0) {          /* nothing to share: the window (or the budget) alone */
		for (int k = i0 + tid; k < i0 + LH; k += KV_NT) kv_stll(kv_srec(a, k, 0), B);
		return;
	}
	long long cand = (long long)floor(__dmul_rn(rmax, (double)base));
	cand = cand < m ? cand : m;
	/* per layer j (in its first head's record): 1 count, 2 share, 3 current */
	for (int j = tid; j < L; j += KV_NT) kv_stll(kv_srec(a, i0 + j * H, 3), cand);
	__syncthreads();
	const long long ev = (long long)every;
	for (int l = 0; l < L; l++) {
		if (l % ev != ev - 1) continue;
		const long long seen = l + 1, nf = seen * H * m, tk = base * H * seen < nf ? base * H * seen : nf;
		if (tk > 0) kv_gpick(a, i0, (int)seen * H, 1, 0, R, 0, tk, hist, sv, wsum, 0, 0.0);
		__syncthreads();
		for (int j = 0; j < seen; j++) {
			long long c = 0;
			for (int h = 0; tk > 0 && h < H; h++) {
				const int k = i0 + j * H + h;
				const KvSel o = kv_ldrec(kv_grec(a, k, 0));
				const float *const sc = a.scores + (long long)k * a.N;
				for (long long t0 = 0; t0 < m; t0 += KV_NT) {
					const long long t = t0 + tid;
					int tot;
					kv_bscan(t < m && kv_kept(o, sc, t, 1, n, 0, R), wsum, &tot);
					c += tot;
				}
			}
			if (tid == 0) kv_stll(kv_srec(a, i0 + j * H, 1), c);
		}
		__syncthreads();
		if (tid == 0) {
			long long tt = 0;
			for (int j = 0; j < seen; j++) {
				const long long c = kv_ldll(kv_srec(a, i0 + j * H, 1)) / seen;
				kv_stll(kv_srec(a, i0 + j * H, 1), c);
				tt += c;
			}
			if (l == L - 1 && tt != H * m) {
				int *const r = kv_srec(a, i0 + (int)(seen - 1) * H, 1);
				kv_stll(r, kv_ldll(r) + (base * H * seen) / L - tt);
				tt = (base * H * seen) / L;
			}
			long long sfix = 0;
			const long long need = base * L;
			for (int j = 0; j < seen; j++) {
				const float norm = __fdiv_rn((float)kv_ldll(kv_srec(a, i0 + j * H, 1)), (float)tt);
				const long long f = (long long)__fmul_rn((float)cand, norm);
				kv_stll(kv_srec(a, i0 + j * H, 2), f);
				sfix += f;
			}
			const double ss = __ddiv_rn((double)sfix, (double)need);
			sfix = 0;
			for (int j = 0; j < seen; j++) {
				const long long f = ss > 0.0 ? (long long)kv_pyfloordiv((double)kv_ldll(kv_srec(a, i0 + j * H, 2)), ss) : 0;
				kv_stll(kv_srec(a, i0 + j * H, 2), f);
				sfix += f;
			}
			if (sfix != need) {
				int *const r = kv_srec(a, i0 + (int)(seen - 1) * H, 2);
				kv_stll(r, kv_ldll(r) + need - sfix);
			}
			for (int j = 0; j < seen; j++) {
				const long long f = kv_ldll(kv_srec(a, i0 + j * H, 2)), b = f < m ? f : m;
				const long long c = kv_ldll(kv_srec(a, i0 + j * H, 3));
				kv_stll(kv_srec(a, i0 + j * H, 3), c < b ? c : b);
			}
		}
		__syncthreads();
	}
	for (int k = i0 + tid; k < i0 + LH; k += KV_NT) {
		const long long c = kv_ldll(kv_srec(a, i0 + (k - i0) / H * H, 3));
		kv_stll(kv_srec(a, k, 0), (c > 0 ? c : 0) + w);
	}
}
