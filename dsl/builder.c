/*
** The builder library `kvcc`, as a policy sees it (doc/dsl.md is the guide):
**
**   local kv = require "kvcc"
**   local P = kv.params { window = 64, kernel = 5 }
**   return kv.policy "snapkv" {
**     score  = function(x) ... return expr end,     -- expr with axes [token]
**     select = kv.topk { keep_recent = P.window },
**   }
**
** Expressions are userdata holding a KiRef into the policy's KiFn, with
** arithmetic metamethods and methods for reductions; every builder call
** records the caller's position (line from Lua, column by finding the called
** name on that line) so later errors point into policy.lua. This file: positions
** and errors, expressions, params, weights, scans, inputs, kv.policy and the
** library table; the rules (select, when, state, merge) are dsl/rules.c.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "dsl/build.h"
/* --- positions and errors ---------------------------------------------------- */

/* Line of the Lua function at `level`, and the column where `name` appears
** on that line (first occurrence), else the first non-blank column. */
void kd_where(lua_State *L, int level, const char *name, uint32_t *line, uint32_t *col)
{
	KdState *S = kd_state(L);
	lua_Debug ar;
	*line = 0, *col = 0;
	for (; level < 8; level++) {   /* skip C frames (e.g. pcall) */
		if (!lua_getstack(L, level, &ar))
			return;
		lua_getinfo(L, "Sl", &ar);
		if (ar.currentline > 0)
			break;
	}
	if (level == 8)
		return;
	*line = (uint32_t)ar.currentline;
	const char *ls = S->text;
	for (int k = 1; k < ar.currentline && ls; k++) {
		ls = memchr(ls, '\n', S->len - (size_t)(ls - S->text));
		if (ls)
			ls++;
	}
	*col = 1;
	if (!ls)
		return;
	const char *le = memchr(ls, '\n', S->len - (size_t)(ls - S->text));
	size_t ll = le ? (size_t)(le - ls) : S->len - (size_t)(ls - S->text);
	size_t nl = name ? strlen(name) : 0;
	for (size_t k = 0; nl && k + nl <= ll; k++)
		if (memcmp(ls + k, name, nl) == 0) {
			*col = (uint32_t)k + 1;
			return;
		}
	while (*col <= ll && (ls[*col - 1] == ' ' || ls[*col - 1] == '\t'))
		(*col)++;
}

/* Raise a formatted "file:line:col: error: msg" at the caller's position. */
int kd_raise(lua_State *L, const char *name, const char *fmt, ...)
{
	KdState *S = kd_state(L);
	uint32_t line, col;
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	kd_where(L, 0, name, &line, &col);
	if (!line)
		kd_where(L, 1, name, &line, &col);
	KiErr e = { 0 };
	ki_error(&e, S->path, line ? line : 1, col ? col : 1, "%s", msg);
	snprintf(S->raisedmsg, sizeof S->raisedmsg, "%s", e.msg);
	lua_pushstring(L, e.msg);
	return lua_error(L);
}

/* Raise at a known position (an instruction's). */
int kd_raiseat(lua_State *L, uint32_t line, uint32_t col, const char *fmt, ...)
{
	KdState *S = kd_state(L);
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	KiErr e = { 0 };
	ki_error(&e, S->path, line ? line : 1, col ? col : 1, "%s", msg);
	snprintf(S->raisedmsg, sizeof S->raisedmsg, "%s", e.msg);
	lua_pushstring(L, e.msg);
	return lua_error(L);
}

/* The kd_builder's state, for a call that changes the policy: refused once the
** policy is built (kvcc.policy { ... } returned), whatever calls it. */
KdState *kd_builder(lua_State *L)
{
	KdState *S = kd_state(L);
	if (S->finished)
		kd_raise(L, NULL, "kvcc call after the policy was built (kvcc.policy { ... } must be the "
		         "last kvcc call of the file)");
	return S;
}

/* Edit distance of two short names, transpositions counted as one edit (for
** "did you mean"). */
static int distance(const char *a, const char *b)
{
	int la = (int)strlen(a), lb = (int)strlen(b), d[33][33];
	if (la > 32 || lb > 32)
		return 99;
	for (int i = 0; i <= la; i++)
		d[i][0] = i;
	for (int j = 0; j <= lb; j++)
		d[0][j] = j;
	for (int i = 1; i <= la; i++)
		for (int j = 1; j <= lb; j++) {
			int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
			c = d[i - 1][j] + 1 < c ? d[i - 1][j] + 1 : c;
			c = d[i][j - 1] + 1 < c ? d[i][j - 1] + 1 : c;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < c)
				c = d[i - 2][j - 2] + 1;    /* a transposition */
			d[i][j] = c;
		}
	return d[la][lb];
}

/* " (did you mean 'x'? NOUN: a, b, c)" for an unknown name among `names`. */
void kd_suggest(const char *name, const char *const *names, const char *noun, char *buf, size_t cap)
{
	const char *best = NULL;
	int bd = 99, n = name ? (int)strlen(name) : 0;
	for (int i = 0; name && names[i]; i++) {
		int dd = distance(name, names[i]);
		if (dd < bd)
			bd = dd, best = names[i];
	}
	size_t k = 0;
	if (best && bd <= (n > 5 ? n / 3 : 1) + (n > 8))
		k = (size_t)snprintf(buf, cap, " (did you mean '%s'? %s: ", best, noun);
	else
		k = (size_t)snprintf(buf, cap, " (%s: ", noun);
	for (int i = 0; names[i] && k < cap; i++)
		k += (size_t)snprintf(buf + k, cap - k, "%s%s", i ? ", " : "", names[i]);
	if (k < cap)
		snprintf(buf + k, cap - k, ")");
}

static int identchar(char c)
{
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Position of `field =` in the policy table: the first such field after the
** kvcc.policy call (Lua reports the whole table at the call's line). Comments
** and strings are skipped. Returns 0 when not found. */
static int fieldpos(KdState *S, const char *field, uint32_t *line, uint32_t *col)
{
	const char *p = S->text, *e = S->text + S->len;
	uint32_t ln = 1;
	size_t fl = strlen(field);
	const char *ls = p;
	while (p < e) {
		if (*p == '\n') {
			ln++, ls = ++p;
			continue;
		}
		if (p + 1 < e && p[0] == '-' && p[1] == '-') {
			while (p < e && *p != '\n')
				p++;
			continue;
		}
		if (*p == '"' || *p == '\'') {
			char q = *p++;
			while (p < e && *p != q && *p != '\n')
				p += *p == '\\' && p + 1 < e ? 2 : 1;
			p++;
			continue;
		}
		int word = p == S->text || !(identchar(p[-1]) || p[-1] == '.');
		if (ln >= S->f->line && word && (size_t)(e - p) > fl && memcmp(p, field, fl) == 0 &&
		    !identchar(p[fl])) {
			const char *q = p + fl;
			while (q < e && (*q == ' ' || *q == '\t'))
				q++;
			if (q + 1 < e && q[0] == '=' && q[1] != '=') {
				*line = ln, *col = (uint32_t)(p - ls) + 1;
				return 1;
			}
		}
		p++;
	}
	return 0;
}

/* Raise at the position of the policy field `field` (else the caller's). */
int kd_raisefield(lua_State *L, const char *field, const char *fmt, ...)
{
	KdState *S = kd_state(L);
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	uint32_t line, col;
	if (fieldpos(S, field, &line, &col))
		return kd_raiseat(L, line, col, "%s", msg);
	return kd_raise(L, field, "%s", msg);
}

static void protect(lua_State *L);

/* --- expressions --------------------------------------------------------------- */

void kd_pushexpr(lua_State *L, KiRef r)
{
	Expr *x = lua_newuserdatauv(L, sizeof *x, 0);
	x->ref = r;
	luaL_setmetatable(L, EXPR_MT);
}

/* The constant v of the policy; out of memory is an error at the caller. */
KiRef kd_kconst(lua_State *L, double v)
{
	KiRef r = ki_const(kd_state(L)->f, v);
	if (r == KI_NIL)
		kd_raise(L, NULL, "out of memory");
	return r;
}

/* Coerce a number or an expression at `idx` to a ref. */
KiRef kd_toref(lua_State *L, int idx, const char *name)
{
	kd_builder(L);                      /* refuses calls after the policy is built */
	if (lua_type(L, idx) == LUA_TNUMBER)
		return kd_kconst(L, lua_tonumber(L, idx));
	Expr *x = luaL_testudata(L, idx, EXPR_MT);
	if (x)
		return x->ref;
	return kd_raise(L, name, "%s expects a number or a kvcc expression, got %s", name,
	                luaL_typename(L, idx));
}

static int axisarg(lua_State *L, int idx, const char *name)
{
	if (lua_type(L, idx) != LUA_TSTRING)
		return kd_raise(L, name, "%s expects an axis name (\"group\", \"obs\", \"token\" or \"chan\"), got %s",
		                name, luaL_typename(L, idx));
	size_t n;
	const char *s = lua_tolstring(L, idx, &n);
	int ax = ki_axisbyname(s, n);
	if (ax < 0)
		return kd_raise(L, name, "unknown axis '%s' (axes are group, obs, token, chan; "
		                "layer and head are instance indices)", s);
	if (ax >= AX_NUM)
		return kd_raise(L, name, "%s over '%s': %s is an instance index, not an axis (axes are group, "
		                "obs, token, chan)%s", name, s, s, ax == AX_head ?
		                "; :mean(\"head\") averages over the heads of a layer" : "");
	return ax;
}

/* Emit an instruction at the caller's position; checks the axis rule. */
KiRef kd_emit(lua_State *L, const char *name, int op, KiRef a, KiRef b, KiRef c, int axis, int aux,
                  uint8_t leafaxes)
{
	KdState *S = kd_builder(L);
	KiIns in;
	memset(&in, 0, sizeof in);
	in.op = (uint8_t)op;
	in.arg[0] = a, in.arg[1] = b, in.arg[2] = c;
	in.axis = (uint8_t)(axis < 0 ? AX_NONE : axis);
	in.aux = (uint8_t)aux;
	in.axes = leafaxes;
	char why[200];
	if (ki_resultaxes(S->f, op, in.arg, axis, &in.axes, why, sizeof why) != 0)
		return kd_raise(L, name, "%s", why);
	if (S->f->nins >= S->lim.kir)
		return kd_raise(L, name, "policy too large (more than %d KIR instructions)", S->lim.kir);
	kd_where(L, 1, name, &in.line, &in.col);
	KiRef r = ki_emit(S->f, &in);
	if (r == KI_NIL)
		kd_raise(L, name, "out of memory");
	return r;
}

static int binop(lua_State *L, int op, const char *name)
{
	KiRef a = kd_toref(L, 1, name), b = kd_toref(L, 2, name);
	kd_pushexpr(L, kd_emit(L, name, op, a, b, KI_NIL, -1, 0, 0));
	return 1;
}

static int m_add(lua_State *L) { return binop(L, KO_add, "+"); }
static int m_sub(lua_State *L) { return binop(L, KO_sub, "-"); }
static int m_mul(lua_State *L) { return binop(L, KO_mul, "*"); }
static int m_div(lua_State *L) { return binop(L, KO_div, "/"); }
static int m_pow(lua_State *L) { return binop(L, KO_pow, "^"); }
static int m_lt(lua_State *L) { return binop(L, KO_lt, "lt"); }
static int m_le(lua_State *L) { return binop(L, KO_le, "le"); }
static int m_eq(lua_State *L) { return binop(L, KO_eq, "eq"); }
static int m_ne(lua_State *L) { return binop(L, KO_ne, "ne"); }

/* a:gt(b) is b < a */
static int m_gt(lua_State *L) { lua_insert(L, 1); return binop(L, KO_lt, "gt"); }
static int m_ge(lua_State *L) { lua_insert(L, 1); return binop(L, KO_le, "ge"); }

static int m_unm(lua_State *L)
{
	kd_pushexpr(L, kd_emit(L, "-", KO_neg, kd_toref(L, 1, "-"), KI_NIL, KI_NIL, -1, 0, 0));
	return 1;
}

static int unop(lua_State *L, int op, const char *name)
{
	kd_pushexpr(L, kd_emit(L, name, op, kd_toref(L, 1, name), KI_NIL, KI_NIL, -1, 0, 0));
	return 1;
}
static int m_exp(lua_State *L) { return unop(L, KO_exp, "exp"); }
static int m_log(lua_State *L) { return unop(L, KO_log, "log"); }
static int m_sqrt(lua_State *L) { return unop(L, KO_sqrt, "sqrt"); }
static int m_abs(lua_State *L) { return unop(L, KO_abs, "abs"); }

static int segment(lua_State *L, int op, const char *name, KiRef a, int ax, int t);

static int reduce(lua_State *L, int op, const char *name)
{
	KiRef a = kd_toref(L, 1, name);
	int ax = axisarg(L, 2, name);
	if (lua_istable(L, 3))          /* a:max("token", { chunk = c, start = s }) */
		return segment(L, op, name, a, ax, 3);
	kd_pushexpr(L, kd_emit(L, name, op, a, KI_NIL, KI_NIL, ax, 0, 0));
	return 1;
}
static int m_sum(lua_State *L) { return reduce(L, KO_sum, "sum"); }
static int m_mean(lua_State *L)
{
	if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "head") == 0) {
		kd_pushexpr(L, kd_emit(L, "mean", KO_hmean, kd_toref(L, 1, "mean"), KI_NIL, KI_NIL, -1, 0, 0));
		return 1;
	}
	return reduce(L, KO_mean, "mean");
}
static int m_norm(lua_State *L) { return reduce(L, KO_norm, "norm"); }
static int m_std(lua_State *L) { return reduce(L, KO_std, "std"); }

/* max/min: with an axis name they reduce, with a value they are elementwise. */
static int m_max(lua_State *L)
{
	return lua_type(L, 2) == LUA_TSTRING ? reduce(L, KO_rmax, "max") : binop(L, KO_max, "max");
}
static int m_min(lua_State *L)
{
	return lua_type(L, 2) == LUA_TSTRING ? reduce(L, KO_rmin, "min") : binop(L, KO_min, "min");
}

static int m_dot(lua_State *L)
{
	KiRef a = kd_toref(L, 1, "dot"), b = kd_toref(L, 2, "dot");
	int ax = axisarg(L, 3, "dot");
	kd_pushexpr(L, kd_emit(L, "dot", KO_dot, a, b, KI_NIL, ax, 0, 0));
	return 1;
}

/* softmax(e, axis [, {causal = false}]) */
static int m_softmax(lua_State *L)
{
	KiRef a = kd_toref(L, 1, "softmax");
	int ax = axisarg(L, 2, "softmax");
	int op = KO_softmax;
	if (lua_istable(L, 3)) {
		lua_getfield(L, 3, "causal");
		if (lua_isboolean(L, -1) && !lua_toboolean(L, -1))
			op = KO_softmaxnc;
		lua_pop(L, 1);
	}
	kd_pushexpr(L, kd_emit(L, "softmax", op, a, KI_NIL, KI_NIL, ax, 0, 0));
	return 1;
}

static int pool(lua_State *L, int op, const char *name)
{
	KiRef a = kd_toref(L, 1, name);
	KiRef k = kd_toref(L, 2, name);
	if (KI_RKIND(k) == RK_CON) {
		double v = kd_state(L)->f->con[KI_RIDX(k)];
		if (!(v >= 1 && v <= 4096 && v == floor(v)))
			return kd_raise(L, name, "%s kernel size must be an integer in 1..4096, got %g", name, v);
	}
	kd_pushexpr(L, kd_emit(L, name, op, a, k, KI_NIL, AX_token, 0, 0));
	return 1;
}
static int m_avgpool(lua_State *L) { return pool(L, KO_avgpool, "avgpool"); }
static int m_maxpool(lua_State *L) { return pool(L, KO_maxpool, "maxpool"); }

/* where(cond, a, b) */
static int m_where(lua_State *L)
{
	KiRef c = kd_toref(L, 1, "where"), a = kd_toref(L, 2, "where"), b = kd_toref(L, 3, "where");
	kd_pushexpr(L, kd_emit(L, "where", KO_where, c, a, b, -1, 0, 0));
	return 1;
}

/* cosine(a, b, axis) = dot / max(|a||b|, 1e-8), as torch's cosine_similarity */
static int m_cosine(lua_State *L)
{
	KiRef a = kd_toref(L, 1, "cosine"), b = kd_toref(L, 2, "cosine");
	int ax = axisarg(L, 3, "cosine");
	KiRef d = kd_emit(L, "cosine", KO_dot, a, b, KI_NIL, ax, 0, 0);
	KiRef na = kd_emit(L, "cosine", KO_norm, a, KI_NIL, KI_NIL, ax, 0, 0);
	KiRef nb = kd_emit(L, "cosine", KO_norm, b, KI_NIL, KI_NIL, ax, 0, 0);
	KiRef p = kd_emit(L, "cosine", KO_mul, na, nb, KI_NIL, -1, 0, 0);
	KiRef m = kd_emit(L, "cosine", KO_max, p, kd_kconst(L, 1e-8), KI_NIL, -1, 0, 0);
	kd_pushexpr(L, kd_emit(L, "cosine", KO_div, d, m, KI_NIL, -1, 0, 0));
	return 1;
}

static int m_random(lua_State *L)
{
	KiRef seed = lua_isnoneornil(L, 1) ? kd_kconst(L, 0) : kd_toref(L, 1, "random");
	kd_pushexpr(L, kd_emit(L, "random", KO_rand, seed, KI_NIL, KI_NIL, -1, 0, 0));
	return 1;
}

static int m_tostring(lua_State *L)
{
	Expr *x = luaL_checkudata(L, 1, EXPR_MT);
	char buf[64];
	ki_axesstr(ki_refaxes(kd_state(L)->f, x->ref), buf, sizeof buf);
	lua_pushfstring(L, "kvcc.Expr%s", buf);
	return 1;
}

/* e:axes() → list of axis names */
static int m_axes(lua_State *L)
{
	Expr *x = luaL_checkudata(L, 1, EXPR_MT);
	uint8_t m = ki_refaxes(kd_state(L)->f, x->ref);
	lua_newtable(L);
	for (int ax = 0, k = 1; ax < AX_NUM; ax++)
		if (m & AXM(ax)) {
			lua_pushstring(L, ki_axisname(ax));
			lua_rawseti(L, -2, k++);
		}
	return 1;
}

/* Using an expression as a Lua boolean or comparing with < is a mistake the
** policy author should hear about: comparisons are methods (a:lt(b)). */
static int m_badcompare(lua_State *L)
{
	return kd_raise(L, NULL, "kvcc expressions cannot be compared with Lua operators; "
	                "use a:lt(b), a:le(b), a:gt(b), a:ge(b), a:eq(b), a:ne(b)");
}

static int m_index(lua_State *L)
{
	const char *k = lua_tostring(L, 2);
	lua_getmetatable(L, 1);
	lua_getfield(L, -1, "methods");
	lua_pushvalue(L, 2);
	lua_rawget(L, -2);
	if (!lua_isnil(L, -1))
		return 1;
	static const char *const methods[] = {
		"dot", "sum", "mean", "max", "min", "norm", "std", "softmax", "exp", "log", "sqrt", "abs",
		"lt", "le", "gt", "ge", "eq", "ne", "avgpool", "maxpool", "axes", NULL
	};
	char hint[400];
	kd_suggest(k, methods, "methods", hint, sizeof hint);
	return kd_raise(L, k, "kvcc expressions have no field '%s'%s", k ? k : "?", hint);
}

/* --- issue 13: elementwise ops, shifts, segments, rank ------------------------------ */

static int m_sin(lua_State *L) { return unop(L, KO_sin, "sin"); }
static int m_cos(lua_State *L) { return unop(L, KO_cos, "cos"); }
static int m_floor(lua_State *L) { return unop(L, KO_floor, "floor"); }
static int m_round(lua_State *L) { return unop(L, KO_rint, "round"); }

/* sigmoid(a) = 1 / (1 + exp(-a)) */
static int m_sigmoid(lua_State *L)
{
	KiRef a = kd_toref(L, 1, "sigmoid");
	KiRef n = kd_emit(L, "sigmoid", KO_neg, a, KI_NIL, KI_NIL, -1, 0, 0);
	KiRef e = kd_emit(L, "sigmoid", KO_exp, n, KI_NIL, KI_NIL, -1, 0, 0);
	KiRef d = kd_emit(L, "sigmoid", KO_add, e, kd_kconst(L, 1), KI_NIL, -1, 0, 0);
	kd_pushexpr(L, kd_emit(L, "sigmoid", KO_div, kd_kconst(L, 1), d, KI_NIL, -1, 0, 0));
	return 1;
}

/* A scalar operand: a number, a param or a scalar expression. */
static KiRef scalararg(lua_State *L, int idx, const char *name, const char *what)
{
	KiRef r = kd_toref(L, idx, name);
	if (ki_refaxes(kd_state(L)->f, r))
		return kd_raise(L, name, "%s: %s must be a scalar", name, what);
	return r;
}

/* a:shift(axis, k [, fill = 0]): result[i] = a[i + k] along token or chan, fill outside */
static int m_shift(lua_State *L)
{
	KiRef a = kd_toref(L, 1, "shift");
	int ax = axisarg(L, 2, "shift");
	KiRef k = scalararg(L, 3, "shift", "the offset");
	KiRef fill = lua_isnoneornil(L, 4) ? kd_kconst(L, 0) : scalararg(L, 4, "shift", "the fill value");
	kd_pushexpr(L, kd_emit(L, "shift", KO_shift, a, k, fill, ax, 0, 0));
	return 1;
}

/* The segment options { chunk = size (default: the whole axis), start = 0 } at t. */
static int segment(lua_State *L, int op, const char *name, KiRef a, int ax, int t)
{
	static const char *const ok[] = { "chunk", "start", NULL };
	static const struct { int red, seg; } map[] = {
		{ KO_sum, KO_ssum }, { KO_mean, KO_smean }, { KO_rmax, KO_smax }, { KO_rmin, KO_smin },
		{ KO_srank, KO_srank },
	};
	int sop = -1;
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (map[i].red == op)
			sop = map[i].seg;
	if (sop < 0)
		return kd_raise(L, name, "%s has no chunked form (sum, mean, max, min and rank have)", name);
	if (ax != AX_token)
		return kd_raise(L, name, "chunks run along 'token', not '%s'", ki_axisname(ax));
	kd_checkfields(L, t, name, ok);
	lua_getfield(L, t, "chunk");
	KiRef size;
	if (lua_isnil(L, -1))
		size = kd_kconst(L, INFINITY);
	else if (lua_type(L, -1) == LUA_TNUMBER && !(lua_tonumber(L, -1) >= 1 &&
	         lua_tonumber(L, -1) == floor(lua_tonumber(L, -1))))
		return kd_raise(L, "chunk", "chunk must be an integer >= 1, got %g", lua_tonumber(L, -1));
	else
		size = scalararg(L, -1, name, "chunk");
	lua_pop(L, 1);
	lua_getfield(L, t, "start");
	KiRef start = lua_isnil(L, -1) ? kd_kconst(L, 0) : scalararg(L, -1, name, "start");
	lua_pop(L, 1);
	kd_pushexpr(L, kd_emit(L, name, sop, a, size, start, ax, 0, 0));
	return 1;
}

/* a:rank("token" [, { chunk, start }]): 0 = smallest, ties lower position first, NaN last */
static int m_rank(lua_State *L)
{
	KiRef a = kd_toref(L, 1, "rank");
	int ax = axisarg(L, 2, "rank");
	if (lua_isnoneornil(L, 3))
		lua_newtable(L);
	else if (!lua_istable(L, 3))
		return kd_raise(L, "rank", "rank's options are a table { chunk = c, start = s }");
	return segment(L, KO_srank, "rank", a, ax, 3);
}

static const luaL_Reg expr_methods[] = {
	{ "dot", m_dot }, { "sum", m_sum }, { "mean", m_mean }, { "max", m_max }, { "min", m_min },
	{ "norm", m_norm }, { "std", m_std }, { "softmax", m_softmax }, { "exp", m_exp },
	{ "log", m_log }, { "sqrt", m_sqrt }, { "abs", m_abs }, { "lt", m_lt }, { "le", m_le },
	{ "gt", m_gt }, { "ge", m_ge }, { "eq", m_eq }, { "ne", m_ne }, { "avgpool", m_avgpool },
	{ "maxpool", m_maxpool }, { "axes", m_axes }, { "sin", m_sin }, { "cos", m_cos },
	{ "floor", m_floor }, { "round", m_round }, { "shift", m_shift }, { "rank", m_rank },
	{ "sigmoid", m_sigmoid }, { NULL, NULL }
};

static const luaL_Reg expr_meta[] = {
	{ "__add", m_add }, { "__sub", m_sub }, { "__mul", m_mul }, { "__div", m_div },
	{ "__pow", m_pow }, { "__unm", m_unm }, { "__tostring", m_tostring },
	{ "__lt", m_badcompare }, { "__le", m_badcompare }, { "__index", m_index },
	{ "__concat", m_badcompare }, { NULL, NULL }
};

/* --- params ----------------------------------------------------------------------- */

/* P.name → the param's expression; an unknown name is an error that lists
** the declared ones. */
static int params_index(lua_State *L)
{
	KdState *S = kd_state(L);
	const char *k = lua_tostring(L, 2);
	int i = k ? ki_findparam(S->f, k) : -1;
	if (i < 0) {
		char list[256] = "";
		for (int j = 0; j < S->f->npar; j++)
			snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", j ? ", " : "",
			         S->f->par[j].name);
		return kd_raise(L, k, "unknown param '%s' (declared: %s)", k ? k : "?",
		                S->f->npar ? list : "none");
	}
	kd_pushexpr(L, KI_REF(RK_PAR, i));
	return 1;
}

static int params_newindex(lua_State *L)
{
	return kd_raise(L, lua_tostring(L, 2), "params are read-only; declare them in kvcc.params { ... }");
}

static int valid_name(const char *s)
{
	if (!s || !*s || strlen(s) >= 32)
		return 0;
	for (const char *p = s; *p; p++)
		if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (p > s && *p >= '0' && *p <= '9')))
			return 0;
	return 1;
}

/* kv.params { name = default, ... } */
static int l_params(lua_State *L)
{
	KdState *S = kd_builder(L);
	luaL_checktype(L, 1, LUA_TTABLE);
	/* sorted names, so the KIR does not depend on Lua's hash order */
	const char *names[KD_MAX_PARAMS];
	int n = 0;
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		if (lua_type(L, -2) != LUA_TSTRING || !valid_name(lua_tostring(L, -2)))
			return kd_raise(L, "params", "param names must be identifiers of at most 31 characters");
		if (lua_type(L, -1) != LUA_TNUMBER)
			return kd_raise(L, lua_tostring(L, -2), "param '%s' needs a number as its default, got %s",
			                lua_tostring(L, -2), luaL_typename(L, -1));
		double v = lua_tonumber(L, -1);
		if (!isfinite(v))
			return kd_raise(L, lua_tostring(L, -2), "param '%s' default must be finite",
			                lua_tostring(L, -2));
		if (S->f->npar + n >= KD_MAX_PARAMS)
			return kd_raise(L, "params", "too many params (at most %d in all kvcc.params calls)",
			                KD_MAX_PARAMS);
		names[n++] = lua_tostring(L, -2);   /* key stays alive: the table holds it */
		lua_pop(L, 1);
	}
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
			const char *t = names[j];
			names[j] = names[j - 1], names[j - 1] = t;
		}
	for (int i = 0; i < n; i++) {
		if (ki_findparam(S->f, names[i]) >= 0)
			return kd_raise(L, names[i], "param '%s' declared twice", names[i]);
		lua_getfield(L, 1, names[i]);
		uint32_t line, col;
		kd_where(L, 1, names[i], &line, &col);
		if (ki_addparam(S->f, names[i], lua_tonumber(L, -1), line, col) < 0)
			return kd_raise(L, names[i], "out of memory");
		lua_pop(L, 1);
	}
	lua_newtable(L);
	lua_newtable(L);
	lua_pushcfunction(L, params_index);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, params_newindex);
	lua_setfield(L, -2, "__newindex");
	protect(L);
	lua_setmetatable(L, -2);
	return 1;
}

/* --- issue 13: weights ------------------------------------------------------------------ */

/* W.name → the weight's expression */
static int weights_index(lua_State *L)
{
	KdState *S = kd_state(L);
	const char *k = lua_tostring(L, 2);
	int i = k ? ki_findweight(S->f, k) : -1;
	if (i < 0)
		return kd_raise(L, k, "unknown weight '%s'", k ? k : "?");
	kd_pushexpr(L, kd_emit(L, k, KO_weight, KI_NIL, KI_NIL, KI_NIL, -1, i, ki_weightaxes(&S->f->w[i])));
	return 1;
}

/*
** kv.weights { name = { axis, ... }, ... }: axes "layer", "head", "group", "chan",
** "out" (a free axis, sized by the data) or a number (an out axis of that size),
** in the order of the data. Declared in name order (the KIR does not depend on
** Lua's hash order).
*/
static int l_weights(lua_State *L)
{
	KdState *S = kd_state(L);
	luaL_checktype(L, 1, LUA_TTABLE);
	const char *names[KI_MAXW];
	int n = 0;
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		if (lua_type(L, -2) != LUA_TSTRING || !valid_name(lua_tostring(L, -2)))
			return kd_raise(L, "weights", "weight names must be identifiers of at most 31 characters");
		if (!lua_istable(L, -1))
			return kd_raise(L, lua_tostring(L, -2), "weight '%s' needs a list of axes, e.g. "
			                "{ \"layer\", \"head\", \"chan\" }", lua_tostring(L, -2));
		if (n + S->f->nw == KI_MAXW)
			return kd_raise(L, "weights", "too many weights (at most %d)", KI_MAXW);
		names[n++] = lua_tostring(L, -2);
		lua_pop(L, 1);
	}
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
			const char *t = names[j];
			names[j] = names[j - 1], names[j - 1] = t;
		}
	for (int i = 0; i < n; i++) {
		KiWeight w;
		memset(&w, 0, sizeof w);
		snprintf(w.name, sizeof w.name, "%s", names[i]);
		kd_where(L, 1, names[i], &w.line, &w.col);
		lua_getfield(L, 1, names[i]);
		lua_Integer len = luaL_len(L, -1);
		if (len < 1 || len > KI_MAXWDIM)
			return kd_raise(L, names[i], "weight '%s' needs 1 to %d axes", names[i], KI_MAXWDIM);
		for (int k = 1; k <= len; k++) {
			lua_rawgeti(L, -1, k);
			int wa;
			if (lua_type(L, -1) == LUA_TNUMBER) {
				double v = lua_tonumber(L, -1);
				if (!(v >= 1 && v <= 1e6 && v == floor(v)))
					return kd_raise(L, names[i], "weight '%s': a fixed size must be an integer in 1..1000000",
					                names[i]);
				wa = WA_out, w.size = (int32_t)v;
			} else {
				size_t sl;
				const char *a = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &sl) : NULL;
				if (!a || (wa = ki_waxisbyname(a, sl)) < 0)
					return kd_raise(L, names[i], "weight '%s': axes are \"layer\", \"head\", \"group\", "
					                "\"chan\", \"out\" or a size", names[i]);
			}
			for (int j = 0; j < w.ndim; j++)
				if (w.ax[j] == wa)
					return kd_raise(L, names[i], "weight '%s' names the %s axis twice%s", names[i],
					                ki_waxisname(wa), wa == WA_out ? " (one free or fixed-size axis)" : "");
			w.ax[w.ndim++] = (uint8_t)wa;
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
		int wi = ki_addweight(S->f, &w);
		if (wi == -2)
			return kd_raise(L, names[i], "out of memory");
		if (wi < 0)
			return kd_raise(L, names[i], "weight '%s' declared twice", names[i]);
	}
	lua_newtable(L);
	lua_newtable(L);
	lua_pushcfunction(L, weights_index);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, params_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_setmetatable(L, -2);
	return 1;
}

/* --- issue 13: scan ----------------------------------------------------------------------- */

/*
** kv.scan(h0, function(h) return step end): h[t] = step with h = h[t-1] (h0
** before the first token), along token in position order; the step is
** elementwise over [token] (it may read other [token] values at t). The values
** live on as a per-token state (named scanN) that later compressions continue
** from: tokens appended since are scanned from the last held token's value.
*/
static int l_scan(lua_State *L)
{
	KdState *S = kd_state(L);
	KiFn *f = S->f;
	if (S->in_observe)
		return kd_raise(L, "scan", "kvcc.scan runs when the cache is compressed, not in the observe hook");
	KiRef init = scalararg(L, 1, "scan", "the start value");
	if (!lua_isfunction(L, 2))
		return kd_raise(L, "scan", "kvcc.scan(h0, function(h) return ... end) needs the step function");
	char name[32];
	for (int k = 0;; k++) {
		snprintf(name, sizeof name, "scan%d", k);
		if (ki_findstate(f, name) < 0)
			break;
	}
	if (f->nst >= 255)
		return kd_raise(L, "scan", "too many states and scans (at most 255)");
	int s = ki_addstate(f, name, NAN);
	if (s < 0)
		return kd_raise(L, "scan", "out of memory");
	KiRef carry = kd_emit(L, "scan", KO_carry, KI_NIL, KI_NIL, KI_NIL, -1, s, AXM(AX_token));
	lua_pushvalue(L, 2);
	kd_pushexpr(L, carry);
	lua_call(L, 1, 1);
	if (lua_type(L, -1) != LUA_TNUMBER && !luaL_testudata(L, -1, EXPR_MT))
		return kd_raise(L, "scan", "the scan step must return a number or a kvcc expression, got %s",
		                luaL_typename(L, -1));
	KiRef step = kd_toref(L, -1, "scan");
	lua_pop(L, 1);
	KiRef r = kd_emit(L, "scan", KO_scan, step, init, KI_NIL, -1, s, 0);
	f->st[s].update = r;
	kd_pushexpr(L, r);
	return 1;
}

/* --- inputs: x.K, x.Q, x.t, x.n, ... ----------------------------------------------- */

static int x_index(lua_State *L)
{
	KdState *S = kd_state(L);
	size_t len;
	const char *k = lua_tolstring(L, 2, &len);
	if (!k)
		return kd_raise(L, NULL, "inputs are named by strings (x.K, x.Q, ...)");
	int in = ki_inputbyname(k, len);
	if (in >= 0) {
		kd_pushexpr(L, kd_emit(L, k, KO_input, KI_NIL, KI_NIL, KI_NIL, -1, in, ki_inputaxes(in)));
		return 1;
	}
	int inf = ki_infobyname(k, len);
	if (inf >= 0) {
		if (inf == INF_step && !S->in_observe)
			return kd_raise(L, k, "x.step is only available in the observe hook");
		if ((inf == INF_ratio || inf == INF_nkeep) && S->in_observe)
			return kd_raise(L, k, "x.%s is the compression's (score and select), not the observe hook's", k);
		kd_pushexpr(L, kd_emit(L, k, KO_info, KI_NIL, KI_NIL, KI_NIL, -1, inf, 0));
		return 1;
	}
	static const struct { const char *name; int op, axis; } sizes[] = {
		{ "t", KO_index, AX_token }, { "o", KO_index, AX_obs }, { "g", KO_index, AX_group },
		{ "c", KO_index, AX_chan }, { "n", KO_size, AX_token }, { "nobs", KO_size, AX_obs },
		{ "G", KO_size, AX_group }, { "d", KO_size, AX_chan }, { "out", KO_index, AX_out },
		{ "nout", KO_size, AX_out },
	};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
		if (strcmp(k, sizes[i].name) == 0) {
			uint8_t axes = sizes[i].op == KO_index ? AXM(sizes[i].axis) : 0;
			kd_pushexpr(L, kd_emit(L, k, sizes[i].op, KI_NIL, KI_NIL, KI_NIL, sizes[i].axis, 0, axes));
			return 1;
		}
	if (strcmp(k, "attn") == 0) {
		if (!S->in_observe)
			return kd_raise(L, k, "x.attn (decode attention) is only available in the observe hook");
		kd_pushexpr(L, kd_emit(L, k, KO_attn, KI_NIL, KI_NIL, KI_NIL, -1, 0, AXM(AX_group) | AXM(AX_token)));
		return 1;
	}
	return kd_raise(L, k, "unknown input '%s' (inputs: K, V, Q, lse, pos, qpos, t, n, nobs, G, d, "
	                "scale, layer, head, nlayers, nheads, ratio, nkeep, out, nout; attn and step in observe)", k);
}

static int x_newindex(lua_State *L)
{
	return kd_raise(L, lua_tostring(L, 2), "inputs are read-only");
}

void kd_pushinputs(lua_State *L)
{
	lua_newtable(L);
	lua_newtable(L);
	lua_pushcfunction(L, x_index);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, x_newindex);
	lua_setfield(L, -2, "__newindex");
	protect(L);
	lua_setmetatable(L, -2);
}

/* st.name reads a state tensor; in observe, st.name = e records its update. */
static int st_index(lua_State *L)
{
	KdState *S = kd_state(L);
	const char *k = lua_tostring(L, 2);
	int i = k ? ki_findstate(S->f, k) : -1;
	if (i < 0)
		return kd_raise(L, k, "unknown state '%s' (declare it in the policy's state table)", k ? k : "?");
	kd_pushexpr(L, kd_emit(L, k, KO_state, KI_NIL, KI_NIL, KI_NIL, -1, i, AXM(AX_token)));
	return 1;
}

static int st_newindex(lua_State *L)
{
	KdState *S = kd_builder(L);
	const char *k = lua_tostring(L, 2);
	int i = k ? ki_findstate(S->f, k) : -1;
	if (i < 0)
		return kd_raise(L, k, "unknown state '%s' (declare it in the policy's state table)", k ? k : "?");
	if (!S->in_observe)
		return kd_raise(L, k, "state '%s' can only be updated in the observe hook", k);
	KiRef r = kd_toref(L, 3, k);
	uint8_t ax = ki_refaxes(S->f, r);
	if (ax & ~AXM(AX_token)) {
		char buf[64];
		ki_axesstr(ax, buf, sizeof buf);
		return kd_raise(L, k, "state '%s' must be updated with axes [token] but the value has axes %s "
		                "(reduce the other axes first)", k, buf);
	}
	S->f->st[i].update = r;
	return 0;
}

static void pushstate(lua_State *L)
{
	lua_newtable(L);
	lua_newtable(L);
	lua_pushcfunction(L, st_index);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, st_newindex);
	lua_setfield(L, -2, "__newindex");
	protect(L);
	lua_setmetatable(L, -2);
}

/* --- kv.policy "name" { ... } ------------------------------------------------------ */

static int usesinput(const KiFn *f, int in)
{
	for (int i = 0; i < f->nins; i++)
		if (f->ins[i].op == KO_input && (f->ins[i].aux == in || (in == IN_Q && f->ins[i].aux == IN_lse)))
			return 1;
	return 0;
}

static int cmpstate(const void *a, const void *b)
{
	return strcmp(((const KiState *)a)->name, ((const KiState *)b)->name);
}

static int policy_build(lua_State *L)
{
	static const char *const ok[] = { "score", "select", "merge", "when", "state", "observe", "obs", NULL };
	KdState *S = kd_state(L);
	KiFn *f = S->f;
	if (!lua_istable(L, 1))
		return kd_raise(L, "policy", "kvcc.policy \"name\" expects a table: kvcc.policy \"name\" { score = ..., select = ... }");
	if (S->declared)
		return kd_raise(L, "policy", "a file declares one policy");
	kd_builder(L);
	S->declared = 1;
	kd_checkfields(L, 1, "policy", ok);

	/* state declarations first: score and observe read them */
	lua_getfield(L, 1, "state");
	if (!lua_isnil(L, -1)) {
		if (!lua_istable(L, -1))
			return kd_raisefield(L, "state", "state must be a table { name = kvcc.token_state(init) }");
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			Rule *r = luaL_testudata(L, -1, RULE_MT);
			const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
			if (!valid_name(k) || !r || r->kind != RULE_state)
				return kd_raisefield(L, "state", "state entries must be name = kvcc.token_state(init)");
			if (f->nst >= KD_MAX_STATES)
				return kd_raisefield(L, "state", "too many states (at most %d)", KD_MAX_STATES);
			if (ki_addstate(f, k, r->init) < 0)
				return kd_raisefield(L, "state", "out of memory");
			lua_pop(L, 1);
		}
		/* Lua's table order is randomized per state: number the states by name so
		** one source always gives the same KIR (and compile-cache key) */
		if (f->nst > 1)          /* (an empty table: no array to sort, f->st is NULL) */
			qsort(f->st, (size_t)f->nst, sizeof *f->st, cmpstate);
	}
	lua_pop(L, 1);

	lua_getfield(L, 1, "score");
	if (!lua_isfunction(L, -1))
		return kd_raise(L, "policy", lua_isnil(L, -1) ? "policy '%s' has no score function" :
		                "score must be a function(x, st) returning an expression", f->name);
	kd_pushinputs(L);
	pushstate(L);
	lua_call(L, 2, 1);
	Expr *sx = luaL_testudata(L, -1, EXPR_MT);
	if (lua_type(L, -1) == LUA_TNUMBER) {
		f->score = kd_toref(L, -1, "score");
	} else if (!sx) {
		return kd_raisefield(L, "score", "score must return a kvcc expression, got %s", luaL_typename(L, -1));
	} else
		f->score = sx->ref;
	uint8_t sax = ki_refaxes(f, f->score);
	if (sax & ~AXM(AX_token)) {
		char buf[64];
		ki_axesstr(sax, buf, sizeof buf);
		const KiIns *si = &f->ins[KI_RIDX(f->score)];
		return kd_raiseat(L, si->line, si->col, "score must have axes [token] but has %s (reduce over "
		                  "the other axes, e.g. :mean(\"obs\"):mean(\"group\"))", buf);
	}
	if (!(sax & AXM(AX_token))) {   /* a constant or per-head score: make it a token tensor */
		KiRef t = kd_emit(L, "score", KO_index, KI_NIL, KI_NIL, KI_NIL, AX_token, 0, AXM(AX_token));
		KiRef z = kd_emit(L, "score", KO_mul, t, kd_kconst(L, 0), KI_NIL, -1, 0, 0);
		f->score = kd_emit(L, "score", KO_add, z, f->score, KI_NIL, -1, 0, 0);
	}
	lua_pop(L, 1);

	lua_getfield(L, 1, "observe");
	if (!lua_isnil(L, -1)) {
		if (!lua_isfunction(L, -1))
			return kd_raisefield(L, "observe", "observe must be a function(x, st) that assigns st.name = ...");
		if (!f->nst)
			return kd_raisefield(L, "observe", "observe needs a state table to update");
		S->in_observe = 1;
		kd_pushinputs(L);
		pushstate(L);
		lua_call(L, 2, 0);
		S->in_observe = 0;
	} else
		lua_pop(L, 1);

	lua_getfield(L, 1, "select");
	Rule *r = luaL_testudata(L, -1, RULE_MT);
	if (lua_isnil(L, -1))
		return kd_raise(L, "policy", "policy '%s' has no select rule (e.g. select = kvcc.topk { keep_recent = P.window })",
		                f->name);
	if (!r || r->kind != RULE_topk)
		return kd_raisefield(L, "select", "select must be a selection rule such as kvcc.topk { ... }");
	f->sel = r->sel;
	if (lua_getiuservalue(L, -1, 1) == LUA_TFUNCTION) {   /* keep = function(x) ... end */
		kd_pushinputs(L);
		lua_call(L, 1, 1);
		if (lua_type(L, -1) != LUA_TNUMBER && !luaL_testudata(L, -1, EXPR_MT))
			return kd_raiseat(L, r->line, r->col, "keep must return a number or a kvcc expression, got %s",
			                  luaL_typename(L, -1));
		f->sel.keep = kd_toref(L, -1, "keep");
		if (ki_refaxes(f, f->sel.keep)) {
			char buf[64];
			ki_axesstr(ki_refaxes(f, f->sel.keep), buf, sizeof buf);
			const KiIns *ki = &f->ins[KI_RIDX(f->sel.keep)];
			return kd_raiseat(L, ki->line, ki->col, "keep must be one count per (layer, head), a scalar, "
			                  "but has axes %s", buf);
		}
	}
	lua_pop(L, 2);

	lua_getfield(L, 1, "merge");
	kd_buildmerge(L, lua_gettop(L));
	lua_pop(L, 1);

	lua_getfield(L, 1, "when");
	r = luaL_testudata(L, -1, RULE_MT);
	if (!lua_isnil(L, -1) && (!r || (r->kind != RULE_prefill && r->kind != RULE_decode)))
		return kd_raisefield(L, "when", "when must be kvcc.prefill or kvcc.decode { every = N }");
	f->when.kind = r && r->kind == RULE_decode ? WH_decode : WH_prefill;
	f->when.every = r && r->kind == RULE_decode ? r->every : KI_NIL;
	if (r)
		f->when.line = r->line, f->when.col = r->col;
	lua_pop(L, 1);

	/* obs: how many observation queries the score reads */
	lua_getfield(L, 1, "obs");
	if (lua_isnil(L, -1)) {
		int w = ki_findparam(f, "window");
		if (usesinput(f, IN_Q) || usesinput(f, IN_qpos)) {
			if (w < 0)
				return kd_raise(L, "policy", "the score reads Q but the policy says not how many "
				                "observation queries it needs: add obs = <count>, obs = kvcc.all, "
				                "or a 'window' param");
			f->obs = KI_REF(RK_PAR, w);
		}
	} else {
		Rule *ra = luaL_testudata(L, -1, RULE_MT);
		if (ra && ra->kind == RULE_all)
			f->obs_all = 1;
		else
			f->obs = kd_countfield(L, 1, "obs", 0, MAX_TOKENS);
	}
	lua_pop(L, 1);

	int observed = 0;
	for (int i = 0; i < f->nst; i++) {
		if (!f->st[i].update)
			return kd_raisefield(L, "state", "state '%s' is never updated (assign st.%s = ... in observe)",
			                f->st[i].name, f->st[i].name);
		observed |= !ki_isscanstate(f, i);
	}
	if (observed && f->when.kind != WH_decode)
		return kd_raisefield(L, "state", "a policy with state needs when = kvcc.decode { every = N }");

	kd_newrule(L, RULE_policy, "policy");  /* the value the file returns */
	S->finished = 1;
	return 1;
}

/* Is the value at idx what kvcc.policy returned? */
int kd_ispolicy(lua_State *L, int idx)
{
	Rule *r = luaL_testudata(L, idx, RULE_MT);
	return r && r->kind == RULE_policy;
}

/* kv.policy "name" → a function taking the spec table */
static int l_policy(lua_State *L)
{
	KdState *S = kd_state(L);
	if (S->declared)
		return kd_raise(L, "policy", "a file declares one policy");
	kd_builder(L);
	const char *name = luaL_checkstring(L, 1);
	if (!valid_name(name))
		return kd_raise(L, "policy", "policy name '%s' must be an identifier of at most 31 characters", name);
	snprintf(S->f->name, sizeof S->f->name, "%s", name);
	kd_where(L, 1, "policy", &S->f->line, &S->f->col);
	lua_pushcfunction(L, policy_build);
	return 1;
}

static const luaL_Reg kvlib[] = {
	{ "params", l_params }, { "policy", l_policy }, { "weights", l_weights }, { "scan", l_scan },
	{ "softmax", m_softmax }, { "avgpool", m_avgpool }, { "maxpool", m_maxpool },
	{ "where", m_where }, { "cosine", m_cosine }, { "random", m_random }, { "dot", m_dot },
	{ "exp", m_exp }, { "log", m_log }, { "sqrt", m_sqrt }, { "abs", m_abs },
	{ "max", m_max }, { "min", m_min }, { "sum", m_sum }, { "mean", m_mean }, { "norm", m_norm },
	{ "std", m_std }, { "sin", m_sin }, { "cos", m_cos }, { "floor", m_floor }, { "round", m_round },
	{ "shift", m_shift }, { "rank", m_rank }, { "sigmoid", m_sigmoid }, { NULL, NULL }
};

/* kv.sofmax: an unknown name of the module is an error that names it */
static int lib_index(lua_State *L)
{
	static const char *names[sizeof kvlib / sizeof kvlib[0] + 32];
	int n = 0;
	for (const luaL_Reg *r = kvlib; r->name; r++)
		names[n++] = r->name;
	for (const luaL_Reg *r = kd_rulefns; r->name && n < (int)(sizeof names / sizeof *names) - 4; r++)
		names[n++] = r->name;
	names[n++] = "drop", names[n++] = "prefill", names[n++] = "all";
	names[n] = NULL;
	const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
	char hint[600];
	kd_suggest(k, names, "kvcc has", hint, sizeof hint);
	return kd_raise(L, k, "kvcc has no function or value '%s'%s", k ? k : "?", hint);
}

static int lib_newindex(lua_State *L)
{
	return kd_raise(L, lua_tostring(L, 2), "the kvcc module is read-only");
}

/* getmetatable/setmetatable cannot reach the kd_builder's metatables (a __gc
** added to one would make finalizers of every later expression). */
static void protect(lua_State *L)
{
	lua_pushliteral(L, "kvcc sandbox");
	lua_setfield(L, -2, "__metatable");
}

int kd_openlib(lua_State *L)
{
	luaL_newmetatable(L, EXPR_MT);
	luaL_setfuncs(L, expr_meta, 0);
	luaL_newlib(L, expr_methods);
	lua_setfield(L, -2, "methods");
	protect(L);
	lua_pop(L, 1);
	luaL_newmetatable(L, RULE_MT);
	protect(L);
	lua_pop(L, 1);

	luaL_newlib(L, kvlib);
	luaL_setfuncs(L, kd_rulefns, 0);
	kd_newrule(L, RULE_drop, "drop");
	lua_setfield(L, -2, "drop");
	kd_newrule(L, RULE_prefill, "prefill");
	lua_setfield(L, -2, "prefill");
	kd_newrule(L, RULE_all, "all");
	lua_setfield(L, -2, "all");
	lua_newtable(L);
	lua_pushcfunction(L, lib_index);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, lib_newindex);
	lua_setfield(L, -2, "__newindex");
	protect(L);
	lua_setmetatable(L, -2);
	return 1;
}
