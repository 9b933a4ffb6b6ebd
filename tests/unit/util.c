/*
** Helpers shared by the unit suites: hand-built sample policies and the
** print → parse → print round trip.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "tests/unit/unit.h"

KiRef t_ins(KiFn *f, int op, KiRef a, KiRef b, KiRef c, int axis, int aux, uint32_t line,
            uint32_t col)
{
	KiIns in;
	char why[200];
	memset(&in, 0, sizeof in);
	in.op = (uint8_t)op;
	in.arg[0] = a, in.arg[1] = b, in.arg[2] = c;
	in.axis = (uint8_t)(axis < 0 ? AX_NONE : axis);
	in.aux = (uint8_t)aux;
	in.line = line, in.col = col;
	switch (op) {
	case KO_input: in.axes = ki_inputaxes(aux); break;
	case KO_state:
	case KO_carry: in.axes = AXM(AX_token); break;
	case KO_weight: in.axes = ki_weightaxes(&f->w[aux]); break;
	case KO_attn: in.axes = AXM(AX_group) | AXM(AX_token); break;
	case KO_index: in.axes = AXM(axis); break;
	case KO_size:
	case KO_info: in.axes = 0; break;
	default:
		if (ki_resultaxes(f, op, in.arg, axis, &in.axes, why, sizeof why) != 0)
			ck_abort_msg("t_ins %s: %s", ki_opname(op), why);
	}
	return ki_emit(f, &in);
}

#define I(op, a, b, c, ax, aux, l, co) t_ins(f, KO_##op, a, b, c, ax, aux, l, co)
#define N KI_NIL

KiFn *t_snapkv(void)
{
	KiFn *f = ki_new("snapkv", "policies/snapkv.lua");
	f->line = 12, f->col = 8;
	KiRef window = KI_REF(RK_PAR, ki_addparam(f, "window", 64, 3, 26));
	KiRef kernel = KI_REF(RK_PAR, ki_addparam(f, "kernel", 5, 3, 40));
	KiRef q = I(input, N, N, N, -1, IN_Q, 7, 12);
	KiRef k = I(input, N, N, N, -1, IN_K, 7, 22);
	KiRef d = I(dot, q, k, N, AX_chan, 0, 7, 18);
	KiRef sc = I(info, N, N, N, -1, INF_scale, 7, 40);
	KiRef l = I(mul, d, sc, N, -1, 0, 7, 35);
	KiRef a = I(softmax, l, N, N, AX_token, 0, 7, 13);
	KiRef m = I(mean, a, N, N, AX_obs, 0, 8, 10);
	KiRef g = I(mean, m, N, N, AX_group, 0, 8, 25);
	f->score = I(avgpool, g, kernel, N, AX_token, 0, 8, 5);
	f->obs = window;
	f->sel.kind = SEL_topk;
	f->sel.keep_first = ki_const(f, 0);
	f->sel.keep_recent = window;
	f->sel.chunk = ki_const(f, 1);
	f->sel.beta = ki_const(f, 20);
	f->sel.line = 14, f->sel.col = 12;
	f->merge.line = 15, f->merge.col = 11;
	f->when.line = 16, f->when.col = 10;
	return f;
}

KiFn *t_h2o(void)
{
	KiFn *f = ki_new("h2o", "policies/h2o.lua");
	f->line = 2, f->col = 8;
	KiRef recent = KI_REF(RK_PAR, ki_addparam(f, "recent", 32, 1, 24));
	int acc = ki_addstate(f, "acc", 0);
	KiRef s = I(state, N, N, N, -1, acc, 4, 40);
	KiRef at = I(attn, N, N, N, -1, 0, 4, 58);
	KiRef sum = I(sum, at, N, N, AX_group, 0, 4, 64);
	f->st[acc].update = I(add, s, sum, N, -1, 0, 4, 51);
	f->score = I(state, N, N, N, -1, acc, 5, 40);
	f->sel.keep_first = ki_const(f, 4);
	f->sel.keep_recent = recent;
	f->sel.chunk = ki_const(f, 1);
	f->sel.beta = ki_const(f, 20);
	f->sel.line = 6, f->sel.col = 12;
	f->when.kind = WH_decode;
	f->when.every = ki_const(f, 1);
	f->when.line = 7, f->when.col = 12;
	return f;
}

KiFn *t_allops(void)
{
	KiFn *f = ki_new("all ops", "tests/unit/all.lua");
	f->line = 1, f->col = 1;
	KiRef kern = KI_REF(RK_PAR, ki_addparam(f, "kernel", 5, 2, 3));
	KiRef seed = KI_REF(RK_PAR, ki_addparam(f, "seed", -0.0, 2, 20));
	KiRef inf = KI_REF(RK_PAR, ki_addparam(f, "inf", 1e-310, 3, 1));
	int acc = ki_addstate(f, "acc", -1.5);
	ki_addstate(f, "nil", NAN);
	KiRef in[IN_NUM], inf_[INF_NUM];
	for (int i = 0; i < IN_NUM; i++)
		in[i] = I(input, N, N, N, -1, i, 10, (uint32_t)i + 1);
	for (int i = 0; i < INF_NUM; i++)
		inf_[i] = I(info, N, N, N, -1, i, 11, (uint32_t)i + 1);
	KiRef pos = in[IN_pos], K = in[IN_K];
	KiRef st = I(state, N, N, N, -1, acc, 12, 1);
	I(state, N, N, N, -1, 1, 12, 9);
	KiRef at = I(attn, N, N, N, -1, 0, 12, 2);
	I(index, N, N, N, AX_token, 0, 12, 3);
	I(index, N, N, N, AX_group, 0, 12, 4);
	I(size, N, N, N, AX_chan, 0, 12, 5);
	I(size, N, N, N, AX_obs, 0, 0, 0);
	KiRef r = I(rand, seed, N, N, -1, 0, 13, 1);
	static const int un[] = { KO_neg, KO_exp, KO_log, KO_sqrt, KO_abs };
	KiRef x = pos;
	for (int i = 0; i < 5; i++)
		x = t_ins(f, un[i], x, N, N, -1, 0, 14, (uint32_t)i + 1);
	static const double cons[] = { -0.0, 1e-310, 0.1, 1e300, NAN, INFINITY, -INFINITY,
	                               123456789012345.0, 1e15, -2.5e-7, 1.0 / 3, 4294967296.0 };
	static const int bin[] = { KO_add, KO_sub, KO_mul, KO_div, KO_pow, KO_max, KO_min, KO_lt,
	                           KO_le, KO_eq, KO_ne };
	for (int i = 0; i < 11; i++)
		x = t_ins(f, bin[i], i & 1 ? x : ki_const(f, cons[i]), i & 1 ? ki_const(f, cons[i]) : x,
		          N, -1, 0, 15, (uint32_t)i + 1);
	x = I(where, x, r, ki_const(f, cons[11]), -1, 0, 16, 1);
	x = I(add, x, inf, N, -1, 0, 16, 9);
	static const int red[] = { KO_sum, KO_mean, KO_rmax, KO_rmin, KO_norm, KO_std };
	KiRef sc = x;
	for (int i = 0; i < 6; i++)
		sc = I(add, sc, t_ins(f, red[i], K, N, N, AX_chan, 0, 17, (uint32_t)i + 1), N, -1, 0, 17, 30);
	KiRef d = I(dot, in[IN_Q], K, N, AX_chan, 0, 18, 1);
	KiRef s1 = I(softmax, d, N, N, AX_token, 0, 18, 2);
	KiRef s2 = I(softmaxnc, d, N, N, AX_token, 0, 18, 3);
	KiRef s3 = I(sub, I(mean, I(sum, s1, N, N, AX_obs, 0, 18, 4), N, N, AX_group, 0, 18, 5),
	             I(rmax, I(rmin, s2, N, N, AX_obs, 0, 18, 6), N, N, AX_group, 0, 18, 7), N, -1, 0, 18, 8);
	KiRef p1 = I(avgpool, s3, kern, N, AX_token, 0, 19, 1);
	KiRef p2 = I(maxpool, p1, ki_const(f, 3), N, AX_token, 0, 19, 2);
	KiRef h = I(hmean, p2, N, N, -1, 0, 19, 3);
	/* issue 13: weights (with an out axis), scans, segments, shifts, the new elementwise ops */
	KiWeight wd = { .name = "wo", .ndim = 4, .ax = { WA_layer, WA_out, WA_head, WA_chan }, .line = 4, .col = 2 };
	KiWeight wf = { .name = "fix", .ndim = 2, .ax = { WA_out, WA_group }, .size = 5 };
	int w0 = ki_addweight(f, &wd), w1 = ki_addweight(f, &wf);
	int g = ki_addstate(f, "gate", NAN);
	KiRef wv = I(sum, I(abs, I(dot, K, I(weight, N, N, N, -1, w0, 22, 1), N, AX_chan, 0, 22, 2), N, N, -1, 0,
	             22, 3), N, N, AX_out, 0, 22, 4);
	KiRef wfx = I(sum, I(sum, I(weight, N, N, N, -1, w1, 22, 5), N, N, AX_out, 0, 22, 6), N, N, AX_group, 0, 22, 7);
	static const int un2[] = { KO_sin, KO_cos, KO_floor, KO_rint };
	KiRef y = wv;
	for (int i = 0; i < 4; i++)
		y = t_ins(f, un2[i], y, N, N, -1, 0, 23, (uint32_t)i + 1);
	KiRef cr = I(carry, N, N, N, -1, g, 24, 1);
	KiRef step = I(add, I(mul, cr, inf, N, -1, 0, 24, 2), y, N, -1, 0, 24, 3);
	KiRef scan = I(scan, step, wfx, N, -1, g, 24, 4);
	f->st[g].update = scan;
	static const int seg[] = { KO_ssum, KO_smean, KO_smax, KO_smin, KO_srank };
	KiRef z = I(shift, I(shift, K, ki_const(f, -1), ki_const(f, 0), AX_chan, 0, 25, 1), kern, inf, AX_token, 0, 25, 2);
	for (int i = 0; i < 5; i++)
		z = t_ins(f, seg[i], z, kern, ki_const(f, INFINITY), AX_token, 0, 26, (uint32_t)i + 1);
	KiRef extra = I(add, scan, I(sum, z, N, N, AX_chan, 0, 27, 1), N, -1, 0, 27, 2);
	h = I(add, h, extra, N, -1, 0, 27, 3);
	f->score = I(mul, I(add, sc, h, N, -1, 0, 20, 1), inf_[INF_scale], N, -1, 0, 20, 2);
	f->st[acc].update = I(add, st, I(sum, at, N, N, AX_group, 0, 21, 1), N, -1, 0, 21, 2);
	f->obs_all = 1;
	f->sel.scope = SC_model;
	f->sel.sched = SCH_pyramid;
	f->sel.keep_first = kern;
	f->sel.keep_recent = ki_const(f, 2);   /* a count: an integer (1e-310 stays in the constants above) */
	f->sel.chunk = KI_NIL;
	f->sel.beta = ki_const(f, 0.25);
	f->when.kind = WH_decode;
	f->when.every = kern;
	/* a merge rule reading every pair op (next: the targets of e) */
	KiRef ek = I(erow, K, N, N, -1, 0, 22, 1), kk = I(krow, K, N, N, -1, 0, 22, 2);
	KiRef w = I(add, I(dot, ek, kk, N, AX_chan, 0, 22, 3), I(tmean, pos, N, N, -1, 0, 22, 4), N, -1, 0, 22, 5);
	f->merge.kind = MG_next;
	f->merge.weight = I(add, w, I(pinfo, N, N, N, -1, PI_ntargets, 22, 6), N, -1, 0, 22, 7);
	f->merge.self = I(mul, I(krow, pos, N, N, -1, 0, 23, 1), I(pinfo, N, N, N, -1, PI_absorbed, 23, 2),
	                  N, -1, 0, 23, 3);
	f->merge.m = kern;
	f->merge.update = MU_sum, f->merge.values = 1, f->merge.bias = 1;
	f->merge.line = 30, f->merge.col = 4294967295u;
	return f;
}

KiFn *t_parse(const char *text)
{
	KiErr e = { 0 };
	KiFn *f = ki_parse(text, "t.kir", &e);
	ck_assert_msg(f != NULL, "parse failed: %s\n%s", e.msg, text);
	ck_assert(!e.set);
	return f;
}

char *t_roundtrip(const KiFn *f)
{
	char *s1 = ki_print(f);
	KiFn *g = t_parse(s1);
	char *s2 = ki_print(g);
	ck_assert_str_eq(s1, s2);
	free(s2);
	ki_free(g);
	return s1;
}
