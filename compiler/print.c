/*
** The KIR text form (doc/kir.md has the grammar). The printer is the
** definition; parse.c reads exactly what this writes, so that
** print(parse(print(f))) == print(f) for every policy.
**
**   policy "snapkv" source "policies/snapkv.lua" @12:8
**   param window = 64 @3:26
**   %0 = input Q [group, obs, chan] @7:12
**   %1 = input K [token, chan] @7:22
**   %2 = dot %0, %1 chan [group, obs, token] @7:18
**   ...
**   score %9
**   obs $window
**   select topk scope=head keep_first=0 keep_recent=$window chunk=1 schedule=none beta=20 @14:12
**   merge drop                  (or: merge nearest sim=%12 threshold=$thr weight=1 ...)
**   when prefill
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "compiler/ir.h"

typedef struct Buf {
	char *s;
	size_t n, cap;
	int oom;              /* memory ran out: later puts do nothing, ki_print gives NULL */
} Buf;

static void put(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(Buf *b, const char *fmt, ...)
{
	va_list ap;
	while (!b->oom) {
		size_t room = b->cap - b->n;
		va_start(ap, fmt);
		int k = vsnprintf(b->s + b->n, room, fmt, ap);
		va_end(ap);
		if (k >= 0 && (size_t)k < room) {
			b->n += (size_t)k;
			return;
		}
		char *s = k >= 0 ? ki_realloc(b->s, 2 * b->cap + (size_t)k + 64) : NULL;
		if (!s) {
			b->oom = 1;
			return;
		}
		b->s = s, b->cap = 2 * b->cap + (size_t)k + 64;
	}
}

/* Doubles print so that strtod gives back the same bits. */
static void numstr(double v, char *buf, size_t len)
{
	if (isnan(v))
		snprintf(buf, len, "nan");
	else if (isinf(v))
		snprintf(buf, len, v < 0 ? "-inf" : "inf");
	else if (v == floor(v) && fabs(v) < 1e15)
		snprintf(buf, len, "%.0f", v == 0 && signbit(v) ? -0.0 : v);
	else
		snprintf(buf, len, "%.17g", v);
}

void ki_printref(const KiFn *f, KiRef r, char *buf, size_t len)
{
	int i = KI_RIDX(r);
	switch (KI_RKIND(r)) {
	case RK_INS: snprintf(buf, len, "%%%d", i); break;
	case RK_PAR: snprintf(buf, len, "$%s", i < f->npar ? f->par[i].name : "?"); break;
	case RK_CON: numstr(i < f->ncon ? f->con[i] : NAN, buf, len); break;
	default: snprintf(buf, len, "nil"); break;
	}
}

static void putpos(Buf *b, uint32_t line, uint32_t col)
{
	if (line)
		put(b, " @%u:%u", line, col);
}

static void putins(Buf *b, const KiFn *f, int i)
{
	const KiIns *in = &f->ins[i];
	char tmp[64];
	put(b, "%%%d = %s", i, ki_opname(in->op));
	switch (in->op) {
	case KO_input: put(b, " %s", ki_inputname(in->aux)); break;
	case KO_state:
	case KO_carry: put(b, " %s", in->aux < f->nst ? f->st[in->aux].name : "?"); break;
	case KO_weight: put(b, " %s", in->aux < f->nw ? f->w[in->aux].name : "?"); break;
	case KO_info: put(b, " %s", ki_infoname(in->aux)); break;
	case KO_pinfo: put(b, " %s", ki_pinfoname(in->aux)); break;
	case KO_index:
	case KO_size: put(b, " %s", ki_axisname(in->axis)); break;
	default:
		if (in->op == KO_scan)
			put(b, " %s", in->aux < f->nst ? f->st[in->aux].name : "?");
		for (int k = 0; k < ki_nargs(in->op); k++) {
			ki_printref(f, in->arg[k], tmp, sizeof tmp);
			put(b, "%s %s", k ? "," : "", tmp);
		}
		if (ki_rule(in->op) == AR_RED || ki_rule(in->op) == AR_DOT || ki_rule(in->op) == AR_KEEP ||
		    ki_rule(in->op) == AR_SEG)
			put(b, " %s", ki_axisname(in->axis));
	}
	ki_axesstr(in->axes, tmp, sizeof tmp);
	put(b, " %s", tmp);
	putpos(b, in->line, in->col);
	put(b, "\n");
}

/* merge KIND field=value ... @l:c (the fields of its kind, in this order) */
static void putmerge(Buf *b, const KiFn *f)
{
	const KiMerge *m = &f->merge;
	char t[64];
	put(b, "merge %s", ki_mergename(m->kind));
	if (m->kind == MG_nearest || m->kind == MG_runs) {
		ki_printref(f, m->sim, t, sizeof t);
		put(b, " sim=%s", t);
	}
	if (m->kind == MG_next) {
		ki_printref(f, m->m, t, sizeof t);
		put(b, " m=%s", t);
	}
	if (m->kind == MG_nearest || m->kind == MG_runs) {
		if (m->thr == MT_none)
			put(b, " threshold=none");
		else if (m->thr == MT_adaptive) {
			ki_printref(f, m->beta, t, sizeof t);
			put(b, " threshold=adaptive beta=%s", t);
		} else {
			ki_printref(f, m->threshold, t, sizeof t);
			put(b, " threshold=%s", t);
		}
	}
	if (m->kind == MG_nearest || m->kind == MG_runs || m->kind == MG_next) {
		ki_printref(f, m->weight, t, sizeof t);
		put(b, " weight=%s", t);
		ki_printref(f, m->self, t, sizeof t);
		put(b, " self=%s update=%s keys=%d values=%d", t, m->update == MU_sum ? "sum" : "mean",
		    m->keys, m->values);
	}
	if (m->kind == MG_summary) {
		ki_printref(f, m->rows, t, sizeof t);
		put(b, " rows=%s", t);
		ki_printref(f, m->iters, t, sizeof t);
		put(b, " iters=%s", t);
	}
	if (m->kind != MG_drop)
		put(b, " bias=%d", m->bias);
	putpos(b, m->line, m->col);
	put(b, "\n");
}

/* weight NAME [axis, ...] with out=N for a fixed-size out axis */
static void putweight(Buf *b, const KiWeight *w)
{
	put(b, "weight %s [", w->name);
	for (int k = 0; k < w->ndim; k++) {
		put(b, "%s%s", k ? ", " : "", ki_waxisname(w->ax[k]));
		if (w->ax[k] == WA_out && w->size > 0)
			put(b, "=%d", (int)w->size);
	}
	put(b, "]");
	putpos(b, w->line, w->col);
	put(b, "\n");
}

/* The select line: the rule, the fields every rule has, then the fields of
** the new rules only when they are set (so older texts print unchanged). */
static void putselect(Buf *b, const KiFn *f)
{
	const KiSelect *s = &f->sel;
	char t1[64], t2[64], t3[64], t4[64];
	ki_printref(f, s->keep_first, t1, sizeof t1);
	ki_printref(f, s->keep_recent, t2, sizeof t2);
	ki_printref(f, s->chunk, t3, sizeof t3);
	ki_printref(f, s->beta, t4, sizeof t4);
	put(b, "select %s scope=%s keep_first=%s keep_recent=%s chunk=%s schedule=%s beta=%s",
	    ki_selname(s->kind), ki_scopename(s->scope), t1, t2, t3, ki_schedname(s->sched), t4);
	static const char *const names[] = { "tau", "p", "floor", "keep", "sa", "sb" };
	const KiRef refs[] = { s->tau, s->mass, s->floor, s->keep, s->sa, s->sb };
	for (int k = 0; k < 6; k++)
		if (refs[k]) {
			ki_printref(f, refs[k], t1, sizeof t1);
			put(b, " %s=%s", names[k], t1);
		}
	if (s->nocap)
		put(b, " cap=0");
	putpos(b, s->line, s->col);
}

char *ki_print(const KiFn *f)
{
	Buf b = { ki_realloc(NULL, 1024), 0, 1024, 0 };
	char t1[64];
	if (!b.s)
		return NULL;
	b.s[0] = 0;
	put(&b, "policy \"%s\" source \"%s\"", f->name, f->src);
	putpos(&b, f->line, f->col);
	put(&b, "\n");
	for (int i = 0; i < f->npar; i++) {
		numstr(f->par[i].def, t1, sizeof t1);
		put(&b, "param %s = %s", f->par[i].name, t1);
		putpos(&b, f->par[i].line, f->par[i].col);
		put(&b, "\n");
	}
	for (int i = 0; i < f->nst; i++) {
		numstr(f->st[i].init, t1, sizeof t1);
		put(&b, "state %s = %s\n", f->st[i].name, t1);
	}
	for (int i = 0; i < f->nw; i++)
		putweight(&b, &f->w[i]);
	for (int i = 0; i < f->nins; i++)
		putins(&b, f, i);
	if (f->score) {
		ki_printref(f, f->score, t1, sizeof t1);
		put(&b, "score %s\n", t1);
	}
	if (f->obs_all)
		put(&b, "obs all\n");
	else if (f->obs) {
		ki_printref(f, f->obs, t1, sizeof t1);
		put(&b, "obs %s\n", t1);
	}
	for (int i = 0; i < f->nst; i++)
		if (f->st[i].update && !ki_isscanstate(f, i)) {
			ki_printref(f, f->st[i].update, t1, sizeof t1);
			put(&b, "observe %s %s\n", f->st[i].name, t1);
		}
	putselect(&b, f);
	put(&b, "\n");
	putmerge(&b, f);
	if (f->when.kind == WH_decode) {
		ki_printref(f, f->when.every, t1, sizeof t1);
		put(&b, "when decode every=%s", t1);
	} else
		put(&b, "when prefill");
	putpos(&b, f->when.line, f->when.col);
	put(&b, "\n");
	if (b.oom) {
		free(b.s);
		return NULL;
	}
	return b.s;
}
