//! decode.cuh: one decode step of attention, split-KV (DESIGN §5 decode_attn), pasted by
//! kernels.c after the per-policy sizes kv_lpt (lanes per token), kv_gb (query heads per
//! register block), kv_tpw, kv_cpl, kv_rec and kv_part. kv_decode calls kv_decode_part;
//! kv_decode_comb calls kv_decode_merge, then runs the policy's observe hook on x.attn.
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
#if KV_CBIAS   /* the merge count bias: log(count) added to the logit (DESIGN §3) */
				const float x = d / sqrtf((float)KV_D) + logf(a.state[(((long long)(inst / (a.L * a.H)) * KV_NST + KV_CNT) * a.L * a.H +
				                                                      inst % (a.L * a.H)) * N + t]);
#else
				const float x = d / sqrtf((float)KV_D);
#endif
				const float M = x > m[i] ? x : m[i];
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
