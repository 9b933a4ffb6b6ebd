/*
** The KIR verifier (compiler/verify.c): valid policies pass; each class of
** broken IR gives its one-line error at the policy position of the culprit.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "tests/unit/unit.h"

#define INS(i) KI_REF(RK_INS, i)
#define SNAP "policies/snapkv.lua:"
#define H2O "policies/h2o.lua:"

START_TEST(test_verify_samples)
{
	KiFn *(*make[])(void) = { t_snapkv, t_h2o, t_allops };
	for (size_t i = 0; i < sizeof make / sizeof make[0]; i++) {
		KiFn *f = make[i]();
		KiErr e = { 0 };
		ck_assert_msg(ki_verify(f, &e) == 0, "%s", e.msg);
		ck_assert(!e.set);
		/* and after a round trip through the text form */
		char *s = ki_print(f);
		KiFn *g = t_parse(s);
		ck_assert_msg(ki_verify(g, &e) == 0, "%s", e.msg);
		free(s);
		ki_free(g);
		ki_free(f);
	}
}
END_TEST

/* Snapkv: %0 input Q @7:12, %1 input K @7:22, %2 dot @7:18, %3 info scale
** @7:40, %4 mul @7:35, %5 softmax @7:13, %6 mean obs @8:10, %7 mean group
** @8:25, %8 avgpool @8:5; policy @12:8, select @14:12, merge @15:11,
** when @16:10. Each case breaks one thing. */
static void b_op(KiFn *f) { f->ins[4].op = 200; }
static void b_refrange(KiFn *f) { f->ins[4].arg[0] = INS(99); }
static void b_forward(KiFn *f) { f->ins[4].arg[0] = INS(6); }
static void b_self(KiFn *f) { f->ins[4].arg[1] = INS(4); }
static void b_kind(KiFn *f) { f->ins[4].arg[1] = KI_REF(5, 0); }
static void b_con(KiFn *f) { f->ins[4].arg[1] = KI_REF(RK_CON, 50); }
static void b_par(KiFn *f) { f->ins[8].arg[1] = KI_REF(RK_PAR, 7); }
static void b_nilidx(KiFn *f) { f->ins[5].arg[2] = KI_REF(RK_NIL, 3); }
static void b_nilarg(KiFn *f) { f->ins[4].arg[1] = KI_NIL; }
static void b_extra(KiFn *f) { f->ins[5].arg[1] = INS(0); }
static void b_axis(KiFn *f) { f->ins[4].axis = AX_token; }
static void b_noaxis(KiFn *f) { f->ins[6].axis = AX_NONE; }
static void b_headaxis(KiFn *f) { f->ins[6].axis = AX_head; }
static void b_aux(KiFn *f) { f->ins[0].aux = IN_NUM; }
static void b_auxmul(KiFn *f) { f->ins[4].aux = 1; }
static void b_auxinfo(KiFn *f) { f->ins[3].aux = INF_NUM; }
static void b_axes(KiFn *f) { f->ins[7].axes = 0; }
static void b_leafaxes(KiFn *f) { f->ins[1].axes = AXM(AX_token); }
static void b_rule(KiFn *f) { f->ins[6].axis = AX_chan; }
static void b_pool(KiFn *f) { f->ins[8].arg[1] = INS(7); }
static void b_noscore(KiFn *f) { f->score = KI_NIL; }
static void b_score(KiFn *f) { f->score = INS(6); }
static void b_scoreref(KiFn *f) { f->score = INS(9); }
static void b_obs(KiFn *f) { f->obs = INS(7); }
static void b_obsall(KiFn *f) { f->obs_all = 1; }
static void b_selins(KiFn *f) { f->sel.keep_first = INS(3); }
static void b_selscope(KiFn *f) { f->sel.scope = 7; }
static void b_selref(KiFn *f) { f->sel.beta = KI_REF(RK_CON, 40); }
static void b_merge(KiFn *f) { f->merge.kind = 9; }
static void b_decode(KiFn *f) { f->when.kind = WH_decode; }
static void b_prefill(KiFn *f) { f->when.every = f->sel.chunk; }
static void b_wkind(KiFn *f) { f->when.kind = 2; }
static void b_everyins(KiFn *f) { f->when.kind = WH_decode, f->when.every = INS(3); }
static void b_name(KiFn *f) { strcpy(f->name, "a\"b"); }
static void b_src(KiFn *f) { strcpy(f->src, "a\nb"); }
static void b_parname(KiFn *f) { strcpy(f->par[0].name, "two words"); }
static void b_nopos(KiFn *f) { f->ins[4].op = 200, f->ins[4].line = 0; }
static void b_tables(KiFn *f) { f->ncon = -1; }

/* H2O: %0 state acc @4:40, %1 attn @4:58, %2 sum group @4:64, %3 add @4:51,
** %4 state acc @5:40; policy @2:8, when @7:12. */
static void h_attn(KiFn *f) { f->score = INS(2); }
static void h_update(KiFn *f) { f->st[0].update = INS(1); }
static void h_updref(KiFn *f) { f->st[0].update = INS(5); }
static void h_stateaux(KiFn *f) { f->ins[0].aux = 1; }
static void h_stateaxes(KiFn *f) { f->ins[4].axes = 0; }
static void h_attnaxes(KiFn *f) { f->ins[1].axes = AXM(AX_token); }
static void h_statename(KiFn *f) { strcpy(f->st[0].name, "9lives"); }
static void h_attnobs(KiFn *f)
{
	KiRef r = t_ins(f, KO_rmax, t_ins(f, KO_sum, INS(1), KI_NIL, KI_NIL, AX_group, 0, 9, 3),
	                KI_NIL, KI_NIL, AX_token, 0, 9, 1);
	f->obs = r;
}

static const struct {
	KiFn *(*make)(void);
	void (*breakit)(KiFn *);
	const char *msg;
} cases[] = {
	{ t_snapkv, b_op, SNAP "7:35: error: instruction %4 has a bad op 200" },
	{ t_snapkv, b_refrange, SNAP "7:35: error: instruction %4 (mul) has a bad ref 0x20000063 (kind 1, index 99)" },
	{ t_snapkv, b_forward, SNAP "7:35: error: instruction %4 (mul) refers to %6, which is not an earlier instruction" },
	{ t_snapkv, b_self, SNAP "7:35: error: instruction %4 (mul) refers to %4, which is not an earlier instruction" },
	{ t_snapkv, b_kind, SNAP "7:35: error: instruction %4 (mul) has a bad ref 0xa0000000 (kind 5, index 0)" },
	{ t_snapkv, b_con, SNAP "7:35: error: instruction %4 (mul) has a bad ref 0x40000032 (kind 2, index 50)" },
	{ t_snapkv, b_par, SNAP "8:5: error: instruction %8 (avgpool) has a bad ref 0x60000007 (kind 3, index 7)" },
	{ t_snapkv, b_nilidx, SNAP "7:13: error: instruction %5 (softmax) has a bad ref 0x00000003 (kind 0, index 3)" },
	{ t_snapkv, b_nilarg, SNAP "7:35: error: instruction %4 (mul) takes 2 operands but has a nil one" },
	{ t_snapkv, b_extra, SNAP "7:13: error: instruction %5 (softmax) takes 1 operand but has more" },
	{ t_snapkv, b_axis, SNAP "7:35: error: instruction %4 (mul) takes no axis but has axis 2" },
	{ t_snapkv, b_noaxis, SNAP "8:10: error: instruction %6 (mean) needs a tensor axis, has none" },
	{ t_snapkv, b_headaxis, SNAP "8:10: error: instruction %6 (mean) needs a tensor axis, has head" },
	{ t_snapkv, b_aux, SNAP "7:12: error: instruction %0 (input) has aux 6 out of range (0 .. 5)" },
	{ t_snapkv, b_auxmul, SNAP "7:35: error: instruction %4 (mul) has aux 1 out of range (0 .. 0)" },
	{ t_snapkv, b_auxinfo, SNAP "7:40: error: instruction %3 (info) has aux 8 out of range (0 .. 7)" },
	{ t_snapkv, b_axes, SNAP "8:25: error: instruction %7 (mean) has result axes [] but its axis rule gives [token]" },
	{ t_snapkv, b_leafaxes, SNAP "7:22: error: instruction %1 (input) has result axes [token] but its axis rule gives [token, chan]" },
	{ t_snapkv, b_rule, SNAP "8:10: error: instruction %6 (mean): reduce over axis 'chan' but the operand has axes [group, obs, token]" },
	{ t_snapkv, b_pool, SNAP "8:5: error: instruction %8 (avgpool): the pooling kernel size must be a scalar" },
	{ t_snapkv, b_noscore, SNAP "12:8: error: policy 'snapkv' has no score" },
	{ t_snapkv, b_score, SNAP "12:8: error: the score must have axes within [token], it has [group, token]" },
	{ t_snapkv, b_scoreref, SNAP "12:8: error: the score has a bad ref 0x20000009 (kind 1, index 9)" },
	{ t_snapkv, b_obs, SNAP "12:8: error: obs must have axes [] (a scalar), it has [token]" },
	{ t_snapkv, b_obsall, SNAP "12:8: error: obs is both 'all' and a count" },
	{ t_snapkv, b_selins, SNAP "14:12: error: select keep_first must be a constant or a param, not %3" },
	{ t_snapkv, b_selscope, SNAP "14:12: error: select has a bad kind, scope or schedule (0, 7, 0)" },
	{ t_snapkv, b_selref, SNAP "14:12: error: select beta has a bad ref 0x40000028 (kind 2, index 40)" },
	{ t_snapkv, b_merge, SNAP "15:11: error: merge has a bad kind or field (9, 0, 0)" },
	{ t_snapkv, b_decode, SNAP "16:10: error: when decode needs every=N" },
	{ t_snapkv, b_prefill, SNAP "16:10: error: when prefill takes no every" },
	{ t_snapkv, b_wkind, SNAP "16:10: error: when has a bad kind 2" },
	{ t_snapkv, b_everyins, SNAP "16:10: error: when every must be a constant or a param, not %3" },
	{ t_snapkv, b_name, SNAP "12:8: error: policy and source names may not contain '\"' or a newline" },
	{ t_snapkv, b_src, "error: policy and source names may not contain '\"' or a newline" },
	{ t_snapkv, b_parname, SNAP "3:26: error: param name 'two words' is not an identifier" },
	{ t_snapkv, b_nopos, "policies/snapkv.lua: error: instruction %4 has a bad op 200" },
	{ t_snapkv, b_tables, SNAP "12:8: error: malformed policy tables" },
	{ t_h2o, h_attn, H2O "4:58: error: attn (decode attention) is only available in the observe hook, but it reaches the score or the merge rule" },
	{ t_h2o, h_attnobs, H2O "4:58: error: attn (decode attention) is only available in the observe hook, but it reaches the score or the merge rule" },
	{ t_h2o, h_update, H2O "2:8: error: the update of state 'acc' must have axes within [token], it has [group, token]" },
	{ t_h2o, h_updref, H2O "2:8: error: the update of state 'acc' has a bad ref 0x20000005 (kind 1, index 5)" },
	{ t_h2o, h_stateaux, H2O "4:40: error: instruction %0 (state) has aux 1 out of range (0 .. 0)" },
	{ t_h2o, h_stateaxes, H2O "5:40: error: instruction %4 (state) has result axes [] but its axis rule gives [token]" },
	{ t_h2o, h_attnaxes, H2O "4:58: error: instruction %1 (attn) has result axes [token] but its axis rule gives [group, token]" },
	{ t_h2o, h_statename, H2O "2:8: error: state name '9lives' is not an identifier" },
};

START_TEST(test_verify_catches)
{
	KiFn *f = cases[_i].make();
	KiErr e = { 0 };
	ck_assert_int_eq(ki_verify(f, &e), 0);
	cases[_i].breakit(f);
	ck_assert_int_eq(ki_verify(f, &e), -1);
	ck_assert_int_eq(e.set, 1);
	ck_assert_msg(strcmp(e.msg, cases[_i].msg) == 0, "case %d:\ngave   %s\nwanted %s", _i, e.msg,
	              cases[_i].msg);
	if (f->ncon < 0)
		f->ncon = 0;
	ki_free(f);
}
END_TEST

/* attn feeding a state update (not the score) is the observe hook: fine. */
START_TEST(test_verify_attn_in_observe)
{
	KiFn *f = t_h2o();
	KiErr e = { 0 };
	ck_assert_int_eq(f->ins[1].op, KO_attn);
	ck_assert_int_eq(ki_verify(f, &e), 0);
	/* a scalar score and a constant obs are fine too */
	f->score = ki_const(f, 1);
	f->obs = ki_const(f, 4);
	ck_assert_msg(ki_verify(f, &e) == 0, "%s", e.msg);
	ki_free(f);
}
END_TEST

/* Every op with its operands is accepted when built by the axis rules. */
START_TEST(test_verify_every_op)
{
	KiFn *f = t_allops();
	int seen[KO_NUM] = { 0 };
	for (int i = 0; i < f->nins; i++)
		seen[f->ins[i].op] = 1;
	for (int op = 0; op < KO_NUM; op++)
		ck_assert_msg(seen[op], "t_allops lacks %s", ki_opname(op));
	KiErr e = { 0 };
	ck_assert_msg(ki_verify(f, &e) == 0, "%s", e.msg);
	ki_free(f);
}
END_TEST

Suite *verify_suite(void)
{
	Suite *s = suite_create("verify");
	TCase *tc = tcase_create("valid");
	tcase_add_test(tc, test_verify_samples);
	tcase_add_test(tc, test_verify_attn_in_observe);
	tcase_add_test(tc, test_verify_every_op);
	suite_add_tcase(s, tc);
	tc = tcase_create("invalid");
	tcase_add_loop_test(tc, test_verify_catches, 0, (int)(sizeof cases / sizeof cases[0]));
	suite_add_tcase(s, tc);
	return s;
}
