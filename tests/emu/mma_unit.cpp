/*
** The tensor-core path alone: the generated fragment helpers (kv_frag_a/b/c,
** kv_logits of codegen/ptx/tile_mma.cuh) with cuda_emu.h's kv_emu_mma, against a plain
** matrix product in double, for bf16 and f16 (head_dim 32: two k-steps).
** Every element of A, B and C is distinct and exactly representable, and the
** products are exact in f32, so any misplaced fragment element changes a result
** and the comparison is exact.
**
**   mma_unit     (built by tests/emu/emu.mk from the generated snapkv sources
**                 $(B)/mma/{bf16,f16}.cu; KV_NT=32, KV_SK=16)
*/
#include <stdint.h>
#include "tests/emu/cuda_emu.h"

#define kv_score0 bf_kv_score0
#define kv_select bf_kv_select
#define kv_paged bf_kv_paged
#define kv_decode bf_kv_decode
#define kv_decode_comb bf_kv_decode_comb
namespace bf {
#include "bf16.cu"
}
#undef KV_G
#undef KV_D
#undef kv_score0
#undef kv_select
#undef kv_paged
#undef kv_decode
#undef kv_decode_comb
#undef KV_NST
#define kv_score0 hf_kv_score0
#define kv_select hf_kv_select
#define kv_paged hf_kv_paged
#define kv_decode hf_kv_decode
#define kv_decode_comb hf_kv_decode_comb
namespace hf {
#include "f16.cu"
}
#undef kv_score0
#undef kv_select
#undef kv_paged
#undef kv_decode
#undef kv_decode_comb

enum { D = 32, DP = D + 8, M = 16, T = 16 };

struct UArgs {
	const unsigned short *q, *k;   /* [M][DP], [T][DP] storage bits */
	const float *c;                /* [16][8] accumulator in */
	float *d, *s;                  /* [16][8] one mma; [M][T] kv_logits */
};

/* the C fragment as the PTX ISA places it (independent of the generated helpers) */
static void cfrag(const float *C, float c[4])
{
	const int g = (int)(threadIdx.x & 31) >> 2, t = (int)threadIdx.x & 3;
	for (int i = 0; i < 4; i++)
		c[i] = C[(i < 2 ? g : g + 8) * 8 + 2 * t + (i & 1)];
}

#define UNIT_KERNEL(NS)                                                                    \
	static void NS##_unit(const UArgs u)                                                     \
	{                                                                                        \
		unsigned a[4], b[2];                                                                   \
		float c[4];                                                                            \
		NS::kv_frag_a(u.q, a);                                                                 \
		NS::kv_frag_b(u.k, b);                                                                 \
		cfrag(u.c, c);                                                                         \
		NS::kv_mma(c, a, b);                                                                   \
		NS::kv_frag_c(u.d, 8, c);                                                              \
		NS::kv_logits(u.s, u.q, u.k, M, T);                                                    \
	}
UNIT_KERNEL(bf)
UNIT_KERNEL(hf)

static unsigned short enc(float v, int bf16)
{
	uint32_t u;
	memcpy(&u, &v, 4);
	if (bf16)
		return (unsigned short)(u >> 16);             /* exact: at most 8 significant bits */
	if (v == 0.f)
		return 0;
	int e;
	float m = frexpf(fabsf(v), &e);                  /* v = m * 2^e, m in [0.5, 1) */
	return (unsigned short)((v < 0 ? 0x8000u : 0u) | (unsigned)(e + 14) << 10 | ((unsigned)ldexpf(m, 11) & 1023u));
}

static int run(int bf16)
{
	static unsigned short q[M * DP], k[T * DP];
	static float Qf[M][D], Kf[T][D], C[16 * 8], d[16 * 8], s[M * T];
	for (int r = 0; r < M; r++)
		for (int c = 0; c < D; c++)
			Qf[r][c] = (float)(r * D + c - 256) / 4.f;       /* distinct, |m/4|, |m| <= 256 */
	for (int j = 0; j < T; j++)
		for (int c = 0; c < D; c++)
			Kf[j][c] = (float)((j * D + c) * 3 % 512 - 256) / 8.f;
	for (int i = 0; i < 16 * 8; i++)
		C[i] = (float)i + 0.5f;
	for (int r = 0; r < M; r++)
		for (int c = 0; c < DP; c++)
			q[r * DP + c] = c < D ? enc(Qf[r][c], bf16) : enc(1e4f, bf16);   /* padding must not be read */
	for (int j = 0; j < T; j++)
		for (int c = 0; c < DP; c++)
			k[j * DP + c] = c < D ? enc(Kf[j][c], bf16) : enc(1e4f, bf16);
	memset(d, 0, sizeof d), memset(s, 0, sizeof s);
	UArgs u = { q, k, C, d, s };
	if (kv_emu_launch(bf16 ? bf_unit : hf_unit, 1, 32, 0, &u) != 0) {
		printf("FAIL %s: launch: %s\n", bf16 ? "bf16" : "f16", kv_emu_error());
		return 1;
	}
	int bad = 0;
	for (int r = 0; r < 16; r++)
		for (int j = 0; j < 8; j++) {
			double ref = C[r * 8 + j];
			for (int c = 0; c < 16; c++)
				ref += (double)Qf[r][c] * Kf[j][c];
			if (d[r * 8 + j] != (float)ref && bad++ < 4)
				printf("FAIL %s: mma D[%d][%d] = %.9g, A·B + C = %.9g\n", bf16 ? "bf16" : "f16", r, j, d[r * 8 + j], ref);
		}
	for (int r = 0; r < M; r++)
		for (int j = 0; j < T; j++) {
			double ref = 0;
			for (int c = 0; c < D; c++)
				ref += (double)Qf[r][c] * Kf[j][c];
			if (s[r * T + j] != (float)ref && bad++ < 8)
				printf("FAIL %s: kv_logits S[%d][%d] = %.9g, Q·K = %.9g\n", bf16 ? "bf16" : "f16", r, j, s[r * T + j], ref);
		}
	return bad != 0;
}

int main(void)
{
	int fail = run(1) + run(0);
	printf("mma_unit: %d passed, %d failed (m16n8k16 bf16/f16: one mma with C, kv_logits over head_dim %d)\n",
	       2 - fail, fail, D);
	return fail != 0;
}
