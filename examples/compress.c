/*
** compress.c — what an inference engine does with kvcc, in one page.
**
**   kvcc compile policies/snapkv.lua -o snapkv.so --dtype bf16 --head-dim 128 --group 4
**   cc compress.c -lkvcc_rt && ./a.out snapkv.so        (the runtime only: no compiler, no LLVM)
**
** Loads the compiled policy, describes a bf16 KV cache [layer][head][token][chan],
** hands it the last `window` prompt queries, compresses it to half, prints the
** new lengths. Error handling: every call returns 0 or a negative KVCC_E* code.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <kvcc.h>

enum { LAYERS = 2, HEADS = 8, GROUP = 4, DIM = 128, CAP = 1000, WINDOW = 64 };

static uint16_t bf16(float x)              /* engine-side storage: bf16 */
{
	uint32_t u;
	memcpy(&u, &x, 4);
	return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

#define CHECK(call) do { if ((call) != 0) { fprintf(stderr, "%s: %s\n", #call, kvcc_last_error()); return 1; } } while (0)

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s policy.so\n", argv[0]);
		return 2;
	}
	/* 1. load the artifact: validated (magic, ABI, descriptor, specialization, CPU features) */
	kvcc_policy *pol;
	CHECK(kvcc_open(argv[1], &pol));
	kvcc_spec spec;
	CHECK(kvcc_policy_spec(pol, &spec));
	printf("policy %s: head_dim %d, group %d, %d params\n", kvcc_policy_name(pol), spec.head_dim, spec.group,
	       kvcc_param_count(pol));

	/* 2. the engine's cache: contiguous, strides in elements */
	size_t nkv = (size_t)LAYERS * HEADS * CAP * DIM;
	uint16_t *K = malloc(nkv * 2), *V = malloc(nkv * 2);
	int32_t *pos = malloc(sizeof(int32_t) * LAYERS * HEADS * CAP), len[LAYERS * HEADS];
	size_t nq = (size_t)LAYERS * HEADS * GROUP * WINDOW * DIM;
	uint16_t *Q = malloc(nq * 2);              /* the last WINDOW prompt queries */
	srand(1);
	for (size_t i = 0; i < nkv; i++) {
		K[i] = bf16((float)rand() / RAND_MAX - 0.5f);
		V[i] = bf16((float)rand() / RAND_MAX - 0.5f);
	}
	for (size_t i = 0; i < nq; i++)
		Q[i] = bf16((float)rand() / RAND_MAX - 0.5f);
	for (int k = 0; k < LAYERS * HEADS; k++) {
		len[k] = CAP - k;                       /* heads may hold different lengths */
		for (int t = 0; t < CAP; t++)
			pos[k * CAP + t] = t;
	}
	kvcc_layout lay = { KVCC_BF16, LAYERS, HEADS, DIM, CAP,
	                    (int64_t)HEADS * CAP * DIM, (int64_t)CAP * DIM, DIM };

	/* 3. plan once per layout (checks it, picks threads) */
	kvcc_plan *plan;
	CHECK(kvcc_plan_create(pol, &lay, WINDOW, 0, &plan));

	/* 4. compress: runtime params never recompile */
	double params[8];
	for (int i = 0; i < kvcc_param_count(pol) && i < 8; i++)
		CHECK(kvcc_param_info(pol, i, NULL, &params[i]));
	int w = kvcc_param_index(pol, "window");
	if (w >= 0)
		params[w] = WINDOW;
	/* the observation queries the policy reads with these params (its window; -1 would be
	** every prompt position, 0 none): this example holds at most WINDOW of them */
	int nobs;
	CHECK(kvcc_policy_obs(pol, params, &nobs));
	if (nobs < 0 || nobs > WINDOW)
		nobs = WINDOW;
	kvcc_cache cache = { K, V, pos, len, NULL };
	kvcc_obs obs = { nobs, Q, NULL, NULL };
	kvcc_args args = { .ratio = 0.5, .budget = -1, .params = params };
	CHECK(kvcc_compress(plan, &cache, &obs, &args));

	/* 5. K, V, pos are compacted in place; len holds the new lengths */
	for (int k = 0; k < 4; k++)
		printf("layer %d head %d: %d tokens kept, first kept position %d\n", k / HEADS, k % HEADS, len[k], pos[k * CAP]);
	int ok = len[0] == CAP / 2;
	kvcc_plan_destroy(plan);
	kvcc_close(pol);
	free(K), free(V), free(pos), free(Q);
	printf(ok ? "ok\n" : "unexpected length\n");
	return ok ? 0 : 1;
}
