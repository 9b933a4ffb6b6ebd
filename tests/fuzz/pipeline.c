/*
** What the KIR and DSL harnesses do with a policy that loaded: every later
** stage a hostile policy reaches, on a tiny case, checking the invariants
** that hold for any verified KiFn:
**   print → parse → verify → print gives the same text (before and after
**   the passes); the default passes with verification after each succeed;
**   then the plan, the reference interpreter (compress and the observe hook)
**   and the CUDA C generator (no NVRTC) run to a result or a clean error.
** Out of memory is a clean error too (the fuzzer's malloc limit).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compiler/ir.h"
#include "compiler/interp.h"
#include "compiler/plan.h"
#include "codegen/ptx/ptx.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/pipeline.h"

#define MAXRUN 4000   /* instructions the interpreter runs on (memory: nins x L*H arrays) */

static int oom(const KiErr *e)
{
	return e->set && strstr(e->msg, "out of memory");
}

/* print(parse(print(f))) == print(f), the parsed copy verifying */
static void roundtrip(const KiFn *f, const char *when)
{
	char *s1 = ki_print(f);
	if (!s1)
		return;
	KiErr e = { 0 };
	KiFn *g = ki_parse(s1, "<printed>", &e);
	if (!g || ki_verify(g, &e) != 0) {
		if (!oom(&e)) {
			fprintf(stderr, "%s\n--- printed text (%s) ---\n%s", e.msg, when, s1);
			fz_bug("the printed KIR does not parse back", when);
		}
		ki_free(g);
		free(s1);
		return;
	}
	char *s2 = ki_print(g);
	if (s2 && strcmp(s1, s2) != 0) {
		fprintf(stderr, "--- first ---\n%s--- second ---\n%s", s1, s2);
		fz_bug("print(parse(print(f))) != print(f)", when);
	}
	free(s2);
	free(s1);
	ki_free(g);
}

/* deterministic data in [-2, 2) */
static void fill(float *p, size_t n, uint64_t seed)
{
	for (size_t k = 0; k < n; k++)
		p[k] = (float)(4 * ki_rand(seed, 0, 0, k) - 2);
}

static void interp(const KiFn *f)
{
	enum { L = 2, H = 2, G = 2, D = 4, N = 7, O = 3 };
	static float K[L * H * N * D], V[L * H * N * D], Q[L * H * G * O * D], lse[L * H * G * O];
	static float q[L * H * G * D], out[L * H * G * D];
	static int32_t pos[L * H * N], qpos[O], len[L * H] = { 7, 5, 7, 7 };
	static double state[8 * L * H * N];
	fill(K, sizeof K / sizeof *K, 1), fill(V, sizeof V / sizeof *V, 2);
	fill(Q, sizeof Q / sizeof *Q, 3), fill(lse, sizeof lse / sizeof *lse, 4);
	fill(q, sizeof q / sizeof *q, 5);
	for (int k = 0; k < L * H * N; k++)
		pos[k] = 100 + k % N;
	for (int o = 0; o < O; o++)
		qpos[o] = 100 + N - O + o;
	KiCase c = { .L = L, .H = H, .G = G, .d = D, .n = N, .O = O, .K = K, .V = V, .Q = Q, .lse = lse,
	             .pos = pos, .qpos = qpos, .dtype = KVCC_BF16, .ratio = 0.5, .budget = -1 };
	KiResult r;
	KiErr e = { 0 };
	if (ki_run(f, &c, &r, &e) == 0)
		ki_result_free(&r);
	c.len = len, c.budget = 3, c.dtype = KVCC_F32, c.pos = NULL, c.qpos = NULL;
	memset(&e, 0, sizeof e);
	if (ki_run(f, &c, &r, &e) == 0)
		ki_result_free(&r);
	if (f->nst <= 8) {
		for (size_t k = 0; k < sizeof state / sizeof *state; k++)
			state[k] = ki_rand(6, 0, 0, k);
		c.len = NULL;
		memset(&e, 0, sizeof e);
		ki_observe(f, &c, q, state, out, &e);
	}
}

void fz_pipeline(KiFn *f)
{
	roundtrip(f, "as loaded");
	KiErr e = { 0 };
	if (ki_runpasses(f, KI_DEFAULT_PASSES, 1, &e, NULL, NULL) != 0) {
		if (oom(&e))
			return;
		fz_bug("a pass failed on a verified policy", e.msg);
	}
	roundtrip(f, "after the passes");
	KiPlan p;
	memset(&e, 0, sizeof e);
	if (ki_plan(f, &p, &e) == 0)
		ki_plan_free(&p);
	if (f->nins <= MAXRUN)
		interp(f);
	KpCudaOpts o = { .dtype = KVCC_BF16, .head_dim = 64, .group = 2, .gen_only = 1 };
	KpCudaOut out;
	memset(&e, 0, sizeof e);
	if (kp_compile_cuda(f, &o, &out, &e) == 0)
		kp_cuda_free(&out);
}
