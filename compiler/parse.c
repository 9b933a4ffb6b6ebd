/*
** Parser of the KIR text form: text in, KiFn out. It reads exactly what
** print.c writes (print.c is the definition, doc/kir.md the grammar), so
** print(parse(print(f))) == print(f). One pass, one token of lookahead, no
** syntax tree: each statement goes straight into the KiFn.
**
** The parser checks what the text alone can tell: syntax, names (ops,
** inputs, axes, params, states), instruction numbering, that every %N
** names an earlier instruction, and the limits of ir.h (a .kir file holds
** no more than a policy.lua may build). Whether the instructions make sense (arity
** with nil operands, axes, where attn may appear) is the verifier's job.
**
** Errors point into the text being parsed ("file:line:col: error: msg",
** at the offending token), not at the policy positions the text records.
** The first error ends the parse: it longjmps back to ki_parsen, which
** frees the half-built KiFn and returns NULL.
*/
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compiler/ir.h"
#include "compiler/lex.h"

typedef struct Parser {
	KiLex lx;
	KiTok tok;            /* the current token (one token of lookahead) */
	const char *file;     /* name used in error messages */
	KiErr *e;
	KiFn *f;
	jmp_buf jb;           /* where an error goes */
	int inins;            /* parsing an instruction (for the forward reference message) */
	int score, obs, sel, merge, when;        /* statements seen, for duplicates */
	int scanned;          /* 1 + the state the instruction being read is the scan of */
	unsigned char observed[KI_MAXST];        /* states with an observe line */
} Parser;

static void fail(Parser *P, const KiTok *t, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));
static void fail(Parser *P, const KiTok *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	ki_verror(P->e, P->file, t->line, t->col, fmt, ap);
	va_end(ap);
	longjmp(P->jb, 1);
}

/* A token as an error message shows it: 'text' (at most 40 bytes, with
** unprintable bytes as '?'), or "end of line" / "end of input". */
static const char *show(const KiTok *t, char *buf, size_t len)
{
	if (t->t == KT_NL || t->t == KT_EOF) {
		snprintf(buf, len, "%s", ki_tokname(t->t));
		return buf;
	}
	size_t n = t->len < 40 ? t->len : 40, k = 0;
	buf[k++] = '\'';
	for (size_t i = 0; i < n && k + 5 < len; i++) {
		unsigned char c = (unsigned char)t->s[i];
		buf[k++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	if (n < t->len && k + 5 < len)
		buf[k++] = '.', buf[k++] = '.', buf[k++] = '.';
	buf[k++] = '\'';
	buf[k] = 0;
	return buf;
}

/* Fail with "expected <what>, found <current token>". */
static void expected(Parser *P, const char *what) __attribute__((noreturn));
static void expected(Parser *P, const char *what)
{
	char buf[64];
	fail(P, &P->tok, "expected %s, found %s", what, show(&P->tok, buf, sizeof buf));
}

static void next(Parser *P)
{
	if (ki_lex(&P->lx, &P->tok) == KT_ERR)
		fail(P, &P->tok, "%s", P->tok.err);
}

static int is(const Parser *P, const char *word)
{
	return P->tok.t == KT_IDENT && strlen(word) == P->tok.len && memcmp(P->tok.s, word, P->tok.len) == 0;
}

static void expect(Parser *P, int t, const char *what)
{
	if (P->tok.t != t)
		expected(P, what);
	next(P);
}

static void endline(Parser *P)
{
	if (P->tok.t != KT_EOF)
		expect(P, KT_NL, "end of line");
}

/* name -> IDENT. The number words inf and nan are names too where a name
** is expected, so that a param called `inf` prints and parses back. */
static KiTok name(Parser *P, const char *what)
{
	KiTok t = P->tok;
	if (!(t.t == KT_IDENT || (t.t == KT_NUM && (t.s[0] == 'i' || t.s[0] == 'n'))))
		expected(P, what);
	next(P);
	return t;
}

/* A name copied into a C string of at most len-1 bytes; longer is an error. */
static void namecpy(Parser *P, const KiTok *t, char *buf, size_t len, const char *what)
{
	if (t->len >= len)
		fail(P, t, "%s name too long (at most %zu bytes)", what, len - 1);
	memcpy(buf, t->s, t->len);
	buf[t->len] = 0;
}

static int tokeq(const KiTok *t, const char *s)
{
	return strlen(s) == t->len && memcmp(t->s, s, t->len) == 0;
}

/* pos -> [POSITION]; optional. Line 0 means "unknown" and is never printed. */
static void position(Parser *P, uint32_t *line, uint32_t *col)
{
	*line = *col = 0;
	if (P->tok.t != KT_POS)
		return;
	if (P->tok.a == 0)
		fail(P, &P->tok, "bad position (lines count from 1)");
	*line = P->tok.a, *col = P->tok.b;
	next(P);
}

/* ref -> %N | $name | NUMBER | nil */
static int isoperand(const Parser *P)
{
	int t = P->tok.t;
	return t == KT_INS || t == KT_PAR || t == KT_NUM || is(P, "nil");
}

static KiRef operand(Parser *P)
{
	KiFn *f = P->f;
	KiTok t = P->tok;
	char buf[64];
	KiRef r;
	switch (t.t) {
	case KT_INS:
		if ((int)t.a >= f->nins && P->inins)
			fail(P, &t, "forward reference to %%%u in instruction %%%d", t.a, f->nins);
		if ((int)t.a >= f->nins)
			fail(P, &t, "undefined instruction %%%u (there are %d)", t.a, f->nins);
		r = KI_REF(RK_INS, t.a);
		break;
	case KT_PAR: {
		int i = -1;
		if (t.len - 1 < sizeof buf) {
			memcpy(buf, t.s + 1, t.len - 1);
			buf[t.len - 1] = 0;
			i = ki_findparam(f, buf);
		}
		if (i < 0)
			fail(P, &t, "unknown param %s", show(&t, buf, sizeof buf));
		r = KI_REF(RK_PAR, i);
		break;
	}
	case KT_NUM:
		if ((r = ki_const(f, t.num)) == KI_NIL)
			fail(P, &t, "out of memory");
		break;
	default:
		if (!is(P, "nil"))
			expected(P, "an operand (%N, $param, number or nil)");
		r = KI_NIL;
	}
	next(P);
	return r;
}

/* axis -> group | obs | token | chan  (head names an instance index, not an axis) */
static int axisname(Parser *P)
{
	char buf[64];
	KiTok t = P->tok;
	if (t.t != KT_IDENT)
		expected(P, "an axis name");
	int ax = ki_axisbyname(t.s, t.len);
	if (ax < 0)
		fail(P, &t, "unknown axis %s", show(&t, buf, sizeof buf));
	if (ax >= AX_NUM)
		fail(P, &t, "%s is not a tensor axis", show(&t, buf, sizeof buf));
	next(P);
	return ax;
}

static int statename(Parser *P);

/* axes -> '[' [axis {',' axis}] ']'  (tensor axes only, each at most once) */
static uint8_t axeslist(Parser *P)
{
	uint8_t m = 0;
	char buf[64];
	expect(P, KT_LBRACK, "'[' (the result axes)");
	if (P->tok.t == KT_RBRACK) {
		next(P);
		return 0;
	}
	for (;;) {
		KiTok t = P->tok;
		int ax = axisname(P);
		if (m & AXM(ax))
			fail(P, &t, "duplicate axis %s", show(&t, buf, sizeof buf));
		m |= AXM(ax);
		if (P->tok.t == KT_RBRACK)
			break;
		expect(P, KT_COMMA, "',' or ']'");
	}
	next(P);
	return m;
}

/*
** ins -> %N '=' op body axes [POSITION]
** body -> input NAME | state NAME | info NAME | index axis | size axis
**       | [ref {',' ref}] [axis]      (nargs refs; an axis for RED, DOT, KEEP)
*/
static void instruction(Parser *P)
{
	KiFn *f = P->f;
	KiTok t = P->tok;
	char buf[64];
	if ((int)t.a != f->nins)
		fail(P, &t, "expected instruction %%%d, found %%%u (instructions are numbered in order)",
		     f->nins, t.a);
	if (f->nins >= KI_MAXINS)
		fail(P, &t, "policy too large (more than %d KIR instructions)", KI_MAXINS);
	next(P);
	P->inins = 1;
	expect(P, KT_EQ, "'='");
	KiTok optok = name(P, "an op name");
	int op = ki_opbyname(optok.s, optok.len);
	if (op < 0)
		fail(P, &optok, "unknown op %s", show(&optok, buf, sizeof buf));
	KiIns in;
	memset(&in, 0, sizeof in);
	in.op = (uint8_t)op;
	in.axis = AX_NONE;
	KiTok nt;
	switch (op) {
	case KO_input: {
		nt = name(P, "an input name (K V Q lse pos qpos)");
		int k = ki_inputbyname(nt.s, nt.len);
		if (k < 0)
			fail(P, &nt, "unknown input %s (inputs: K V Q lse pos qpos)",
			     show(&nt, buf, sizeof buf));
		in.aux = (uint8_t)k;
		break;
	}
	case KO_state:
	case KO_carry:
		in.aux = (uint8_t)statename(P);
		break;
	case KO_weight: {
		char wname[32] = "";
		nt = name(P, "a weight name");
		int k = -1;
		if (nt.len < sizeof wname) {
			memcpy(wname, nt.s, nt.len);
			wname[nt.len] = 0;
			k = ki_findweight(f, wname);
		}
		if (k < 0)
			fail(P, &nt, "unknown weight %s", show(&nt, buf, sizeof buf));
		in.aux = (uint8_t)k;
		break;
	}
	case KO_info: {
		nt = name(P, "an info name (scale layer head nlayers nheads step)");
		int k = ki_infobyname(nt.s, nt.len);
		if (k < 0)
			fail(P, &nt, "unknown info %s (scale layer head nlayers nheads step)",
			     show(&nt, buf, sizeof buf));
		in.aux = (uint8_t)k;
		break;
	}
	case KO_pinfo: {
		nt = name(P, "a pair value name (sim absorbed ntargets ecount kcount)");
		int k = ki_pinfobyname(nt.s, nt.len);
		if (k < 0)
			fail(P, &nt, "unknown pair value %s (sim absorbed ntargets ecount kcount)",
			     show(&nt, buf, sizeof buf));
		in.aux = (uint8_t)k;
		break;
	}
	case KO_index:
	case KO_size:
		in.axis = (uint8_t)axisname(P);
		break;
	default: {
		int n = ki_nargs(op);
		KiTok st = P->tok;
		if (op == KO_scan) {
			int k = statename(P);
			if (f->st[k].update)
				fail(P, &st, "state %s is updated twice", show(&st, buf, sizeof buf));
			in.aux = (uint8_t)k;
			P->scanned = k + 1;
		}
		for (int k = 0; k < n; k++) {
			if (k > 0) {
				if (P->tok.t != KT_COMMA && !isoperand(P))
					fail(P, &P->tok, "%s takes %d operands, found %d", ki_opname(op),
					     n, k);
				expect(P, KT_COMMA, "','");
			}
			if (k == 0 && (P->tok.t == KT_LBRACK || P->tok.t == KT_NL || P->tok.t == KT_EOF))
				fail(P, &P->tok, "%s takes %d operand%s, found 0", ki_opname(op), n,
				     n == 1 ? "" : "s");
			in.arg[k] = operand(P);
		}
		if (P->tok.t == KT_COMMA || (n == 0 && isoperand(P)))
			fail(P, &P->tok, "%s takes %d operand%s, found more", ki_opname(op), n,
			     n == 1 ? "" : "s");
		int rule = ki_rule(op);
		if (rule == AR_RED || rule == AR_DOT || rule == AR_KEEP || rule == AR_SEG) {
			if (P->tok.t != KT_IDENT)
				fail(P, &P->tok, "%s needs an axis name, found %s", ki_opname(op),
				     show(&P->tok, buf, sizeof buf));
			in.axis = (uint8_t)axisname(P);
		}
	}
	}
	in.axes = axeslist(P);
	position(P, &in.line, &in.col);
	endline(P);
	P->inins = 0;
	KiRef r = ki_emit(f, &in);
	if (r == KI_NIL)
		fail(P, &t, "out of memory");
	if (P->scanned) {          /* a scan is its state's update */
		f->st[P->scanned - 1].update = r;
		P->observed[P->scanned - 1] = 1;
		P->scanned = 0;
	}
}

/* A state's name (state, carry, scan instructions) → its number. */
static int statename(Parser *P)
{
	char sname[32] = "", buf[64];
	KiTok nt = name(P, "a state name");
	int k = -1;
	if (nt.len < sizeof sname) {
		memcpy(sname, nt.s, nt.len);
		sname[nt.len] = 0;
		k = ki_findstate(P->f, sname);
	}
	if (k < 0)
		fail(P, &nt, "unknown state %s", show(&nt, buf, sizeof buf));
	return k;
}

/*
** weight -> weight NAME '[' waxis {',' waxis} ']' [POSITION]
** waxis  -> layer | head | group | chan | out ['=' NUMBER]
*/
static void weightdecl(Parser *P)
{
	KiWeight w;
	char buf[64];
	memset(&w, 0, sizeof w);
	next(P);
	KiTok t = name(P, "a weight name");
	namecpy(P, &t, w.name, sizeof w.name, "weight");
	if (ki_findweight(P->f, w.name) >= 0)
		fail(P, &t, "duplicate weight %s", show(&t, buf, sizeof buf));
	if (P->f->nw >= KI_MAXW)
		fail(P, &t, "too many weights (at most %d)", KI_MAXW);
	expect(P, KT_LBRACK, "'[' (the weight's axes)");
	for (;;) {
		KiTok a = P->tok;
		if (a.t != KT_IDENT)
			expected(P, "a weight axis (layer head group chan out)");
		int wa = ki_waxisbyname(a.s, a.len);
		if (wa < 0)
			fail(P, &a, "unknown weight axis %s (layer head group chan out)", show(&a, buf, sizeof buf));
		for (int k = 0; k < w.ndim; k++)
			if (w.ax[k] == wa)
				fail(P, &a, "duplicate weight axis %s", show(&a, buf, sizeof buf));
		if (w.ndim == KI_MAXWDIM)
			fail(P, &a, "too many weight axes (at most %d)", KI_MAXWDIM);
		next(P);
		w.ax[w.ndim++] = (uint8_t)wa;
		if (wa == WA_out && P->tok.t == KT_EQ) {
			next(P);
			KiTok v = P->tok;
			if (v.t != KT_NUM || !(v.num >= 1 && v.num <= 1e6 && v.num == (double)(int32_t)v.num))
				fail(P, &v, "an out size must be an integer in 1..1000000");
			w.size = (int32_t)v.num;
			next(P);
		}
		if (P->tok.t == KT_RBRACK)
			break;
		expect(P, KT_COMMA, "',' or ']'");
	}
	next(P);
	position(P, &w.line, &w.col);
	endline(P);
	if (ki_addweight(P->f, &w) < 0)
		fail(P, &t, "out of memory");
}

/* param -> param NAME '=' NUMBER [POSITION] */
static void param(Parser *P)
{
	KiFn *f = P->f;
	char nm[32], buf[64];
	next(P);
	KiTok t = name(P, "a param name");
	namecpy(P, &t, nm, sizeof nm, "param");
	if (ki_findparam(f, nm) >= 0)
		fail(P, &t, "duplicate param %s", show(&t, buf, sizeof buf));
	if (f->npar >= KI_MAXPAR)
		fail(P, &t, "too many params (at most %d)", KI_MAXPAR);
	expect(P, KT_EQ, "'='");
	if (P->tok.t != KT_NUM)
		expected(P, "a number");
	double v = P->tok.num;
	next(P);
	uint32_t line, col;
	position(P, &line, &col);
	endline(P);
	if (ki_addparam(f, nm, v, line, col) < 0)
		fail(P, &t, "out of memory");
}

/* state -> state NAME '=' NUMBER */
static void state(Parser *P)
{
	KiFn *f = P->f;
	char nm[32], buf[64];
	next(P);
	KiTok t = name(P, "a state name");
	namecpy(P, &t, nm, sizeof nm, "state");
	if (ki_findstate(f, nm) >= 0)
		fail(P, &t, "duplicate state %s", show(&t, buf, sizeof buf));
	if (f->nst >= KI_MAXST)
		fail(P, &t, "too many states (at most %d)", KI_MAXST);
	expect(P, KT_EQ, "'='");
	if (P->tok.t != KT_NUM)
		expected(P, "a number");
	double v = P->tok.num;
	next(P);
	endline(P);
	if (ki_addstate(f, nm, v) < 0)
		fail(P, &t, "out of memory");
}

/* Fail if a once-only statement was seen already; mark it seen. */
static void once(Parser *P, int *seen, const char *what)
{
	if (*seen)
		fail(P, &P->tok, "duplicate %s", what);
	*seen = 1;
	next(P);
}

/* observe -> observe NAME ref */
static void observe(Parser *P)
{
	KiFn *f = P->f;
	char nm[32] = "", buf[64];
	next(P);
	KiTok t = name(P, "a state name");
	int i = -1;
	if (t.len < sizeof nm) {
		memcpy(nm, t.s, t.len);
		nm[t.len] = 0;
		i = ki_findstate(f, nm);
	}
	if (i < 0)
		fail(P, &t, "unknown state %s", show(&t, buf, sizeof buf));
	if (P->observed[i])
		fail(P, &t, "duplicate observe for state %s", show(&t, buf, sizeof buf));
	P->observed[i] = 1;
	f->st[i].update = operand(P);
	endline(P);
}

/* A word from a short table (scope, schedule); -1 if none matches. */
static int word(const KiTok *t, const char *(*namef)(int), int n)
{
	for (int i = 0; i < n; i++)
		if (t->t == KT_IDENT && tokeq(t, namef(i)))
			return i;
	return -1;
}

/*
** select -> select (topk|threshold|mass) {field} [POSITION]
** field  -> scope '=' (head|layer|model) | schedule '=' (none|pyramid|prefix|dynamic)
**         | cap '=' (0|1)
**         | (keep_first|keep_recent|chunk|beta|tau|p|floor|keep|sa|sb) '=' ref
** Fields come in any order, each at most once; missing ones keep ki_new's values.
*/
static void selectrule(Parser *P)
{
	static const char *const fields[] = { "scope", "keep_first", "keep_recent", "chunk",
	                                      "schedule", "beta", "tau", "p", "floor", "keep",
	                                      "sa", "sb", "cap" };
	enum { NFIELD = sizeof fields / sizeof fields[0] };
	KiSelect *s = &P->f->sel;
	char buf[64];
	int seen = 0, kind = word(&P->tok, ki_selname, SEL_mass + 1);
	if (kind < 0)
		fail(P, &P->tok, "expected a select rule (topk, threshold or mass), found %s",
		     show(&P->tok, buf, sizeof buf));
	next(P);
	while (P->tok.t == KT_IDENT) {
		KiTok t = P->tok;
		int k = -1;
		for (int i = 0; i < NFIELD; i++)
			if (tokeq(&t, fields[i]))
				k = i;
		if (k < 0)
			fail(P, &t, "unknown select field %s (fields: scope keep_first keep_recent chunk "
			     "schedule beta tau p floor keep sa sb cap)", show(&t, buf, sizeof buf));
		if (seen & (1 << k))
			fail(P, &t, "duplicate select field %s", show(&t, buf, sizeof buf));
		seen |= 1 << k;
		next(P);
		expect(P, KT_EQ, "'='");
		KiTok v = P->tok;
		switch (k) {
		case 0:
			if ((k = word(&v, ki_scopename, SC_model + 1)) < 0)
				fail(P, &v, "expected a scope (head, layer or model), found %s",
				     show(&v, buf, sizeof buf));
			s->scope = (uint8_t)k;
			next(P);
			break;
		case 4:
			if ((k = word(&v, ki_schedname, SCH_dynamic + 1)) < 0)
				fail(P, &v, "expected a schedule (none, pyramid, prefix or dynamic), found %s",
				     show(&v, buf, sizeof buf));
			s->sched = (uint8_t)k;
			next(P);
			break;
		case 12:
			if (v.t != KT_NUM || (v.num != 0 && v.num != 1))
				fail(P, &v, "cap is 0 or 1, found %s", show(&v, buf, sizeof buf));
			s->nocap = v.num == 0;
			next(P);
			break;
		case 1: s->keep_first = operand(P); break;
		case 2: s->keep_recent = operand(P); break;
		case 3: s->chunk = operand(P); break;
		case 5: s->beta = operand(P); break;
		case 6: s->tau = operand(P); break;
		case 7: s->mass = operand(P); break;
		case 8: s->floor = operand(P); break;
		case 9: s->keep = operand(P); break;
		case 10: s->sa = operand(P); break;
		case 11: s->sb = operand(P); break;
		}
	}
	s->kind = (uint8_t)kind;
	position(P, &s->line, &s->col);
	endline(P);
}

/* 0 or 1 after a merge flag field */
static uint8_t flag(Parser *P)
{
	if (P->tok.t != KT_NUM || (P->tok.num != 0 && P->tok.num != 1))
		expected(P, "0 or 1");
	uint8_t v = (uint8_t)P->tok.num;
	next(P);
	return v;
}

/*
** merge -> merge KIND {field} [POSITION]
** KIND  -> drop | nearest | next | runs | summary
** field -> (sim|weight|self|m|rows|iters|beta) '=' ref
**        | threshold '=' (none | adaptive | ref) | update '=' (mean | sum)
**        | (keys|values|bias) '=' (0 | 1)
** Fields come in any order, each at most once; which ones a kind takes is
** the verifier's business (missing ones stay nil / 0).
*/
static void mergerule(Parser *P)
{
	static const char *const fields[] = { "sim", "threshold", "beta", "weight", "self", "update",
	                                      "keys", "values", "bias", "m", "rows", "iters" };
	enum { NF = sizeof fields / sizeof fields[0] };
	KiMerge *m = &P->f->merge;
	char buf[64];
	int seen = 0;
	KiTok kt = P->tok;
	int kind = kt.t == KT_IDENT ? ki_mergebyname(kt.s, kt.len) : -1;
	if (kind < 0)
		fail(P, &kt, "expected a merge rule (drop nearest next runs summary), found %s",
		     show(&kt, buf, sizeof buf));
	next(P);
	memset(m, 0, sizeof *m);
	m->kind = (uint8_t)kind;
	while (P->tok.t == KT_IDENT) {
		KiTok t = P->tok;
		int k = -1;
		for (int i = 0; i < NF; i++)
			if (tokeq(&t, fields[i]))
				k = i;
		if (k < 0)
			fail(P, &t, "unknown merge field %s (fields: sim threshold beta weight self update "
			     "keys values bias m rows iters)", show(&t, buf, sizeof buf));
		if (seen & (1 << k))
			fail(P, &t, "duplicate merge field %s", show(&t, buf, sizeof buf));
		seen |= 1 << k;
		next(P);
		expect(P, KT_EQ, "'='");
		switch (k) {
		case 0: m->sim = operand(P); break;
		case 1:
			if (is(P, "none"))
				m->thr = MT_none, next(P);
			else if (is(P, "adaptive"))
				m->thr = MT_adaptive, next(P);
			else
				m->thr = MT_value, m->threshold = operand(P);
			break;
		case 2: m->beta = operand(P); break;
		case 3: m->weight = operand(P); break;
		case 4: m->self = operand(P); break;
		case 5:
			if (is(P, "mean"))
				m->update = MU_mean;
			else if (is(P, "sum"))
				m->update = MU_sum;
			else
				expected(P, "an update (mean or sum)");
			next(P);
			break;
		case 6: m->keys = flag(P); break;
		case 7: m->values = flag(P); break;
		case 8: m->bias = flag(P); break;
		case 9: m->m = operand(P); break;
		case 10: m->rows = operand(P); break;
		case 11: m->iters = operand(P); break;
		}
	}
	position(P, &m->line, &m->col);
	endline(P);
}

/* when -> when prefill [POSITION] | when decode every '=' ref [POSITION] */
static void whenrule(Parser *P)
{
	KiWhen *w = &P->f->when;
	char buf[64];
	if (is(P, "prefill")) {
		w->kind = WH_prefill;
		next(P);
	} else if (is(P, "decode")) {
		w->kind = WH_decode;
		next(P);
		if (!is(P, "every"))
			expected(P, "every=");
		next(P);
		expect(P, KT_EQ, "'='");
		w->every = operand(P);
	} else
		fail(P, &P->tok, "expected prefill or decode, found %s", show(&P->tok, buf, sizeof buf));
	position(P, &w->line, &w->col);
	endline(P);
}

/* header -> policy STRING source STRING [POSITION] */
static void header(Parser *P)
{
	KiFn *f = P->f;
	if (!is(P, "policy"))
		expected(P, "'policy' (the header line)");
	next(P);
	if (P->tok.t != KT_STR)
		expected(P, "the policy name (a string)");
	if (P->tok.len - 2 >= sizeof f->name)
		fail(P, &P->tok, "policy name too long (at most %zu bytes)", sizeof f->name - 1);
	memcpy(f->name, P->tok.s + 1, P->tok.len - 2);
	f->name[P->tok.len - 2] = 0;
	next(P);
	if (!is(P, "source"))
		expected(P, "'source'");
	next(P);
	if (P->tok.t != KT_STR)
		expected(P, "the source file name (a string)");
	if (P->tok.len - 2 >= sizeof f->src)
		fail(P, &P->tok, "source name too long (at most %zu bytes)", sizeof f->src - 1);
	memcpy(f->src, P->tok.s + 1, P->tok.len - 2);
	f->src[P->tok.len - 2] = 0;
	next(P);
	position(P, &f->line, &f->col);
	endline(P);
}

/*
** policy -> {NL} header {stmt | NL}
** stmt   -> param | state | weight | ins | score ref | obs (all | ref) | observe
**         | select | merge | when
*/
static void policy(Parser *P)
{
	KiFn *f = P->f;
	char buf[64];
	next(P);
	while (P->tok.t == KT_NL)
		next(P);
	header(P);
	for (;;) {
		if (P->tok.t == KT_NL) {
			next(P);
			continue;
		}
		if (P->tok.t == KT_EOF)
			return;
		if (P->tok.t == KT_INS) {
			instruction(P);
			continue;
		}
		if (P->tok.t != KT_IDENT)
			expected(P, "a statement");
		if (is(P, "param"))
			param(P);
		else if (is(P, "state"))
			state(P);
		else if (is(P, "weight"))
			weightdecl(P);
		else if (is(P, "observe"))
			observe(P);
		else if (is(P, "score")) {
			once(P, &P->score, "score");
			f->score = operand(P);
			endline(P);
		} else if (is(P, "obs")) {
			once(P, &P->obs, "obs");
			if (is(P, "all")) {
				f->obs_all = 1;
				next(P);
			} else
				f->obs = operand(P);
			endline(P);
		} else if (is(P, "select")) {
			once(P, &P->sel, "select");
			selectrule(P);
		} else if (is(P, "merge")) {
			once(P, &P->merge, "merge");
			mergerule(P);
		} else if (is(P, "when")) {
			once(P, &P->when, "when");
			whenrule(P);
		} else if (is(P, "policy"))
			fail(P, &P->tok, "duplicate policy header");
		else
			fail(P, &P->tok, "unknown statement %s", show(&P->tok, buf, sizeof buf));
	}
}

/*
** Parse the text form in text[0 .. len) (text[len] must be 0). Returns a
** new KiFn (free it with ki_free), or NULL with one error line in e,
** "file:line:col: error: msg" at the offending token. The result is not
** verified: run ki_verify before relying on it.
*/
KiFn *ki_parsen(const char *text, size_t len, const char *file, KiErr *e)
{
	Parser *P = calloc(1, sizeof *P);
	KiFn *f = ki_new("policy", "policy");
	if (!P || !f) {
		free(P);
		ki_free(f);
		ki_error(e, file, 0, 0, "out of memory");
		return NULL;
	}
	ki_lexinit(&P->lx, text, len);
	P->file = file ? file : "<kir>";
	P->e = e;
	P->f = f;
	if (setjmp(P->jb)) {
		ki_free(f);
		free(P);
		return NULL;
	}
	policy(P);
	free(P);
	return f;
}

KiFn *ki_parse(const char *text, const char *file, KiErr *e)
{
	if (!text) {
		ki_error(e, file, 0, 0, "no text to parse");
		return NULL;
	}
	return ki_parsen(text, strlen(text), file, e);
}
