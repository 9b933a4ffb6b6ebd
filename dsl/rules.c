/*
** The rules of the builder library `kvcc` (doc/dsl.md "Selection", "When", "Merge"):
** selection rules (kv.topk, kv.threshold, kv.mass, kv.pyramid, kv.prefix, kv.dynamic),
** when rules and per-token state (kv.decode, kv.token_state), and merge rules (kv.nearest,
** kv.runs, kv.next_kept, kv.summary, kv.adaptive) with the pair expressions their
** functions build. Each rule is a Rule userdata that kv.policy reads (dsl/builder.c).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "dsl/build.h"

/* --- rules ---------------------------------------------------------------------- */

Rule *kd_newrule(lua_State *L, int kind, const char *name)
{
	kd_builder(L);
	Rule *r = lua_newuserdatauv(L, sizeof *r, 0);
	memset(r, 0, sizeof *r);
	r->kind = kind;
	kd_where(L, 1, name, &r->line, &r->col);
	luaL_setmetatable(L, RULE_MT);
	return r;
}

/* The value at the top of the stack as a param's ref (P.name); anything else is an error at field. */
static KiRef parfield(lua_State *L, const char *field)
{
	Expr *x = luaL_testudata(L, -1, EXPR_MT);
	if (!x || KI_RKIND(x->ref) != RK_PAR)
		return kd_raise(L, field, "%s must be a number or a param (P.name), got %s", field,
		                x ? "an expression" : luaL_typename(L, -1));
	return x->ref;
}

/* A select field: a non-negative integer constant or a param. */
KiRef kd_countfield(lua_State *L, int t, const char *field, double def, double max)
{
	kd_builder(L);
	lua_getfield(L, t, field);
	KiRef r;
	if (lua_isnil(L, -1))
		r = kd_kconst(L, def);
	else if (lua_type(L, -1) == LUA_TNUMBER) {
		double v = lua_tonumber(L, -1);
		if (!(v >= 0 && v == floor(v)))
			return kd_raise(L, field, "%s must be a non-negative integer, got %g", field, v);
		if (v > max)
			return kd_raise(L, field, "%s = %g is too large (at most %g)", field, v, max);
		r = kd_kconst(L, v);
	} else {
		r = parfield(L, field);
	}
	lua_pop(L, 1);
	return r;
}

void kd_checkfields(lua_State *L, int t, const char *what, const char *const *ok)
{
	lua_pushnil(L);
	while (lua_next(L, t)) {
		lua_pop(L, 1);
		const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
		int found = 0;
		for (int i = 0; k && ok[i]; i++)
			found |= strcmp(ok[i], k) == 0;
		if (!found) {
			char hint[300];
			kd_suggest(k, ok, "fields", hint, sizeof hint);
			kd_raise(L, k, "unknown %s field '%s'%s", what, k ? k : "(non-string key)", hint);
		}
	}
}

/* The rule's optional table of fields at 1 (none: all defaults), checked against ok. */
static void optfields(lua_State *L, const char *what, const char *const *ok)
{
	if (lua_isnoneornil(L, 1))
		lua_newtable(L);
	luaL_checktype(L, 1, LUA_TTABLE);
	kd_checkfields(L, 1, what, ok);
}

/* A select value field (tau, p, floor): a number in lo..hi or a param; nil when absent. */
static KiRef valfield(lua_State *L, int t, const char *field, double lo, double hi)
{
	lua_getfield(L, t, field);
	KiRef r = KI_NIL;
	if (lua_type(L, -1) == LUA_TNUMBER) {
		double v = lua_tonumber(L, -1);
		if (!(v >= lo && v <= hi))
			return kd_raise(L, field, "%s must be in %g..%g, got %g", field, lo, hi, v);
		r = kd_kconst(L, v);
	} else if (!lua_isnil(L, -1)) {
		r = parfield(L, field);
	}
	lua_pop(L, 1);
	return r;
}

/*
** The selection rules share their fields:
**   kv.topk      { keep_first, keep_recent, scope, chunk, schedule, floor, keep }
**   kv.threshold { tau, keep_first, keep_recent, scope, chunk, cap, keep }
**   kv.mass      { p, keep_first, keep_recent, scope, chunk, cap, keep }
** keep = function(x) ... end (a scalar per (layer, head)) is called when the
** policy is built, after score; the function waits in the rule's user value.
*/
static int selrule(lua_State *L, int kind, const char *name, const char *const *ok)
{
	KdState *S = kd_state(L);
	if (lua_isnoneornil(L, 1))
		lua_newtable(L);
	if (!lua_istable(L, 1))
		return kd_raise(L, name, "kvcc.%s expects a table of options, e.g. kv.%s { keep_recent = P.window }",
		                name, name);
	kd_checkfields(L, 1, name, ok);
	KiSelect sel;
	memset(&sel, 0, sizeof sel);
	sel.kind = (uint8_t)kind;
	sel.keep_first = kd_countfield(L, 1, "keep_first", 0, MAX_TOKENS);
	sel.keep_recent = kd_countfield(L, 1, "keep_recent", 0, MAX_TOKENS);
	sel.chunk = kd_countfield(L, 1, "chunk", 1, 65536);
	if (KI_RKIND(sel.chunk) == RK_CON && S->f->con[KI_RIDX(sel.chunk)] < 1)
		return kd_raise(L, "chunk", "chunk must be at least 1");
	sel.beta = kd_kconst(L, 20);
	if (kind == SEL_threshold && !(sel.tau = valfield(L, 1, "tau", -HUGE_VAL, HUGE_VAL)))
		return kd_raise(L, name, "kvcc.threshold needs tau = <number or param>");
	if (kind == SEL_mass && !(sel.mass = valfield(L, 1, "p", -HUGE_VAL, HUGE_VAL)))
		return kd_raise(L, name, "kvcc.mass needs p = <number or param> (the mass to keep, 0..1)");
	if (kind == SEL_topk)
		sel.floor = valfield(L, 1, "floor", 0, 1);
	lua_getfield(L, 1, "cap");
	if (!lua_isnil(L, -1)) {
		if (!lua_isboolean(L, -1))
			return kd_raise(L, "cap", "cap must be true or false");
		sel.nocap = !lua_toboolean(L, -1);
	}
	lua_pop(L, 1);
	lua_getfield(L, 1, "scope");
	if (!lua_isnil(L, -1)) {
		const char *s = lua_tostring(L, -1);
		if (!s || lua_type(L, -1) != LUA_TSTRING)
			return kd_raise(L, "scope", "scope must be \"head\", \"layer\" or \"model\"");
		if (strcmp(s, "head") == 0)
			sel.scope = SC_head;
		else if (strcmp(s, "layer") == 0)
			sel.scope = SC_layer;
		else if (strcmp(s, "model") == 0)
			sel.scope = SC_model;
		else
			return kd_raise(L, "scope", "unknown scope '%s' (head, layer or model)", s);
	}
	lua_pop(L, 1);
	lua_getfield(L, 1, "schedule");
	if (!lua_isnil(L, -1)) {
		Rule *r = luaL_testudata(L, -1, RULE_MT);
		if (!r || (r->kind != RULE_pyramid && r->kind != RULE_sched))
			return kd_raise(L, "schedule", "schedule must be kvcc.pyramid { beta = ... }, kvcc.prefix { ... } "
			                "or kvcc.dynamic { ... }");
		sel.sched = r->sel.sched ? r->sel.sched : SCH_pyramid;
		sel.beta = r->sel.beta ? r->sel.beta : sel.beta;
		sel.sa = r->sel.sa, sel.sb = r->sel.sb;
	}
	lua_pop(L, 1);
	if (sel.floor && sel.scope != SC_layer)
		return kd_raise(L, "floor", "floor (AdaKV's per-head share) needs scope = \"layer\"");
	lua_getfield(L, 1, "keep");
	int haskeep = !lua_isnil(L, -1);
	if (haskeep && !lua_isfunction(L, -1))
		return kd_raise(L, "keep", "keep must be a function(x) returning the count this (layer, head) keeps");
	Rule *r = lua_newuserdatauv(L, sizeof *r, 1);
	memset(r, 0, sizeof *r);
	r->kind = RULE_topk;
	kd_where(L, 1, name, &r->line, &r->col);
	luaL_setmetatable(L, RULE_MT);
	lua_rotate(L, -2, 1);          /* the keep function (or nil) into the user value */
	lua_setiuservalue(L, -2, 1);
	sel.line = r->line, sel.col = r->col;
	r->sel = sel;
	return 1;
}

/* kv.topk { keep_first = 0, keep_recent = 0, scope = "head", chunk = 1, schedule = nil,
**           floor = nil, keep = nil } */
static int l_topk(lua_State *L)
{
	static const char *const ok[] = { "keep_first", "keep_recent", "scope", "chunk", "schedule",
	                                   "floor", "keep", NULL };
	return selrule(L, SEL_topk, "topk", ok);
}

/* kv.threshold { tau = ..., keep_first, keep_recent, scope, chunk, cap = true, keep = nil } */
static int l_threshold(lua_State *L)
{
	static const char *const ok[] = { "tau", "keep_first", "keep_recent", "scope", "chunk", "cap", "keep", NULL };
	return selrule(L, SEL_threshold, "threshold", ok);
}

/* kv.mass { p = ..., keep_first, keep_recent, scope, chunk, cap = true, keep = nil } */
static int l_mass(lua_State *L)
{
	static const char *const ok[] = { "p", "keep_first", "keep_recent", "scope", "chunk", "cap", "keep", NULL };
	return selrule(L, SEL_mass, "mass", ok);
}

/* kv.pyramid { beta = 20 } — PyramidKV's per-layer budget schedule */
static int l_pyramid(lua_State *L)
{
	static const char *const ok[] = { "beta", NULL };
	optfields(L, "pyramid", ok);
	KiRef beta = kd_countfield(L, 1, "beta", 20, 1e6);
	Rule *r = kd_newrule(L, RULE_pyramid, "pyramid");
	r->sel.beta = beta;
	return 1;
}

/* kv.prefix { tol = 5, iters = 200 } — PrefixKV's shared prefix-mass bisection */
static int l_prefix(lua_State *L)
{
	static const char *const ok[] = { "tol", "iters", NULL };
	optfields(L, "prefix", ok);
	KiRef tol = kd_countfield(L, 1, "tol", 5, 1e9), it = kd_countfield(L, 1, "iters", 200, 1e4);
	Rule *r = kd_newrule(L, RULE_sched, "prefix");
	r->sel.sched = SCH_prefix, r->sel.sa = tol, r->sel.sb = it;
	return 1;
}

/* kv.dynamic { ratio_max = 10, every = 4 } — DynamicKV's per-layer shares */
static int l_dynamic(lua_State *L)
{
	static const char *const ok[] = { "ratio_max", "every", NULL };
	optfields(L, "dynamic", ok);
	KiRef rm = kd_countfield(L, 1, "ratio_max", 10, 1e6), ev = kd_countfield(L, 1, "every", 4, 1e6);
	if (KI_RKIND(ev) == RK_CON && kd_state(L)->f->con[KI_RIDX(ev)] < 1)
		return kd_raise(L, "every", "every must be at least 1");
	Rule *r = kd_newrule(L, RULE_sched, "dynamic");
	r->sel.sched = SCH_dynamic, r->sel.sa = rm, r->sel.sb = ev;
	return 1;
}

/* kv.decode { every = 1 } */
static int l_decode(lua_State *L)
{
	static const char *const ok[] = { "every", NULL };
	optfields(L, "decode", ok);
	KiRef every = kd_countfield(L, 1, "every", 1, 1e9);
	if (KI_RKIND(every) == RK_CON && kd_state(L)->f->con[KI_RIDX(every)] < 1)
		return kd_raise(L, "every", "every must be at least 1");
	Rule *r = kd_newrule(L, RULE_decode, "decode");
	r->every = every;
	return 1;
}

/* kv.token_state(init) */
static int l_token_state(lua_State *L)
{
	double init = lua_isnoneornil(L, 1) ? 0 : luaL_checknumber(L, 1);
	Rule *r = kd_newrule(L, RULE_state, "token_state");
	r->init = init;
	return 1;
}

/* --- merge rules (doc/dsl.md "Merge") ----------------------------------------------------
**
**   merge = kv.nearest { sim = function(e, k) ... end, threshold = P.thr,
**                        weight = function(e, k, m) return m.sim end }
**
** A merge rule's functions run when the policy is built, after the score: `e` and `k`
** are the two rows of a pair (evicted, kept), `m` what the rule knows about it. What
** they return is a pair expression (KIR erow / krow / tmean / pinfo and ops on them);
** the verifier checks what each may read. */

/* the rule's functions, as user values of its userdata */
enum { MFN_sim = 1, MFN_thr, MFN_weight, MFN_self, MFN_NUM = MFN_self };

static Rule *newmerge(lua_State *L, int kind, const char *name)
{
	Rule *r = lua_newuserdatauv(L, sizeof *r, MFN_NUM);
	memset(r, 0, sizeof *r);
	r->kind = RULE_merge;
	kd_where(L, 1, name, &r->line, &r->col);
	r->mg.kind = (uint8_t)kind;
	r->mg.line = r->line, r->mg.col = r->col;
	luaL_setmetatable(L, RULE_MT);
	return r;
}

/* A boolean field (nil: def). */
static int boolfield(lua_State *L, int t, const char *field, int def)
{
	lua_getfield(L, t, field);
	int v = def;
	if (lua_isboolean(L, -1))
		v = lua_toboolean(L, -1);
	else if (!lua_isnil(L, -1))
		return kd_raise(L, field, "%s must be true or false, got %s", field, luaL_typename(L, -1));
	lua_pop(L, 1);
	return v;
}

/* A weight or threshold field: nil (def, or KI_NIL when def is NaN), a number, a param,
** or a function kept as user value `uv` of the rule at `ur` (the ref is set when the
** policy is built). Returns 1 when it is a function. */
static int fnfield(lua_State *L, int t, int ur, const char *field, int uv, double def, KiRef *out)
{
	lua_getfield(L, t, field);
	*out = KI_NIL;
	if (lua_isnil(L, -1)) {
		if (!isnan(def))
			*out = kd_kconst(L, def);
	} else if (lua_type(L, -1) == LUA_TNUMBER) {
		*out = kd_kconst(L, lua_tonumber(L, -1));
	} else if (lua_isfunction(L, -1)) {
		lua_pushvalue(L, -1);
		lua_setiuservalue(L, ur, uv);
		lua_pop(L, 1);
		return 1;
	} else {
		Expr *x = luaL_testudata(L, -1, EXPR_MT);
		if (!x || KI_RKIND(x->ref) != RK_PAR)
			return kd_raise(L, field, "%s must be a number, a param (P.name) or a function, got %s",
			                field, x ? "an expression (build it inside a function)" : luaL_typename(L, -1));
		*out = x->ref;
	}
	lua_pop(L, 1);
	return 0;
}

/* The fields every rule with an update shares: weight, self_weight, keys, values,
** update, count_bias. */
static void updatefields(lua_State *L, int t, int ur, Rule *r)
{
	fnfield(L, t, ur, "weight", MFN_weight, 1, &r->mg.weight);
	fnfield(L, t, ur, "self_weight", MFN_self, 1, &r->mg.self);
	r->mg.keys = (uint8_t)boolfield(L, t, "keys", 1);
	r->mg.values = (uint8_t)boolfield(L, t, "values", 1);
	r->mg.bias = (uint8_t)boolfield(L, t, "count_bias", 0);
	lua_getfield(L, t, "update");
	if (!lua_isnil(L, -1)) {
		const char *u = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
		if (strcmp(u, "mean") && strcmp(u, "sum"))
			kd_raise(L, "update", "update must be \"mean\" (the weighted mean) or \"sum\" "
			         "(X_k' = w_k X_k + sum of w_e X_e)");
		r->mg.update = strcmp(u, "sum") ? MU_mean : MU_sum;
	}
	lua_pop(L, 1);
}

/* sim and threshold of nearest and runs */
static void simfields(lua_State *L, int t, int ur, Rule *r)
{
	lua_getfield(L, t, "sim");
	if (!lua_isnil(L, -1) && !lua_isfunction(L, -1))
		kd_raise(L, "sim", "sim must be a function(e, k) returning the similarity of two rows");
	lua_setiuservalue(L, ur, MFN_sim);
	lua_getfield(L, t, "threshold");
	Rule *a = luaL_testudata(L, -1, RULE_MT);
	lua_pop(L, 1);
	if (a && a->kind == RULE_adaptive) {
		r->mg.thr = MT_adaptive;
		r->mg.beta = a->mg.beta;
		return;
	}
	int fn = fnfield(L, t, ur, "threshold", MFN_thr, NAN, &r->mg.threshold);
	r->mg.thr = fn || r->mg.threshold ? MT_value : MT_none;
}

/* kv.nearest { sim, threshold, weight, self_weight, keys, values, update, count_bias } */
static int l_nearest(lua_State *L)
{
	static const char *const ok[] = { "sim", "threshold", "weight", "self_weight", "keys", "values",
	                                  "update", "count_bias", NULL };
	if (lua_isnoneornil(L, 1))
		lua_settop(L, 0), lua_newtable(L);
	if (!lua_istable(L, 1))
		return kd_raise(L, "nearest", "kvcc.nearest expects a table of options, e.g. kv.nearest { weight = 1 }");
	kd_checkfields(L, 1, "nearest", ok);
	Rule *r = newmerge(L, MG_nearest, "nearest");
	int ur = lua_gettop(L);
	simfields(L, 1, ur, r);
	updatefields(L, 1, ur, r);
	lua_settop(L, ur);
	return 1;
}

/* kv.runs { sim, threshold, weight, ... }: KVMerger's runs of consecutive similar tokens */
static int l_runs(lua_State *L)
{
	static const char *const ok[] = { "sim", "threshold", "weight", "self_weight", "keys", "values",
	                                  "update", "count_bias", NULL };
	if (!lua_istable(L, 1))
		return kd_raise(L, "runs", "kvcc.runs expects a table of options, e.g. kv.runs { threshold = P.thr }");
	kd_checkfields(L, 1, "runs", ok);
	Rule *r = newmerge(L, MG_runs, "runs");
	int ur = lua_gettop(L);
	simfields(L, 1, ur, r);
	if (r->mg.thr != MT_value)
		return kd_raise(L, "runs", "kvcc.runs needs a threshold (a number, a param or a function(e, k)): "
		                "tokens i and i+1 form one run when their similarity reaches it");
	updatefields(L, 1, ur, r);
	lua_settop(L, ur);
	return 1;
}

/* kv.next_kept { m = 32, weight, ... }: CaM's next m kept tokens */
static int l_next_kept(lua_State *L)
{
	static const char *const ok[] = { "m", "weight", "self_weight", "keys", "values", "update",
	                                  "count_bias", NULL };
	if (!lua_istable(L, 1))
		return kd_raise(L, "next_kept", "kvcc.next_kept expects a table of options, e.g. kv.next_kept { m = P.m }");
	kd_checkfields(L, 1, "next_kept", ok);
	KiRef m = kd_countfield(L, 1, "m", 1, 1e9);
	if (KI_RKIND(m) == RK_CON && kd_state(L)->f->con[KI_RIDX(m)] < 1)
		return kd_raise(L, "m", "m must be at least 1");
	Rule *r = newmerge(L, MG_next, "next_kept");
	int ur = lua_gettop(L);
	r->mg.m = m;
	updatefields(L, 1, ur, r);
	lua_settop(L, ur);
	return 1;
}

/* kv.summary { rows = 1, iters = 1, count_bias = false }: C summary rows from the evicted
** tokens (their mean for C = 1, k-means centroids otherwise) */
static int l_summary(lua_State *L)
{
	static const char *const ok[] = { "rows", "iters", "count_bias", NULL };
	KdState *S = kd_state(L);
	if (lua_isnoneornil(L, 1))
		lua_settop(L, 0), lua_newtable(L);
	if (!lua_istable(L, 1))
		return kd_raise(L, "summary", "kvcc.summary expects a table of options, e.g. kv.summary { rows = 1 }");
	kd_checkfields(L, 1, "summary", ok);
	KiRef rows = kd_countfield(L, 1, "rows", 1, 4096), iters = kd_countfield(L, 1, "iters", 1, 1000);
	if (KI_RKIND(rows) != RK_CON)
		return kd_raise(L, "rows", "rows must be a number, not a param (the summary rows are part "
		                "of the cache layout)");
	if (S->f->con[KI_RIDX(rows)] < 1)
		return kd_raise(L, "rows", "rows must be at least 1");
	if (KI_RKIND(iters) != RK_CON || S->f->con[KI_RIDX(iters)] < 1)
		return kd_raise(L, "iters", "iters must be a number in 1..1000 (Lloyd iterations), not a param");
	int bias = boolfield(L, 1, "count_bias", 0);
	Rule *r = newmerge(L, MG_summary, "summary");
	r->mg.rows = rows, r->mg.iters = iters, r->mg.bias = (uint8_t)bias;
	return 1;
}

/* kv.adaptive { beta = 0 }: the threshold tau = beta tau' + (1 - beta) (mean of this
** compression's maximum similarities); beta = 0 is the mean itself (LOOK-M), D2O uses an EMA */
static int l_adaptive(lua_State *L)
{
	static const char *const ok[] = { "beta", NULL };
	if (lua_isnoneornil(L, 1))
		lua_settop(L, 0), lua_newtable(L);
	if (!lua_istable(L, 1))
		return kd_raise(L, "adaptive", "kvcc.adaptive expects a table, e.g. kv.adaptive { beta = 0.9 }");
	kd_checkfields(L, 1, "adaptive", ok);
	KiRef beta;
	lua_getfield(L, 1, "beta");
	if (lua_isnil(L, -1))
		beta = kd_kconst(L, 0);
	else if (lua_type(L, -1) == LUA_TNUMBER) {
		double b = lua_tonumber(L, -1);
		if (!(b >= 0 && b <= 1))
			return kd_raise(L, "beta", "beta must be in [0, 1], got %g", b);
		beta = kd_kconst(L, b);
	} else {
		Expr *x = luaL_testudata(L, -1, EXPR_MT);
		if (!x || KI_RKIND(x->ref) != RK_PAR)
			return kd_raise(L, "beta", "beta must be a number or a param (P.name)");
		beta = x->ref;
	}
	lua_pop(L, 1);
	Rule *r = kd_newrule(L, RULE_adaptive, "adaptive");
	r->mg.beta = beta;
	return 1;
}

/* -- the pair context: e, k (rows) and m (what the rule knows) -- */

/* Emit a pair instruction; `line` 0 keeps the caller's position. */
static KiRef pairemit(lua_State *L, const char *name, int op, KiRef a, int aux, uint32_t line, uint32_t col)
{
	KdState *S = kd_state(L);
	KiRef r = kd_emit(L, name, op, a, KI_NIL, KI_NIL, -1, aux, 0);
	if (line)
		S->f->ins[KI_RIDX(r)].line = line, S->f->ins[KI_RIDX(r)].col = col;
	return r;
}

/* e:at(v) / k:at(v): an ordinary [token] value read at the row's token */
static int row_at(lua_State *L)
{
	int side = (int)lua_tointeger(L, lua_upvalueindex(1));
	int i = lua_istable(L, 1) && lua_gettop(L) >= 2 ? 2 : 1;   /* e:at(v) or e.at(v) */
	KiRef v = kd_toref(L, i, "at");
	if (!(ki_refaxes(kd_state(L)->f, v) & AXM(AX_token)))
		return kd_raise(L, "at", "at reads a value at the row's token, so it needs a value with the "
		                "token axis");
	kd_pushexpr(L, pairemit(L, "at", side ? KO_krow : KO_erow, v, 0, 0, 0));
	return 1;
}

/* e.K, e.V, e.pos, e.score, e.count, e.<state>, e:at(v) */
static int row_index(lua_State *L)
{
	KdState *S = kd_state(L);
	int side = (int)lua_tointeger(L, lua_upvalueindex(1));
	const char *k = lua_tostring(L, 2);
	int op = side ? KO_krow : KO_erow, in;
	if (!k)
		return kd_raise(L, NULL, "rows are indexed by names (e.K, e.V, e.pos, e.score, e.count)");
	if (!strcmp(k, "at")) {
		lua_pushinteger(L, side);
		lua_pushcclosure(L, row_at, 1);
		return 1;
	}
	if (!strcmp(k, "count")) {
		kd_pushexpr(L, pairemit(L, k, KO_pinfo, KI_NIL, side ? PI_kcount : PI_ecount, 0, 0));
		return 1;
	}
	if (!strcmp(k, "score")) {
		kd_pushexpr(L, pairemit(L, k, op, S->f->score, 0, 0, 0));
		return 1;
	}
	if ((in = ki_inputbyname(k, strlen(k))) == IN_K || in == IN_V || in == IN_pos) {
		KiRef x = kd_emit(L, k, KO_input, KI_NIL, KI_NIL, KI_NIL, -1, in, ki_inputaxes(in));
		kd_pushexpr(L, pairemit(L, k, op, x, 0, 0, 0));
		return 1;
	}
	int st = ki_findstate(S->f, k);
	if (st >= 0) {
		KiRef x = kd_emit(L, k, KO_state, KI_NIL, KI_NIL, KI_NIL, -1, st, AXM(AX_token));
		kd_pushexpr(L, pairemit(L, k, op, x, 0, 0, 0));
		return 1;
	}
	return kd_raise(L, k, "a merge row has no field '%s' (K, V, pos, score, count, a state's name, "
	                "or :at(value))", k);
}

/* m:tmean(v): mean of an ordinary [token] value over e's targets (next_kept) */
static int m_tmean(lua_State *L)
{
	int i = lua_istable(L, 1) && lua_gettop(L) >= 2 ? 2 : 1;
	KiRef v = kd_toref(L, i, "tmean");
	if (!(ki_refaxes(kd_state(L)->f, v) & AXM(AX_token)))
		return kd_raise(L, "tmean", "tmean averages a [token] value over the targets of e");
	kd_pushexpr(L, pairemit(L, "tmean", KO_tmean, v, 0, 0, 0));
	return 1;
}

/* m.sim, m.absorbed, m.ntargets, m:tmean(v), m.x (the inputs, for ordinary values) */
static int minfo_index(lua_State *L)
{
	const char *k = lua_tostring(L, 2);
	int pi = k ? ki_pinfobyname(k, strlen(k)) : -1;
	if (pi == PI_sim || pi == PI_absorbed || pi == PI_ntargets) {
		kd_pushexpr(L, pairemit(L, k, KO_pinfo, KI_NIL, pi, 0, 0));
		return 1;
	}
	if (k && !strcmp(k, "tmean")) {
		lua_pushcfunction(L, m_tmean);
		return 1;
	}
	if (k && !strcmp(k, "x")) {
		kd_pushinputs(L);
		return 1;
	}
	return kd_raise(L, k, "the merge info has no field '%s' (sim, absorbed, ntargets, tmean, x)",
	                k ? k : "?");
}

static int pair_newindex(lua_State *L)
{
	return kd_raise(L, lua_tostring(L, 2), "merge rows and info are read-only");
}

static void pushproxy(lua_State *L, lua_CFunction index, int side)
{
	lua_newtable(L);
	lua_newtable(L);
	lua_pushinteger(L, side);
	lua_pushcclosure(L, index, 1);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, pair_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_setmetatable(L, -2);
}

/* Call the rule's function uv (at ur) with the proxies named in `args` ("ek", "ekm",
** "km") and return its result as a ref; what: for messages. */
static KiRef callpair(lua_State *L, int ur, int uv, const char *args, const char *what, const Rule *r)
{
	lua_getiuservalue(L, ur, uv);
	for (const char *a = args; *a; a++)
		pushproxy(L, *a == 'm' ? minfo_index : row_index, *a == 'k');
	lua_call(L, (int)strlen(args), 1);
	KiRef x;
	if (lua_type(L, -1) == LUA_TNUMBER)
		x = kd_kconst(L, lua_tonumber(L, -1));
	else {
		Expr *e = luaL_testudata(L, -1, EXPR_MT);
		if (!e)
			return kd_raiseat(L, r->line, r->col, "the %s function must return a number or a kvcc "
			                  "expression, got %s", what, luaL_typename(L, -1));
		x = e->ref;
	}
	lua_pop(L, 1);
	return x;
}

/* The default similarity: cosine of the keys of the two rows (kv.cosine's form). */
static KiRef defaultsim(lua_State *L, const Rule *r)
{
	KdState *S = kd_state(L);
	uint32_t ln = r->line, cl = r->col;
	KiRef K = pairemit(L, "sim", KO_input, KI_NIL, IN_K, ln, cl);
	S->f->ins[KI_RIDX(K)].axes = ki_inputaxes(IN_K);
	KiRef a = pairemit(L, "sim", KO_erow, K, 0, ln, cl), b = pairemit(L, "sim", KO_krow, K, 0, ln, cl);
	KiRef d = kd_emit(L, "sim", KO_dot, a, b, KI_NIL, AX_chan, 0, 0);
	KiRef na = kd_emit(L, "sim", KO_norm, a, KI_NIL, KI_NIL, AX_chan, 0, 0);
	KiRef nb = kd_emit(L, "sim", KO_norm, b, KI_NIL, KI_NIL, AX_chan, 0, 0);
	KiRef p = kd_emit(L, "sim", KO_mul, na, nb, KI_NIL, -1, 0, 0);
	KiRef mx = kd_emit(L, "sim", KO_max, p, kd_kconst(L, 1e-8), KI_NIL, -1, 0, 0);
	KiRef q = kd_emit(L, "sim", KO_div, d, mx, KI_NIL, -1, 0, 0);
	for (int i = KI_RIDX(d); i <= KI_RIDX(q); i++)
		S->f->ins[i].line = ln, S->f->ins[i].col = cl;
	return q;
}

/* A threshold reading a state that observe never updates is a constant: say so. */
static void thrstate(lua_State *L, KiRef r)
{
	const KiFn *f = kd_state(L)->f;
	for (int i = KI_RKIND(r) == RK_INS ? KI_RIDX(r) : -1; i >= 0; i--) {
		const KiIns *in = &f->ins[i];
		if (in->op == KO_state && in->aux < f->nst && !f->st[in->aux].update)
			kd_raiseat(L, in->line, in->col, "the merge threshold reads state '%s', which is never "
			           "updated (assign st.%s = ... in observe, or use a param)", f->st[in->aux].name,
			           f->st[in->aux].name);
	}
}

/* policy { merge = ... } (the value at idx): the rule into f->merge, its functions
** called now that the score exists. */
void kd_buildmerge(lua_State *L, int idx)
{
	KdState *S = kd_state(L);
	KiFn *f = S->f;
	Rule *r = luaL_testudata(L, idx, RULE_MT);
	memset(&f->merge, 0, sizeof f->merge);
	if (lua_isnil(L, idx) || (r && r->kind == RULE_drop)) {
		f->merge.kind = MG_drop;
		if (r)
			f->merge.line = r->line, f->merge.col = r->col;
		return;
	}
	if (!r || r->kind != RULE_merge)
		kd_raisefield(L, "merge", "merge must be a merge rule (kvcc.drop, kvcc.nearest, kvcc.next_kept, "
		           "kvcc.runs or kvcc.summary)");
	KiMerge mg = r->mg;
	int hassim = mg.kind == MG_nearest || mg.kind == MG_runs;
	if (hassim) {
		lua_getiuservalue(L, idx, MFN_sim);
		int fn = lua_isfunction(L, -1);
		lua_pop(L, 1);
		mg.sim = fn ? callpair(L, idx, MFN_sim, "ek", "sim", r) : defaultsim(L, r);
		lua_getiuservalue(L, idx, MFN_thr);
		fn = lua_isfunction(L, -1);
		lua_pop(L, 1);
		if (fn) {
			mg.threshold = callpair(L, idx, MFN_thr, "ek", "threshold", r);
			thrstate(L, mg.threshold);
		}
	}
	if (hassim || mg.kind == MG_next) {
		lua_getiuservalue(L, idx, MFN_weight);
		int fn = lua_isfunction(L, -1);
		lua_pop(L, 1);
		if (fn)
			mg.weight = callpair(L, idx, MFN_weight, "ekm", "weight", r);
		lua_getiuservalue(L, idx, MFN_self);
		fn = lua_isfunction(L, -1);
		lua_pop(L, 1);
		if (fn)
			mg.self = callpair(L, idx, MFN_self, "km", "self_weight", r);
	}
	f->merge = mg;
}

const luaL_Reg kd_rulefns[] = {
	{ "topk", l_topk }, { "threshold", l_threshold }, { "mass", l_mass }, { "pyramid", l_pyramid },
	{ "prefix", l_prefix }, { "dynamic", l_dynamic }, { "decode", l_decode },
	{ "token_state", l_token_state }, { "nearest", l_nearest }, { "runs", l_runs },
	{ "next_kept", l_next_kept }, { "summary", l_summary }, { "adaptive", l_adaptive }, { NULL, NULL }
};
