/*
** KIR passes: verified KiFn in, verified KiFn out, same meaning.
**
**   fold   constant folding of KF_FOLD ops whose operands are all constants,
**          the identities of the op table (ops.h lid, rid: x*1, 1*x, x+0, 0+x,
**          x-0, x/1 → x) and where(const, b, c) → b or c, when the result
**          axes stay the same
**   canon  operands of KF_COMM ops in canonical order: instructions first,
**          then params, then constants, lower index first
**   cse    identical instructions (op, axes, axis, aux, operands) merged into
**          the first one, which keeps its position
**   dce    instructions and constants that no root (score, obs, state
**          updates, select / merge / when fields) reaches are removed;
**          params and states stay
**
** Every op is pure (ops.h), so merging and removing never changes what a
** policy computes. Folding evaluates in double with exactly the expressions
** of the interpreter's elementwise evaluator (ir.c ki_evalew, the op table's
** value column), so a folded constant is bit for bit the value the
** interpreter would compute. The one identity that is not bit-exact is x+0
** (and x-(-0)) → x when x is -0: the result keeps the sign of zero, which
** compares equal. canon relies on KF_COMM ops being exactly commutative
** (ki_evalew's max and min are, for the sign of zero too).
**
** Instructions a pass makes redundant (folded, merged) are removed by the
** pass itself; all refs (operands, score, obs, state updates, select and
** merge fields, when.every) are rewritten, and instructions keep their order, so
** operands still point backwards.
**
** When memory runs out a pass stops with "out of memory" and leaves a valid
** policy that means the same (a fold partly done, say), never a broken one.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compiler/ir.h"

/* --- rewriting refs -------------------------------------------------------------- */

static int oom(const KiFn *f, KiErr *e)
{
	ki_error(e, f->src, 0, 0, "out of memory");
	return -1;
}

/* Apply fn to every ref of the policy outside the instruction array. */
static void maproots(KiFn *f, KiRef (*fn)(KiRef, void *), void *ud)
{
	f->score = fn(f->score, ud);
	f->obs = fn(f->obs, ud);
	for (int i = 0; i < f->nst; i++)
		f->st[i].update = fn(f->st[i].update, ud);
	f->sel.keep_first = fn(f->sel.keep_first, ud);
	f->sel.keep_recent = fn(f->sel.keep_recent, ud);
	f->sel.chunk = fn(f->sel.chunk, ud);
	f->sel.beta = fn(f->sel.beta, ud);
	f->sel.tau = fn(f->sel.tau, ud);
	f->sel.mass = fn(f->sel.mass, ud);
	f->sel.floor = fn(f->sel.floor, ud);
	f->sel.keep = fn(f->sel.keep, ud);
	f->sel.sa = fn(f->sel.sa, ud);
	f->sel.sb = fn(f->sel.sb, ud);
	f->when.every = fn(f->when.every, ud);
	KiMerge *m = &f->merge;
	KiRef *mr[] = { &m->sim, &m->threshold, &m->beta, &m->weight, &m->self, &m->m, &m->rows, &m->iters };
	for (size_t i = 0; i < sizeof mr / sizeof mr[0]; i++)
		*mr[i] = fn(*mr[i], ud);
}

typedef struct Remap {
	const KiRef *rep;   /* old instruction → its replacement (itself when kept) */
	const int *newidx;  /* old index of a kept instruction → new index */
} Remap;

static KiRef remap(KiRef r, void *ud)
{
	const Remap *m = ud;
	if (KI_RKIND(r) != RK_INS)
		return r;
	KiRef x = m->rep[KI_RIDX(r)];
	return KI_RKIND(x) == RK_INS ? KI_REF(RK_INS, m->newidx[KI_RIDX(x)]) : x;
}

/*
** Finish a pass: rep[i] is KI_REF(RK_INS, i) for an instruction that stays,
** otherwise what replaces it (an earlier instruction that stays, a constant
** or a param; KI_NIL for a dead one nothing uses). Drops the replaced ones,
** renumbers densely and rewrites every ref.
*/
static int compact(KiFn *f, const KiRef *rep, KiErr *e)
{
	int *newidx = ki_realloc(NULL, (size_t)f->nins * sizeof *newidx);
	if (!newidx)
		return oom(f, e);
	int n = 0;
	for (int i = 0; i < f->nins; i++)
		newidx[i] = rep[i] == KI_REF(RK_INS, i) ? n++ : -1;
	Remap m = { rep, newidx };
	for (int i = 0; i < f->nins; i++) {
		if (newidx[i] < 0)
			continue;
		KiIns in = f->ins[i];
		for (int k = 0; k < 3; k++)
			in.arg[k] = remap(in.arg[k], &m);
		f->ins[newidx[i]] = in;
	}
	f->nins = n;
	maproots(f, remap, &m);
	free(newidx);
	return 0;
}

static KiRef *identity(const KiFn *f)
{
	KiRef *rep = ki_realloc(NULL, (size_t)f->nins * sizeof *rep);
	for (int i = 0; rep && i < f->nins; i++)
		rep[i] = KI_REF(RK_INS, i);
	return rep;
}

/* An operand through the replacements decided so far (earlier instructions). */
static KiRef through(const KiRef *rep, KiRef r)
{
	return KI_RKIND(r) == RK_INS ? rep[KI_RIDX(r)] : r;
}

/* --- fold ------------------------------------------------------------------------ */

static int iscon(const KiFn *f, KiRef r, double v)
{
	return KI_RKIND(r) == RK_CON && f->con[KI_RIDX(r)] == v;
}

/* What instruction i simplifies to, or KI_NIL if it stays (or memory ran out for
** its constant: *nomem is set, and i stays as it is). */
static KiRef fold1(KiFn *f, int i, int *nomem)
{
	const KiIns *in = &f->ins[i];
	if (!(ki_flags(in->op) & KF_FOLD))
		return KI_NIL;
	int n = ki_nargs(in->op), allcon = 1;
	double v[3] = { 0, 0, 0 };
	for (int k = 0; k < n; k++) {
		if (KI_RKIND(in->arg[k]) != RK_CON)
			allcon = 0;
		else
			v[k] = f->con[KI_RIDX(in->arg[k])];
	}
	if (allcon && n > 0) {
		KiRef c = ki_const(f, ki_evalew(in->op, v[0], v[1], v[2]));
		*nomem = c == KI_NIL;
		return c;
	}
	KiRef a = in->arg[0], b = in->arg[1], x = KI_NIL;
	const KiSem *s = ki_sem(in->op);
	if (in->op == KO_where) {
		if (KI_RKIND(a) == RK_CON)
			x = v[0] != 0 ? b : in->arg[2];
	} else if (n == 2 && !isnan(s->rid) && iscon(f, b, s->rid))
		x = a;                                  /* x op rid */
	else if (n == 2 && !isnan(s->lid) && iscon(f, a, s->lid))
		x = b;                                  /* lid op x */
	if (x != KI_NIL && ki_refaxes(f, x) == in->axes)
		return x;
	return KI_NIL;
}

/* Fold constants and identities, first to last, so folds cascade in one pass. */
int ki_fold(KiFn *f, KiErr *e)
{
	KiRef *rep = identity(f);
	int nomem = !rep;
	for (int i = 0; i < f->nins && !nomem; i++) {
		KiIns *in = &f->ins[i];
		for (int k = 0; k < 3; k++)
			in->arg[k] = through(rep, in->arg[k]);
		KiRef x = fold1(f, i, &nomem);
		if (x != KI_NIL)
			rep[i] = x;
	}
	/* out of memory halfway: the folds so far are still applied (the refs of later
	** instructions are rewritten by compact), which means the same */
	int rc = rep ? compact(f, rep, e) : 0;
	free(rep);
	return nomem ? oom(f, e) : rc;
}

/* --- canon ----------------------------------------------------------------------- */

/* Sort key of an operand: instructions, then params, then constants; by index. */
static uint64_t rank(KiRef r)
{
	static const int order[] = { [RK_NIL] = 3, [RK_INS] = 0, [RK_CON] = 2, [RK_PAR] = 1 };
	int kind = KI_RKIND(r);
	return ((uint64_t)(kind <= RK_PAR ? order[kind] : 4) << 32) | (uint64_t)KI_RIDX(r);
}

/* Put the operands of commutative ops in rank order, so that a+b and b+a
** look the same to cse and to the cache key. */
int ki_canon(KiFn *f, KiErr *e)
{
	(void)e;
	for (int i = 0; i < f->nins; i++) {
		KiIns *in = &f->ins[i];
		if ((ki_flags(in->op) & KF_COMM) && ki_nargs(in->op) == 2 &&
		    rank(in->arg[1]) < rank(in->arg[0])) {
			KiRef t = in->arg[0];
			in->arg[0] = in->arg[1];
			in->arg[1] = t;
		}
	}
	return 0;
}

/* --- cse ------------------------------------------------------------------------- */

/* The fields that decide what an instruction computes (not its position). */
typedef struct Key {
	uint8_t op, axes, axis, aux;
	KiRef arg[3];
} Key;

static Key key(const KiIns *in)
{
	Key k;
	memset(&k, 0, sizeof k);
	k.op = in->op, k.axes = in->axes, k.axis = in->axis, k.aux = in->aux;
	memcpy(k.arg, in->arg, sizeof k.arg);
	return k;
}

/* Merge identical instructions into their first occurrence (a hash table of
** the instructions kept so far; operands are rewritten first, so chains of
** duplicates merge in one pass). */
int ki_cse(KiFn *f, KiErr *e)
{
	KiRef *rep = identity(f);
	size_t cap = 16;
	while (cap < 2 * (size_t)f->nins)
		cap *= 2;
	int *tab = ki_realloc(NULL, cap * sizeof *tab);
	if (!rep || !tab) {
		free(rep);
		free(tab);
		return oom(f, e);
	}
	for (size_t s = 0; s < cap; s++)
		tab[s] = -1;
	for (int i = 0; i < f->nins; i++) {
		KiIns *in = &f->ins[i];
		for (int k = 0; k < 3; k++)
			in->arg[k] = through(rep, in->arg[k]);
		if (!(ki_flags(in->op) & KF_PURE))
			continue;
		Key ki = key(in);
		size_t s = ki_fnv(&ki, sizeof ki, 0) & (cap - 1);
		for (; tab[s] >= 0; s = (s + 1) & (cap - 1)) {
			Key kj = key(&f->ins[tab[s]]);
			if (memcmp(&ki, &kj, sizeof ki) == 0)
				break;
		}
		if (tab[s] >= 0)
			rep[i] = KI_REF(RK_INS, tab[s]);
		else
			tab[s] = i;
	}
	free(tab);
	int rc = compact(f, rep, e);
	free(rep);
	return rc;
}

/* --- dce ------------------------------------------------------------------------- */

static KiRef markroot(KiRef r, void *ud)
{
	unsigned char *live = ud;
	if (KI_RKIND(r) == RK_INS)
		live[KI_RIDX(r)] = 1;
	return r;
}

static KiRef markcon(KiRef r, void *ud)
{
	unsigned char *used = ud;
	if (KI_RKIND(r) == RK_CON)
		used[KI_RIDX(r)] = 1;
	return r;
}

static KiRef mapcon(KiRef r, void *ud)
{
	const int *newcon = ud;
	return KI_RKIND(r) == RK_CON ? KI_REF(RK_CON, newcon[KI_RIDX(r)]) : r;
}

/* Remove what no root reaches: instructions (marked backwards from the
** roots), then constants no remaining ref uses. */
int ki_dce(KiFn *f, KiErr *e)
{
	unsigned char *live = ki_realloc(NULL, (size_t)f->nins + 1);
	KiRef *rep = identity(f);
	unsigned char *used = ki_realloc(NULL, (size_t)f->ncon + 1);
	int *newcon = ki_realloc(NULL, ((size_t)f->ncon + 1) * sizeof *newcon);
	if (!live || !rep || !used || !newcon) {
		free(live);
		free(rep);
		free(used);
		free(newcon);
		return oom(f, e);
	}
	memset(live, 0, (size_t)f->nins + 1);
	maproots(f, markroot, live);
	for (int i = f->nins - 1; i >= 0; i--) {
		if (!live[i]) {
			rep[i] = KI_NIL;
			continue;
		}
		for (int k = 0; k < 3; k++)
			markroot(f->ins[i].arg[k], live);
	}
	int rc = compact(f, rep, e);
	free(rep);
	free(live);
	if (rc != 0) {
		free(used);
		free(newcon);
		return rc;
	}
	memset(used, 0, (size_t)f->ncon + 1);
	maproots(f, markcon, used);
	for (int i = 0; i < f->nins; i++)
		for (int k = 0; k < 3; k++)
			markcon(f->ins[i].arg[k], used);
	int n = 0;
	for (int i = 0; i < f->ncon; i++) {
		newcon[i] = used[i] ? n : -1;
		if (used[i])
			f->con[n++] = f->con[i];
	}
	f->ncon = n;
	for (int i = 0; i < f->nins; i++)
		for (int k = 0; k < 3; k++)
			f->ins[i].arg[k] = mapcon(f->ins[i].arg[k], newcon);
	maproots(f, mapcon, newcon);
	free(used);
	free(newcon);
	return 0;
}

/* --- the pass driver -------------------------------------------------------------- */

static const struct {
	const char *name;
	int (*run)(KiFn *, KiErr *);
} passes[] = {
	{ "fold", ki_fold },
	{ "canon", ki_canon },
	{ "cse", ki_cse },
	{ "dce", ki_dce },
};
#define NPASS ((int)(sizeof passes / sizeof passes[0]))

/* Append " (after pass 'x')" to a verifier message: a failure there is a
** bug in the pass, and the message should say which. */
static void after(KiErr *e, const char *pass)
{
	size_t n = strlen(e->msg);
	snprintf(e->msg + n, sizeof e->msg - n, " (after pass '%s')", pass);
}

/*
** Run the comma-separated passes `names` in order ("" runs none). All names
** are checked before any pass runs. With `verify`, ki_verify checks the
** input and the result of each pass; `dump`, when given, sees the policy
** after each pass. Returns 0, or -1 with e set.
*/
int ki_runpasses(KiFn *f, const char *names, int verify, KiErr *e,
                 void (*dump)(const KiFn *, const char *pass, void *), void *ud)
{
	int list[64], n = 0;
	const char *p = names ? names : "";
	while (*p) {
		size_t len = strcspn(p, ",");
		int k = -1;
		for (int i = 0; i < NPASS; i++)
			if (strlen(passes[i].name) == len && memcmp(passes[i].name, p, len) == 0)
				k = i;
		if (k < 0) {
			ki_error(e, NULL, 0, 0, "unknown pass '%.*s' (passes: fold, canon, cse, dce)",
			         (int)(len < 40 ? len : 40), p);
			return -1;
		}
		if (n == (int)(sizeof list / sizeof list[0])) {
			ki_error(e, NULL, 0, 0, "too many passes (at most %d)", n);
			return -1;
		}
		list[n++] = k;
		p += len;
		if (*p == ',' && *++p == 0) {
			ki_error(e, NULL, 0, 0, "unknown pass '' (passes: fold, canon, cse, dce)");
			return -1;
		}
	}
	if (verify && ki_verify(f, e) != 0)
		return -1;
	for (int i = 0; i < n; i++) {
		const char *name = passes[list[i]].name;
		if (passes[list[i]].run(f, e) != 0)
			return -1;
		if (verify && ki_verify(f, e) != 0) {
			after(e, name);
			return -1;
		}
		if (dump)
			dump(f, name, ud);
	}
	return 0;
}
