/*
** Bounded string and table functions for the policy sandbox. Lua's count hook
** sees VM instructions only: the work a C library function does inside one
** call (a backtracking pattern match, %b() scanning a long subject from every
** start, string.rep of an empty string 1e15 times, table.move over a huge
** range) is invisible to it. Here every such function charges its work to
** the sandbox's instruction counter (kd_charge) as it goes, so the instruction
** limit, the time limit and the memory limit hold inside library calls too.
**
**   - find, match, gmatch, gsub: our own Lua-pattern matcher (the Lua 5.4
**     pattern language, same results) that counts one unit per step (a
**     character class tried, a match attempt) and keeps recursion to 200;
**   - rep, concat, move, insert, remove: our own loops, charged before or
**     while they run;
**   - unpack, sort: charged (n, n·log2 n) before the library function runs;
**   - the other string functions (byte, char, format, lower, upper, sub,
**     reverse, len, pack, packsize, unpack): linear in their arguments and
**     results, charged by those sizes.
** Strings and tables otherwise behave exactly as Lua's.
*/
#include <ctype.h>
#include <limits.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include "dsl/dsl.h"

#define BYTES_PER_UNIT 8       /* bytes produced or scanned per instruction unit */
#define ELEM_UNITS     8       /* units per table element read or written by a loop */
#define STEP_BATCH     1024    /* matcher steps between charges */
#define MAXDEPTH       200     /* matcher recursion (C stack) */
#define MAXCAP         32      /* captures per pattern, as Lua */

/* --- the pattern matcher ------------------------------------------------------- */

enum { CAP_OPEN = -1, CAP_POS = -2 };

typedef struct Match {
	lua_State *L;
	const char *s0, *se;     /* subject */
	const char *pe;          /* end of the pattern */
	int depth;               /* domatch recursion */
	long steps;              /* work not yet charged */
	int level;               /* captures open or closed */
	struct { const char *at; ptrdiff_t len; } cap[MAXCAP];
} Match;

static void step(Match *m, long n)
{
	m->steps += n;
	if (m->steps >= STEP_BATCH) {
		long s = m->steps;
		m->steps = 0;
		kd_charge(m->L, s);
	}
}

static void finish(Match *m)
{
	kd_charge(m->L, m->steps + 1);
	m->steps = 0;
}

/* End of the single-character class at p ('x', '.', '%a', '[set]'). */
static const char *classend(Match *m, const char *p)
{
	char c = *p++;
	if (c == '%') {
		if (p >= m->pe)
			luaL_error(m->L, "malformed pattern (ends with '%%')");
		return p + 1;
	}
	if (c == '[') {
		if (p < m->pe && *p == '^')
			p++;
		for (int first = 1;; first = 0) {   /* a ']' first in the set is literal */
			if (p >= m->pe)
				luaL_error(m->L, "malformed pattern (missing ']')");
			if (*p == ']' && !first)
				return p + 1;
			if (*p++ == '%') {
				if (p >= m->pe)
					luaL_error(m->L, "malformed pattern (missing ']')");
				p++;
			}
		}
	}
	return p;
}

/* %a %c %d %g %l %p %s %u %w %x (upper case: the complement), else literal */
static int classmatch(int c, int cl)
{
	int r;
	switch (tolower(cl)) {
	case 'a': r = isalpha(c); break;
	case 'c': r = iscntrl(c); break;
	case 'd': r = isdigit(c); break;
	case 'g': r = isgraph(c); break;
	case 'l': r = islower(c); break;
	case 'p': r = ispunct(c); break;
	case 's': r = isspace(c); break;
	case 'u': r = isupper(c); break;
	case 'w': r = isalnum(c); break;
	case 'x': r = isxdigit(c); break;
	default: return cl == c;
	}
	r = r != 0;
	return isupper(cl) ? !r : r;
}

/* c in the set [..] that starts at p ('[') and closes at ec (']') */
static int setmatch(int c, const char *p, const char *ec)
{
	int neg = 0;
	p++;
	if (*p == '^')
		neg = 1, p++;
	while (p < ec) {
		if (*p == '%') {
			if (classmatch(c, (unsigned char)p[1]))
				return !neg;
			p += 2;
		} else if (p + 2 < ec && p[1] == '-') {
			if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2])
				return !neg;
			p += 3;
		} else {
			if ((unsigned char)*p == c)
				return !neg;
			p++;
		}
	}
	return neg;
}

static int single(Match *m, const char *s, const char *p, const char *ep)
{
	step(m, 1);
	if (s >= m->se)
		return 0;
	int c = (unsigned char)*s;
	switch (*p) {
	case '.': return 1;
	case '%': return classmatch(c, (unsigned char)p[1]);
	case '[': return setmatch(c, p, ep - 1);
	default: return (unsigned char)*p == c;
	}
}

static const char *domatch(Match *m, const char *s, const char *p);

static const char *maxexpand(Match *m, const char *s, const char *p, const char *ep)
{
	ptrdiff_t i = 0;
	while (single(m, s + i, p, ep))
		i++;
	for (; i >= 0; i--) {            /* longest first, then give back */
		const char *r = domatch(m, s + i, ep + 1);
		if (r)
			return r;
	}
	return NULL;
}

static const char *minexpand(Match *m, const char *s, const char *p, const char *ep)
{
	for (;;) {
		const char *r = domatch(m, s, ep + 1);
		if (r)
			return r;
		if (!single(m, s, p, ep))
			return NULL;
		s++;
	}
}

static const char *opencap(Match *m, const char *s, const char *p, ptrdiff_t what)
{
	if (m->level >= MAXCAP)
		luaL_error(m->L, "too many captures");
	m->cap[m->level].at = s;
	m->cap[m->level].len = what;
	m->level++;
	const char *r = domatch(m, s, p);
	if (!r)
		m->level--;
	return r;
}

static const char *closecap(Match *m, const char *s, const char *p)
{
	int l = m->level - 1;
	while (l >= 0 && m->cap[l].len != CAP_OPEN)
		l--;
	if (l < 0)
		luaL_error(m->L, "invalid pattern capture");
	m->cap[l].len = s - m->cap[l].at;
	const char *r = domatch(m, s, p);
	if (!r)
		m->cap[l].len = CAP_OPEN;
	return r;
}

/* %bxy at s: x, then to the y that balances it */
static const char *balance(Match *m, const char *s, const char *p)
{
	if (p + 1 >= m->pe)
		luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
	if (s >= m->se || *s != p[0])
		return NULL;
	int depth = 1;
	while (++s < m->se) {
		step(m, 1);
		if (*s == p[1]) {
			if (--depth == 0)
				return s + 1;
		} else if (*s == p[0])
			depth++;
	}
	return NULL;
}

/* %1..%9 at s: the text of an earlier capture again */
static const char *backref(Match *m, const char *s, int d)
{
	int l = d - '1';
	if (l < 0 || l >= m->level || m->cap[l].len == CAP_OPEN)
		luaL_error(m->L, "invalid capture index %%%d", l + 1);
	if (m->cap[l].len < 0)
		return NULL;             /* a position capture matches no text */
	size_t len = (size_t)m->cap[l].len;
	step(m, (long)(len / 8));
	if ((size_t)(m->se - s) >= len && memcmp(m->cap[l].at, s, len) == 0)
		return s + len;
	return NULL;
}

/* The end of the match of pattern p at subject s, or NULL. */
static const char *domatch(Match *m, const char *s, const char *p)
{
	if (++m->depth > MAXDEPTH)
		luaL_error(m->L, "pattern too complex");
	step(m, 1);
	while (s && p < m->pe) {
		if (*p == '(') {
			s = p + 1 < m->pe && p[1] == ')' ? opencap(m, s, p + 2, CAP_POS) : opencap(m, s, p + 1, CAP_OPEN);
			break;
		}
		if (*p == ')') {
			s = closecap(m, s, p + 1);
			break;
		}
		if (*p == '$' && p + 1 == m->pe) {
			s = s == m->se ? s : NULL;
			break;
		}
		if (*p == '%' && p + 1 < m->pe) {
			if (p[1] == 'b') {
				s = balance(m, s, p + 2);
				p += 4;
				continue;
			}
			if (p[1] == 'f') {
				p += 2;
				if (p >= m->pe || *p != '[')
					luaL_error(m->L, "missing '[' after '%%f' in pattern");
				const char *ep = classend(m, p);
				int prev = s == m->s0 ? 0 : (unsigned char)s[-1];
				int cur = s < m->se ? (unsigned char)*s : 0;
				if (setmatch(prev, p, ep - 1) || !setmatch(cur, p, ep - 1))
					s = NULL;
				p = ep;
				continue;
			}
			if (isdigit((unsigned char)p[1])) {
				s = backref(m, s, p[1]);
				p += 2;
				continue;
			}
		}
		/* one character class, maybe with a quantifier */
		const char *ep = classend(m, p);
		int q = ep < m->pe ? *ep : 0;
		if (!single(m, s, p, ep)) {
			if (q == '*' || q == '?' || q == '-')
				p = ep + 1;    /* zero repetitions */
			else
				s = NULL;
			continue;
		}
		if (q == '?') {
			const char *r = domatch(m, s + 1, ep + 1);
			if (r) {
				s = r;
				break;
			}
			p = ep + 1;
		} else if (q == '+') {
			s = maxexpand(m, s + 1, p, ep);
			break;
		} else if (q == '*') {
			s = maxexpand(m, s, p, ep);
			break;
		} else if (q == '-') {
			s = minexpand(m, s, p, ep);
			break;
		} else {
			s++;
			p = ep;
		}
	}
	m->depth--;
	return s;
}

static void matchinit(Match *m, lua_State *L, const char *s, size_t ls, const char *p, size_t lp)
{
	m->L = L;
	m->s0 = s, m->se = s + ls;
	m->pe = p + lp;
	m->steps = 0;
	m->depth = 0;
	m->level = 0;
}

/* Capture i of a match [s, e) pushed on the stack (capture 0 with none
** declared is the whole match). */
static void pushcap(Match *m, int i, const char *s, const char *e)
{
	if (i >= m->level) {
		if (i != 0)
			luaL_error(m->L, "invalid capture index %%%d", i + 1);
		lua_pushlstring(m->L, s, (size_t)(e - s));
		return;
	}
	if (m->cap[i].len == CAP_OPEN)
		luaL_error(m->L, "unfinished capture");
	if (m->cap[i].len == CAP_POS)
		lua_pushinteger(m->L, (lua_Integer)(m->cap[i].at - m->s0) + 1);
	else
		lua_pushlstring(m->L, m->cap[i].at, (size_t)m->cap[i].len);
}

/* All captures (the whole match when there are none and s is given). */
static int pushcaps(Match *m, const char *s, const char *e)
{
	int n = m->level == 0 && s ? 1 : m->level;
	luaL_checkstack(m->L, n, "too many captures");
	for (int i = 0; i < n; i++)
		pushcap(m, i, s, e);
	return n;
}

/* Lua's relative string position: negative counts from the end, 0 is 1. */
static size_t startpos(lua_Integer pos, size_t len)
{
	if (pos > 0)
		return (size_t)pos;
	if (pos == 0 || pos < -(lua_Integer)len)
		return 1;
	return len + (size_t)pos + 1;
}

static int nospecials(const char *p, size_t lp)
{
	for (size_t i = 0; i < lp; i++)
		if (strchr("^$*+?.([%-", p[i]) && p[i])
			return 0;
	return 1;
}

static int findaux(lua_State *L, int find)
{
	size_t ls, lp;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	size_t init = startpos(luaL_optinteger(L, 3, 1), ls) - 1;
	if (init > ls) {
		luaL_pushfail(L);
		return 1;
	}
	if (find && (lua_toboolean(L, 4) || nospecials(p, lp))) {
		kd_charge(L, (long long)((ls - init + lp) / BYTES_PER_UNIT) + 1);
		const char *r = memmem(s + init, ls - init, p, lp);
		if (!r) {
			luaL_pushfail(L);
			return 1;
		}
		lua_pushinteger(L, (lua_Integer)(r - s) + 1);
		lua_pushinteger(L, (lua_Integer)(r - s + lp));
		return 2;
	}
	Match m;
	const char *s1 = s + init;
	int anchor = lp > 0 && *p == '^';
	if (anchor)
		p++, lp--;
	matchinit(&m, L, s, ls, p, lp);
	do {
		m.level = 0, m.depth = 0;
		const char *e = domatch(&m, s1, p);
		if (e) {
			finish(&m);
			if (!find)
				return pushcaps(&m, s1, e);
			lua_pushinteger(L, (lua_Integer)(s1 - s) + 1);
			lua_pushinteger(L, (lua_Integer)(e - s));
			return pushcaps(&m, NULL, NULL) + 2;
		}
	} while (s1++ < m.se && !anchor);
	finish(&m);
	luaL_pushfail(L);
	return 1;
}

static int s_find(lua_State *L) { return findaux(L, 1); }
static int s_match(lua_State *L) { return findaux(L, 0); }

/* gmatch's iterator; upvalues: subject, pattern, next start, end of the last
** match (-1: none) */
static int gmatch_next(lua_State *L)
{
	size_t ls, lp;
	const char *s = lua_tolstring(L, lua_upvalueindex(1), &ls);
	const char *p = lua_tolstring(L, lua_upvalueindex(2), &lp);
	lua_Integer pos = lua_tointeger(L, lua_upvalueindex(3));
	lua_Integer last = lua_tointeger(L, lua_upvalueindex(4));
	Match m;
	matchinit(&m, L, s, ls, p, lp);
	for (const char *src = s + pos; src <= m.se; src++) {
		m.level = 0, m.depth = 0;
		const char *e = domatch(&m, src, p);
		if (e && (last < 0 || e != s + last)) {
			lua_pushinteger(L, (lua_Integer)(e - s));
			lua_copy(L, -1, lua_upvalueindex(3));
			lua_replace(L, lua_upvalueindex(4));
			finish(&m);
			return pushcaps(&m, src, e);
		}
	}
	finish(&m);
	return 0;
}

static int s_gmatch(lua_State *L)
{
	size_t ls;
	luaL_checklstring(L, 1, &ls);
	luaL_checkstring(L, 2);
	size_t init = startpos(luaL_optinteger(L, 3, 1), ls) - 1;
	if (init > ls)
		init = ls + 1;          /* after the end: no match */
	lua_settop(L, 2);
	lua_pushinteger(L, (lua_Integer)init);
	lua_pushinteger(L, -1);
	lua_pushcclosure(L, gmatch_next, 4);
	return 1;
}

/* gsub's replacement of the match [s, e) added to b */
static void addrepl(Match *m, luaL_Buffer *b, const char *s, const char *e, int tr)
{
	lua_State *L = m->L;
	if (tr == LUA_TFUNCTION) {
		lua_pushvalue(L, 3);
		int n = pushcaps(m, s, e);
		lua_call(L, n, 1);
	} else if (tr == LUA_TTABLE) {
		pushcap(m, 0, s, e);
		lua_gettable(L, 3);
	} else {                  /* a string: %0..%9 and %% */
		size_t l;
		const char *r = lua_tolstring(L, 3, &l), *pc;
		while ((pc = memchr(r, '%', l)) != NULL) {
			luaL_addlstring(b, r, (size_t)(pc - r));
			pc++;
			if (*pc == '%')
				luaL_addchar(b, '%');
			else if (*pc == '0')
				luaL_addlstring(b, s, (size_t)(e - s));
			else if (isdigit((unsigned char)*pc)) {
				pushcap(m, *pc - '1', s, e);
				luaL_tolstring(L, -1, NULL);
				lua_remove(L, -2);
				luaL_addvalue(b);
			} else
				luaL_error(L, "invalid use of '%c' in replacement string", '%');
			l -= (size_t)(pc + 1 - r);
			r = pc + 1;
		}
		luaL_addlstring(b, r, l);
		return;
	}
	if (!lua_toboolean(L, -1)) {   /* false or nil: keep the original text */
		lua_pop(L, 1);
		luaL_addlstring(b, s, (size_t)(e - s));
	} else if (!lua_isstring(L, -1))
		luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
	else
		luaL_addvalue(b);
}

static int s_gsub(lua_State *L)
{
	size_t ls, lp;
	const char *src = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	const char *last = NULL;
	int tr = lua_type(L, 3);
	lua_Integer maxn = luaL_optinteger(L, 4, (lua_Integer)ls + 1), n = 0;
	int anchor = lp > 0 && *p == '^';
	luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE,
	                 3, "string/function/table");
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	if (anchor)
		p++, lp--;
	Match m;
	matchinit(&m, L, src, ls, p, lp);
	while (n < maxn) {
		m.level = 0, m.depth = 0;
		const char *e = domatch(&m, src, p);
		if (e && e != last) {
			n++;
			addrepl(&m, &b, src, e, tr);
			src = last = e;
		} else if (src < m.se)
			luaL_addchar(&b, *src++);
		else
			break;
		if (anchor)
			break;
	}
	if (!n)
		lua_pushvalue(L, 1);
	else {
		luaL_addlstring(&b, src, (size_t)(m.se - src));
		luaL_pushresult(&b);
	}
	step(&m, (long)(lua_rawlen(L, -1) / BYTES_PER_UNIT));
	finish(&m);
	lua_pushinteger(L, n);
	return 2;
}

/* string.rep(s, n [, sep]): the work is charged before it is done; a result
** over the memory limit fails without being built. */
static int s_rep(lua_State *L)
{
	size_t l, lsep;
	const char *s = luaL_checklstring(L, 1, &l);
	lua_Integer n = luaL_checkinteger(L, 2);
	const char *sep = luaL_optlstring(L, 3, "", &lsep);
	if (n <= 0 || l + lsep == 0) {
		lua_pushliteral(L, "");
		return 1;
	}
	if (l + lsep < l || l + lsep > (size_t)INT_MAX / (size_t)n)
		return luaL_error(L, "resulting string too large");
	size_t total = (size_t)n * l + (size_t)(n - 1) * lsep;
	if (total > kd_state(L)->lim.memory)
		return kd_fatal(L, KD_FATAL_MEM);
	kd_charge(L, (long long)(total / BYTES_PER_UNIT) + 1);
	luaL_Buffer b;
	char *p = luaL_buffinitsize(L, &b, total);
	/* the result is periodic (s, sep, s, ...): write one period, then
	** double what is written */
	size_t done = l < total ? l : total;
	memcpy(p, s, done);
	if (done < total)
		memcpy(p + done, sep, lsep), done += lsep;
	while (done < total) {
		size_t k = done < total - done ? done : total - done;
		memcpy(p + done, p, k);
		done += k;
	}
	luaL_pushresultsize(&b, total);
	return 1;
}

/* Any other string function: charged by the size of its arguments and results. */
static int s_linear(lua_State *L)
{
	int n = lua_gettop(L);
	size_t bytes = 0;
	for (int i = 1; i <= n; i++)
		if (lua_type(L, i) == LUA_TSTRING)
			bytes += lua_rawlen(L, i);
	kd_charge(L, (long long)(bytes / BYTES_PER_UNIT) + 1);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, n, LUA_MULTRET);
	int r = lua_gettop(L);
	bytes = 0;
	for (int i = 1; i <= r; i++)
		if (lua_type(L, i) == LUA_TSTRING)
			bytes += lua_rawlen(L, i);
	kd_charge(L, (long long)(bytes / BYTES_PER_UNIT) + r);
	return r;
}

/* --- table functions -------------------------------------------------------------- */

/* t at idx must be a table or have the metamethods the operation uses */
static void checktab(lua_State *L, int idx, int write)
{
	if (lua_type(L, idx) == LUA_TTABLE)
		return;
	int ok = 0;
	if (lua_getmetatable(L, idx)) {
		lua_getfield(L, -1, "__index");
		ok = !lua_isnil(L, -1);
		lua_pop(L, 1);
		if (write) {
			lua_getfield(L, -1, "__newindex");
			ok &= !lua_isnil(L, -1);
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	if (!ok)
		luaL_checktype(L, idx, LUA_TTABLE);
}

static int t_concat(lua_State *L)
{
	size_t lsep;
	checktab(L, 1, 0);
	const char *sep = luaL_optlstring(L, 2, "", &lsep);
	lua_Integer i = luaL_optinteger(L, 3, 1);
	lua_Integer last = lua_isnoneornil(L, 4) ? luaL_len(L, 1) : luaL_checkinteger(L, 4);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	long long work = 0;
	for (; i <= last; i++) {
		lua_geti(L, 1, i);
		if (!lua_isstring(L, -1))
			return luaL_error(L, "invalid value (%s) at index %I in table for 'concat'",
			                  luaL_typename(L, -1), (LUAI_UACINT)i);
		work += ELEM_UNITS + (long long)((lua_rawlen(L, -1) + lsep) / BYTES_PER_UNIT);
		luaL_addvalue(&b);
		if (i == last)
			break;
		luaL_addlstring(&b, sep, lsep);
		if (work >= 256)
			kd_charge(L, work), work = 0;
	}
	kd_charge(L, work);
	luaL_pushresult(&b);
	return 1;
}

/* table.move(a1, f, e, t [, a2]): e - f + 1 elements, charged first */
static int t_move(lua_State *L)
{
	lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3), t = luaL_checkinteger(L, 4);
	int tt = !lua_isnoneornil(L, 5) ? 5 : 1;
	checktab(L, 1, 0);
	checktab(L, tt, 1);
	if (e >= f) {
		luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
		lua_Integer n = e - f + 1;
		luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
		kd_charge(L, n > LLONG_MAX / ELEM_UNITS ? LLONG_MAX / 2 : n * ELEM_UNITS);
		if (t > e || t <= f || (tt != 1 && !lua_compare(L, 1, tt, LUA_OPEQ)))
			for (lua_Integer i = 0; i < n; i++) {
				lua_geti(L, 1, f + i);
				lua_seti(L, tt, t + i);
			}
		else
			for (lua_Integer i = n - 1; i >= 0; i--) {
				lua_geti(L, 1, f + i);
				lua_seti(L, tt, t + i);
			}
	}
	lua_pushvalue(L, tt);
	return 1;
}

/* table.insert(t, [pos,] v): shifting charged first */
static int t_insert(lua_State *L)
{
	checktab(L, 1, 1);
	lua_Integer e = luaL_len(L, 1) + 1, pos;
	switch (lua_gettop(L)) {
	case 2:
		pos = e;
		break;
	case 3:
		pos = luaL_checkinteger(L, 2);
		luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2, "position out of bounds");
		kd_charge(L, (e - pos) > LLONG_MAX / ELEM_UNITS ? LLONG_MAX / 2 : (e - pos) * ELEM_UNITS);
		for (lua_Integer i = e; i > pos; i--) {
			lua_geti(L, 1, i - 1);
			lua_seti(L, 1, i);
		}
		break;
	default:
		return luaL_error(L, "wrong number of arguments to 'insert'");
	}
	lua_seti(L, 1, pos);
	return 0;
}

static int t_remove(lua_State *L)
{
	checktab(L, 1, 1);
	lua_Integer size = luaL_len(L, 1);
	lua_Integer pos = luaL_optinteger(L, 2, size);
	if (pos != size)
		luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 1, "position out of bounds");   /* sic, as Lua 5.4 */
	lua_geti(L, 1, pos);
	if (size > pos)
		kd_charge(L, (size - pos) > LLONG_MAX / ELEM_UNITS ? LLONG_MAX / 2 : (size - pos) * ELEM_UNITS);
	for (; pos < size; pos++) {
		lua_geti(L, 1, pos + 1);
		lua_seti(L, 1, pos);
	}
	lua_pushnil(L);
	lua_seti(L, 1, pos);
	return 1;
}

/* table.unpack(t [, i [, j]]): j - i + 1 values, charged first */
static int t_unpack(lua_State *L)
{
	lua_Integer i = luaL_optinteger(L, 2, 1);
	lua_Integer j = lua_isnoneornil(L, 3) ? luaL_len(L, 1) : luaL_checkinteger(L, 3);
	if (i <= j)
		kd_charge(L, (j - i >= LLONG_MAX / 64) ? LLONG_MAX / 2 : ((long long)(j - i) + 1) * ELEM_UNITS);
	int top = lua_gettop(L);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_pushvalue(L, 1);
	lua_pushinteger(L, i);
	lua_pushinteger(L, j);
	lua_call(L, 3, LUA_MULTRET);
	return lua_gettop(L) - top;
}

/* table.sort(t [, comp]): n·log2(n) comparisons charged first */
static int t_sort(lua_State *L)
{
	lua_Integer n = luaL_len(L, 1);
	if (n > 1) {
		long long lg = 1;
		while (lg < 63 && ((lua_Integer)1 << lg) < n)
			lg++;
		kd_charge(L, n > LLONG_MAX / 1024 ? LLONG_MAX / 2 : (long long)n * lg * ELEM_UNITS);
	}
	int top = lua_gettop(L);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, top, 0);
	return 0;
}

/* --- installation ------------------------------------------------------------------- */

static void replace(lua_State *L, const char *lib, const luaL_Reg *fs, const char *const *wrap,
                    lua_CFunction wrapper)
{
	lua_getglobal(L, lib);
	for (int i = 0; wrap[i]; i++) {            /* wrapper(original) */
		if (lua_getfield(L, -1, wrap[i]) != LUA_TFUNCTION) {
			lua_pop(L, 1);
			continue;
		}
		lua_pushcclosure(L, wrapper, 1);
		lua_setfield(L, -2, wrap[i]);
	}
	luaL_setfuncs(L, fs, 0);
	lua_pop(L, 1);
}

void kd_openstrlib(lua_State *L)
{
	static const luaL_Reg str[] = {
		{ "find", s_find }, { "match", s_match }, { "gmatch", s_gmatch }, { "gsub", s_gsub },
		{ "rep", s_rep }, { NULL, NULL }
	};
	static const char *const strlinear[] = {
		"byte", "char", "format", "len", "lower", "upper", "reverse", "sub", "pack", "packsize",
		"unpack", NULL
	};
	static const luaL_Reg tab[] = {
		{ "concat", t_concat }, { "move", t_move }, { "insert", t_insert }, { "remove", t_remove },
		{ NULL, NULL }
	};
	static const char *const tabunpack[] = { "unpack", NULL }, *const tabsort[] = { "sort", NULL };
	replace(L, "string", str, strlinear, s_linear);
	replace(L, "table", tab, tabunpack, t_unpack);
	replace(L, "table", (const luaL_Reg[]){ { NULL, NULL } }, tabsort, t_sort);
}
