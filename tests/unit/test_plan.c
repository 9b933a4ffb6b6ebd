/*
** The kernel planner (compiler/plan.c) and what the runtime reads of it: the descriptor
** (codegen/x86/desc.c, runtime/artifact.h) and the layout math of the runtime's buffers,
** the CPU feature masks (runtime/cpu.h). Policies are written as KIR text (QBE-style: the
** input is the test), the planner's errors checked at their policy positions.
*/
#include <stdlib.h>
#include <string.h>
#include "tests/unit/unit.h"
#include "compiler/plan.h"
#include "codegen/x86/x86.h"
#include "runtime/rt.h"
#include "runtime/cpu.h"

#define HDR "policy \"p\" source \"p.kir\"\n"
#define TAIL "select topk scope=head keep_first=0 keep_recent=0 chunk=1 schedule=none beta=20\nmerge drop\n"

/* SnapKV's score: Q·K → × scale → causal softmax → mean obs → mean group → avgpool */
static const char snap[] = HDR
	"param window = 8\n"
	"param kernel = 5\n"
	"%0 = input Q [group, obs, chan] @7:12\n"
	"%1 = input K [token, chan] @7:22\n"
	"%2 = dot %0, %1 chan [group, obs, token] @7:18\n"
	"%3 = info scale [] @7:40\n"
	"%4 = mul %2, %3 [group, obs, token] @7:35\n"
	"%5 = softmax %4 token [group, obs, token] @7:13\n"
	"%6 = mean %5 obs [group, token] @8:10\n"
	"%7 = mean %6 group [token] @8:25\n"
	"%8 = avgpool %7, $kernel token [token] @8:5\n"
	"score %8\nobs $window\n"
	"select topk scope=layer keep_first=0 keep_recent=$window chunk=1 schedule=none beta=20 @14:12\n"
	"merge drop\nwhen prefill\n";

static KiFn *plan(const char *text, KiPlan *p)
{
	KiFn *f = t_parse(text);
	KiErr e = { 0 };
	ck_assert_msg(ki_plan(f, p, &e) == 0, "%s", e.msg);
	return f;
}

/* the planner's error for text (no plan) */
static void reject(const char *text, const char *want)
{
	KiFn *f = t_parse(text);
	KiPlan p;
	KiErr e = { 0 };
	ck_assert_int_eq(ki_plan(f, &p, &e), -1);
	ck_assert_msg(strstr(e.msg, want) != NULL, "got: %s\nwant: %s", e.msg, want);
	ki_free(f);
}

START_TEST(test_plan_snapkv)
{
	KiPlan p;
	KiFn *f = plan(snap, &p);
	ck_assert_int_eq(p.cls[2], KI_CDOT);
	ck_assert_int_eq(p.cls[4], KI_CATTN);
	ck_assert_int_eq(p.cls[5], KI_CATTN);
	ck_assert_int_eq(p.cls[6], KI_CRED);
	ck_assert(p.has_attn && p.fast && p.fcausal && p.fscale);
	ck_assert_int_eq(p.fdot, 2);
	ck_assert_int_eq(p.fsoft, 5);
	ck_assert_int_eq(p.nmul, 1);
	ck_assert_int_eq(p.nsoft, 1);
	/* the scale (a scalar loop, stored for attn_score's multiplier), the mean over group and the
	** pool: the pool reads its input's neighbours, so they are separate loops */
	ck_assert_int_eq(p.tgen[3], KI_GEN_START);
	ck_assert_int_eq(p.tgen[7], KI_GEN_START);
	ck_assert_int_eq(p.tgen[8], KI_GEN_START);
	ck_assert_int_eq(p.ngen, 3);
	ck_assert(p.tout[3] && p.tout[7] && p.tout[8]);   /* multiplier, the pool's input, the score */
	ck_assert(!p.tgen[0] && !p.tgen[1]);             /* Q, K: read by the Q·K tile only */
	ck_assert(!p.has_observe && !p.uses_hmean);
	ki_plan_free(&p);
	ki_free(f);
}
END_TEST

/* h2o: the observe hook's loop reads x.attn and state and stores the update (its root) */
START_TEST(test_plan_observe)
{
	KiPlan p;
	KiFn *f = plan(HDR "param recent = 32\nstate acc = 0\n"
	               "%0 = state acc [token] @11:39\n"
	               "%1 = attn [group, token] @10:49\n"
	               "%2 = sum %1 group [token] @10:54\n"
	               "%3 = add %0, %2 [token] @10:45\n"
	               "score %0\nobserve acc %3\n" TAIL "when decode every=1\n", &p);
	ck_assert(p.has_observe);
	ck_assert(p.oneed[0] && p.oneed[1] && p.oneed[2] && p.oneed[3]);
	ck_assert_int_eq(p.otgen[0], KI_GEN_START);
	ck_assert_int_eq(p.nogen, 1);
	ck_assert(p.otout[3] && !p.otout[2] && !p.otout[1]);
	ck_assert(p.tout[0] && p.tgen[0]);         /* the score is the state itself: one stored leaf */
	ki_plan_free(&p);
	ki_free(f);
}
END_TEST

/* constructs no generator covers are compile errors at their positions (the runtime evaluates
** nothing) */
START_TEST(test_plan_rejects)
{
	reject(HDR "%0 = input K [token, chan] @3:5\n%1 = norm %0 chan [token] @3:7\n%2 = std %1 token [] @3:9\n"
	           "%3 = sub %1, %2 [token] @3:12\nscore %3\n" TAIL "when prefill\n",
	       "p.kir:3:9: error: token_map: std over token is not generated yet (over chan it is)");
	/* softmax over token of a [token] value is generated (issue 13, expected_attention); over chan not */
	reject(HDR "%0 = input K [token, chan] @3:5\n%1 = softmax %0 chan [token, chan] @4:2\n"
	           "%2 = norm %1 chan [token] @3:7\nscore %2\n" TAIL "when prefill\n",
	       "p.kir:4:2: error: token_map: softmax of a value that does not derive from x.Q:dot(x.K)");
	{
		KiPlan p;
		KiFn *f = plan(HDR "%0 = input K [token, chan] @3:5\n%1 = norm %0 chan [token] @3:7\n"
		               "%2 = softmax %1 token [token] @4:2\nscore %2\n" TAIL "when prefill\n", &p);
		ck_assert(p.tgen[2] == KI_GEN_START && p.tout[1]);     /* a loop of its own; its operand stored */
		ki_plan_free(&p);
		ki_free(f);
	}
	/* an out-axis value read by another loop (here: the score) is refused with its position */
	reject(HDR "weight w [out, chan] @2:3\n%0 = input K [token, chan] @3:5\n%1 = weight w [chan, out] @3:6\n"
	           "%2 = dot %0, %1 chan [token, out] @3:7\n%3 = sum %2 out [token] @3:8\n%4 = softmax %3 token [token] @3:9\n"
	           "%5 = mul %4, %2 [token, out] @4:2\n%6 = sum %5 out [token] @4:4\nscore %6\n" TAIL "when prefill\n",
	       "p.kir:3:7: error: token_map: a value with the out axis must be reduced over out in the loop");
	reject(HDR "%0 = input Q [group, obs, chan] @2:1\n%1 = input V [token, chan] @2:2\n"
	           "%2 = dot %0, %1 chan [group, obs, token] @2:3\n%3 = mean %2 obs [group, token] @2:4\n"
	           "%4 = mean %3 group [token] @2:5\nscore %4\nobs 4\n" TAIL "when prefill\n",
	       "p.kir:2:3: error: attn_score: the only [obs, token] product the kernels fuse is x.Q:dot(x.K, \"chan\")");
	reject(HDR "%0 = input Q [group, obs, chan] @2:1\n%1 = input K [token, chan] @2:2\n"
	           "%2 = dot %0, %1 chan [group, obs, token] @2:3\n%3 = softmax %2 token [group, obs, token] @2:4\n"
	           "%4 = rmax %3 obs [group, token] @5:6\n%5 = mean %4 group [token] @2:5\nscore %5\nobs 4\n" TAIL
	           "when prefill\n",
	       "p.kir:5:6: error: attn_score: the attention [obs, token] can only be reduced over obs (sum or mean) "
	       "here, not by rmax");
	reject(HDR "%0 = input Q [group, obs, chan] @2:1\n%1 = input K [token, chan] @2:2\n"
	           "%2 = dot %0, %1 chan [group, obs, token] @2:3\n%3 = exp %2 [group, obs, token] @7:8\n"
	           "%4 = sum %3 obs [group, token] @2:5\n%5 = mean %4 group [token] @2:6\nscore %5\nobs 4\n" TAIL
	           "when prefill\n",
	       "p.kir:7:8: error: attn_score: exp here is not generated yet");
	reject(HDR "%0 = input Q [group, obs, chan] @2:1\n%1 = mean %0 obs [group, chan] @3:3\n"
	           "%2 = mean %1 group [chan] @3:4\n%3 = input K [token, chan] @2:2\n"
	           "%4 = dot %3, %2 chan [token] @3:5\nscore %4\nobs 4\n" TAIL "when prefill\n",
	       "p.kir:3:3: error: the kernels read x.Q only as x.Q:dot(x.K, \"chan\") (the attention logits), "
	       "not through mean");
}
END_TEST

/* the descriptor: the header, the sections inside the blob and aligned, the run plan */
START_TEST(test_plan_descriptor)
{
	KiPlan p;
	KiFn *f = plan(snap, &p);
	kvcc_spec s = { KVCC_BF16, 64, 4, KVCC_TARGET_V3 };
	size_t n = 0;
	uint64_t cpu = kx_cpumask(&s, "");
	char *b = kx_desc(f, &p, &s, 8, cpu, 0x1234, &n);
	ck_assert_ptr_nonnull(b);
	const KaHdr *h = (const KaHdr *)b;
	ck_assert(!memcmp(h->magic, KA_MAGIC, 8) && h->format == KA_FORMAT && h->size == n && n % 16 == 0);
	ck_assert(h->dtype == KVCC_BF16 && h->head_dim == 64 && h->group == 4 && h->target == KVCC_TARGET_V3 &&
	          h->vec_width == 8 && h->cpu == cpu && h->kir_hash == 0x1234);
	ck_assert_int_eq(h->flags, KA_FATTN | KA_FCAUSAL | KA_FSCALE);
	ck_assert(h->nins == 9 && h->npar == 2 && h->nst == 0 && h->score == 8 && h->fsoft == 5 && h->when == 0);
	ck_assert(h->obs.kind == KA_PAR && h->obs.idx == 0 && h->obs.val == 8);
	ck_assert(h->keep_recent.kind == KA_PAR && h->keep_first.kind == KA_CON && h->keep_first.val == 0);
	ck_assert(h->chunk.kind == KA_CON && h->chunk.val == 1 && h->scope == KA_SCOPE_LAYER);
	ck_assert(h->sel_line == 14 && h->sel_col == 12);
	ck_assert(h->par % 8 == 0 && h->ins % 8 == 0 && h->ins + 9 * sizeof(KaIns) <= n && h->str < n);
	const char *str = b + h->str;
	const KaParam *par = (const KaParam *)(b + h->par);
	ck_assert_str_eq(str + h->name, "p");
	ck_assert_str_eq(str + h->src, "p.kir");
	ck_assert_str_eq(str + par[1].name, "kernel");
	ck_assert(par[1].def == 5);
	const KaIns *in = (const KaIns *)(b + h->ins);
	ck_assert(in[6].what == KA_ATTN_MEAN && (in[6].store & KA_SARENA) && in[6].axes == (AXM(AX_group) | AXM(AX_token)));
	ck_assert(in[7].what == KA_LOOP && in[7].arg == 7 && (in[7].store & KA_SARENA));
	ck_assert(in[8].what == KA_LOOP && in[8].arg == 8 && in[8].line == 8 && in[8].col == 5);
	ck_assert(in[0].what == KA_SKIP && !in[0].store && in[5].what == KA_SKIP);
	ck_assert(in[3].what == KA_LOOP && (in[3].store & KA_SARENA) && in[3].axes == 0);
	/* the loader's check: this descriptor passes; merge fields out of range (hash recomputed,
	** as a descriptor written by something else would be) are refused by name */
	kvcc_artifact a;
	memset(&a, 0, sizeof a);
	a.desc = (KaHdr *)b, a.desc_hash = ka_fnv(b, n, 0);
	const char *why = NULL;
	ck_assert_int_eq(kr_checkdesc(&a, &why), 0);
	KaHdr *w = (KaHdr *)b;
	int32_t *fld[] = { &w->merge, &w->merge, &w->mflags, &w->mthr, &w->nes, &w->nks };
	int32_t bad[] = { -1, KA_MNEXT + 1, 8, KA_TEMA + 1, h->nins + 1, -1 };
	for (int i = 0; i < 6; i++) {
		int32_t keep = *fld[i];
		*fld[i] = bad[i], a.desc_hash = ka_fnv(b, n, 0);
		ck_assert_int_eq(kr_checkdesc(&a, &why), -1);
		ck_assert_str_eq(why, "bad merge rule in the descriptor");
		*fld[i] = keep;
	}
	/* summary rows (KA_FORMAT 9): a drop / nearest rule with rows, a summary rule without them
	** or without its count and flag state rows */
	int32_t *sf[] = { &w->srows, &w->sflag, &w->merge };
	int32_t sb[] = { 2, 0, KA_MSUMMARY };
	for (int i = 0; i < 3; i++) {
		int32_t keep = *sf[i];
		*sf[i] = sb[i], a.desc_hash = ka_fnv(b, n, 0);
		ck_assert_int_eq(kr_checkdesc(&a, &why), -1);
		ck_assert_str_eq(why, "bad summary rows in the descriptor");
		*sf[i] = keep;
	}
	a.desc_hash = ka_fnv(b, n, 0);
	ck_assert_int_eq(kr_checkdesc(&a, &why), 0);
	free(b);
	ki_plan_free(&p);
	ki_free(f);
}
END_TEST

/* a head_mean barrier: its operand and result live in per-instance arenas */
START_TEST(test_plan_hmean)
{
	KiPlan p;
	KiFn *f = plan(HDR "%0 = input K [token, chan] @2:1\n%1 = norm %0 chan [token] @2:2\n"
	               "%2 = hmean %1 [token] @2:3\n%3 = add %2, %1 [token] @2:4\nscore %3\n" TAIL "when prefill\n", &p);
	kvcc_spec s = { KVCC_F32, 64, 1, KVCC_TARGET_SCALAR };
	size_t n;
	char *b = kx_desc(f, &p, &s, 1, 0, 0, &n);
	const KaHdr *h = (const KaHdr *)b;
	const KaIns *in = (const KaIns *)(b + h->ins);
	ck_assert(h->flags & KA_FHMEAN);
	ck_assert(in[2].what == KA_HMEAN && in[2].arg == 1 && (in[2].store & KA_SARENA) && (in[1].store & KA_SARENA));
	ck_assert(in[3].what == KA_LOOP && (in[3].store & KA_SARENA));
	free(b);
	ki_plan_free(&p);
	ki_free(f);
}
END_TEST

/* buffer sizes: a value's floats for G query heads, nobs queries, n tokens, head_dim d */
START_TEST(test_plan_layout)
{
	uint8_t g = AXM(AX_group), o = AXM(AX_obs), t = AXM(AX_token), c = AXM(AX_chan);
	ck_assert_uint_eq(kr_count(0, 4, 8, 100, 64), 1);
	ck_assert_uint_eq(kr_count(t, 4, 8, 100, 64), 100);
	ck_assert_uint_eq(kr_count(g | t, 4, 8, 100, 64), 400);
	ck_assert_uint_eq(kr_count(g | o | c, 4, 8, 100, 64), 4 * 8 * 64);
	ck_assert_uint_eq(kr_count(t | c, 4, 8, 100, 64), 6400);
	ck_assert_uint_eq(kr_count(g | o | t | c, 2, 3, 5, 8), 240);
	ck_assert_uint_eq(kr_count(g | t, 4, 0, 0, 64), 0);
	KaRef con = { KA_CON, 0, 3 }, par = { KA_PAR, 1, 7 }, none = { KA_NONE, 0, 0 };
	double pv[2] = { 10, 20 };
	ck_assert(kr_ref(&con, pv, 1) == 3 && kr_ref(&par, pv, 1) == 20 && kr_ref(&par, NULL, 1) == 7);
	ck_assert(kr_ref(&none, pv, 1) == 1);
	/* GPU split-KV decode and workspace (runtime/artifact.h): ceil(512 / instances) splits, at
	** most N / 256, at least 1; partials (nthreads / 32) * G * (d + 2) floats per split */
	ck_assert_int_eq(kvg_dec_splits(4096, 32), 16);
	ck_assert_int_eq(kvg_dec_splits(32768, 32), 16);
	ck_assert_int_eq(kvg_dec_splits(32768, 5), 103);
	ck_assert_int_eq(kvg_dec_splits(1000, 1), 3);
	ck_assert_int_eq(kvg_dec_splits(100, 1), 1);
	ck_assert_int_eq(kvg_dec_part(4, 128, 256), 8 * 4 * 130);
	KpCudaOut co = { .ws_coef = { 7, 3, 2, 1 }, .dec_part = 100, .has_decode = 1 };
	ck_assert_int_eq(kvg_ws_floats(&co, 10, 4, 2), 7 + 30 + 8 + 40 + 200);
	co.has_decode = 0;
	ck_assert_int_eq(kvg_ws_floats(&co, 10, 4, 2), 85);
}
END_TEST

/* CPU feature masks: names round trip, the levels nest, native = the host's */
START_TEST(test_plan_cpu)
{
	char buf[1024];
	uint64_t host = kr_cpu_host();
	ck_assert_uint_eq(kr_cpu_parse(kr_cpu_names(host, buf, sizeof buf)), host);
	ck_assert_uint_eq(kr_cpu_parse("+avx2,+fma,+nonsense"), (1ull << kr_cpu_bit("avx2", 4)) | (1ull << kr_cpu_bit("fma", 3)));
	kvcc_spec s = { KVCC_F32, 64, 1, KVCC_TARGET_V3 };
	uint64_t v3 = kx_cpumask(&s, "");
	s.target = KVCC_TARGET_V4;
	uint64_t v4 = kx_cpumask(&s, "");
	s.target = KVCC_TARGET_SCALAR;
	ck_assert_uint_eq(kx_cpumask(&s, ""), 0);
	ck_assert((v3 & v4) == v3 && v4 != v3 && (v3 >> kr_cpu_bit("avx2", 4) & 1) && (v4 >> kr_cpu_bit("evex512", 7) & 1));
	s.target = KVCC_TARGET_NATIVE;
	char *hf = kx_hostfeatures();
	ck_assert_uint_eq(kx_cpumask(&s, hf), host);
	free(hf);
	/* evex512 and crc32 follow avx512f and sse4.2 */
	ck_assert_int_eq(host >> kr_cpu_bit("evex512", 7) & 1, host >> kr_cpu_bit("avx512f", 7) & 1);
	ck_assert_int_eq(host >> kr_cpu_bit("crc32", 5) & 1, host >> kr_cpu_bit("sse4.2", 6) & 1);
}
END_TEST

Suite *plan_suite(void)
{
	Suite *s = suite_create("plan");
	TCase *tc = tcase_create("plan");
	tcase_add_test(tc, test_plan_snapkv);
	tcase_add_test(tc, test_plan_observe);
	tcase_add_test(tc, test_plan_rejects);
	tcase_add_test(tc, test_plan_descriptor);
	tcase_add_test(tc, test_plan_hmean);
	tcase_add_test(tc, test_plan_layout);
	tcase_add_test(tc, test_plan_cpu);
	suite_add_tcase(s, tc);
	return s;
}
