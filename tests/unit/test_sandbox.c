/*
** The sandbox's bounded library (dsl/strlib.c) against Lua's own: on a
** generated corpus of subjects and patterns (malformed ones included) and a
** set of table operations, the bounded functions give the same results and
** the same errors as the stock string and table libraries, which serve as
** the independent reference. Then the budgets that the diagnostics corpus
** cannot show with the default limits: the wall-clock limit, an empty
** string.rep of 1e15 copies, library work under a small instruction limit.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "tests/unit/unit.h"
#include "dsl/dsl.h"

/* A state with the standard libraries; `S` given: with the bounded ones
** installed over them (budgets out of reach). */
static lua_State *newstate(KdState *S)
{
	lua_State *L = luaL_newstate();
	luaL_openlibs(L);
	if (S) {
		memset(S, 0, sizeof *S);
		S->path = S->chunk = "t.lua";
		S->text = "";
		S->lim.instructions = 1LL << 60;
		S->lim.memory = (size_t)1 << 32;
		S->deadline = 1e300;
		*(KdState **)lua_getextraspace(L) = S;
		kd_openstrlib(L);
	}
	static const char helpers[] =
		"function GM(s, p, init)\n"
		"  local r, n = {}, 0\n"
		"  for a, b, c in string.gmatch(s, p, init) do\n"
		"    n = n + 1; r[n] = tostring(a) .. '|' .. tostring(b) .. '|' .. tostring(c)\n"
		"    if n > 200 then break end\n"
		"  end\n"
		"  return n, table.concat(r, ';')\n"
		"end\n"
		"function F(...)\n"
		"  local t = { ... }\n"
		"  for i = 1, select('#', ...) do t[i] = tostring(t[i]) end\n"
		"  return '<' .. table.concat(t, ',') .. '>'\n"
		"end\n"
		"function G(a) if a == 'a' then return nil elseif a == 'b' then return 7 end return false end\n"
		"T = { a = 'A', ['('] = 1, b = false, x = 2.5 }\n";
	ck_assert_int_eq(luaL_dostring(L, helpers), LUA_OK);
	return L;
}

/* Append the values L[base..top] to buf as text (types kept apart). */
static size_t serialize(lua_State *L, int base, int status, char *buf, size_t cap)
{
	size_t k = (size_t)snprintf(buf, cap, "%s", status == LUA_OK ? "ok" : "error");
	for (int i = base; i <= lua_gettop(L) && k + 16 < cap; i++) {
		int t = lua_type(L, i);
		if (t == LUA_TSTRING) {
			size_t l;
			const char *s = lua_tolstring(L, i, &l);
			k += (size_t)snprintf(buf + k, cap - k, " s%zu:", l);
			for (size_t j = 0; j < l && k + 8 < cap; j++)
				k += (size_t)snprintf(buf + k, cap - k, s[j] >= 0x20 && s[j] < 0x7f ? "%c" : "\\%02x",
				                      (unsigned char)s[j]);
		} else if (t == LUA_TNUMBER && lua_isinteger(L, i))
			k += (size_t)snprintf(buf + k, cap - k, " i%lld", (long long)lua_tointeger(L, i));
		else if (t == LUA_TNUMBER)
			k += (size_t)snprintf(buf + k, cap - k, " f%.17g", lua_tonumber(L, i));
		else if (t == LUA_TBOOLEAN)
			k += (size_t)snprintf(buf + k, cap - k, " %s", lua_toboolean(L, i) ? "true" : "false");
		else
			k += (size_t)snprintf(buf + k, cap - k, " %s", lua_typename(L, t));
	}
	return k;
}

/* Call global `fn` (a dotted name) with the arguments pushed by `push` in
** both states; the results must be equal. */
typedef struct Call {
	const char *fn;
	const char *s, *p;        /* first two string arguments (with lengths) */
	size_t ls, lp;
	int nint;                  /* integer arguments after them */
	long long ints[2];
	const char *extra;         /* a global to pass after the strings (F, G, T), or a string */
	int extra_is_global;
	int plain;                 /* 1: pass true after the ints (find's plain) */
} Call;

static void push(lua_State *L, const Call *c)
{
	char fn[32];
	snprintf(fn, sizeof fn, "%s", c->fn);
	char *dot = strchr(fn, '.');
	if (dot) {
		*dot = 0;
		lua_getglobal(L, fn);
		lua_getfield(L, -1, dot + 1);
		lua_remove(L, -2);
	} else
		lua_getglobal(L, fn);
	lua_pushlstring(L, c->s, c->ls);
	lua_pushlstring(L, c->p, c->lp);
	if (c->extra) {
		if (c->extra_is_global)
			lua_getglobal(L, c->extra);
		else
			lua_pushstring(L, c->extra);
	}
	for (int i = 0; i < c->nint; i++)
		lua_pushinteger(L, c->ints[i]);
	if (c->plain)
		lua_pushboolean(L, 1);
}

static int same(lua_State *ref, lua_State *bnd, const Call *c, char *why, size_t whylen)
{
	static char a[1 << 16], b[1 << 16];
	int base = lua_gettop(ref) + 1;
	push(ref, c);
	int n = lua_gettop(ref) - base;
	int sa = lua_pcall(ref, n, LUA_MULTRET, 0);
	size_t la = serialize(ref, base, sa, a, sizeof a);
	lua_settop(ref, base - 1);
	base = lua_gettop(bnd) + 1;
	push(bnd, c);
	int sb = lua_pcall(bnd, n, LUA_MULTRET, 0);
	size_t lb = serialize(bnd, base, sb, b, sizeof b);
	lua_settop(bnd, base - 1);
	if (la == lb && memcmp(a, b, la) == 0)
		return 1;
	snprintf(why, whylen, "%s(\"%.*s\", \"%.*s\"): Lua gives [%.200s], the sandbox [%.200s]", c->fn,
	         (int)c->ls, c->s, (int)c->lp, c->p, a, b);
	return 0;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static unsigned rnd(unsigned n)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (unsigned)((rng >> 11) % n);
}

/* A random pattern: items of the Lua pattern language, sometimes malformed. */
static size_t genpattern(char *p)
{
	static const char *const items[] = {
		"a", "b", "(", ")", "x", ".", "%a", "%d", "%s", "%w", "%A", "%p", "%(", "%%", "[ab]", "[^a]",
		"[a-c]", "[%a_]", "[]a]", "[^]]", "%b()", "%bab", "%f[%w]", "%f[^a]", "%1", "$", "^", "-",
		"[a", "%", "%b", "%f", "%9", "\\0", "[%]", "%f[]"
	};
	static const char quant[] = "*+-?";
	size_t k = 0;
	if (rnd(4) == 0)
		p[k++] = '^';
	int n = 1 + (int)rnd(6);
	for (int i = 0; i < n; i++) {
		int r = (int)rnd(10);
		if (r == 0) {                   /* a capture around the rest */
			p[k++] = '(';
			continue;
		}
		if (r == 1) {
			p[k++] = ')';
			continue;
		}
		const char *it = items[rnd(sizeof items / sizeof items[0])];
		if (!strcmp(it, "\\0"))
			p[k++] = 0;
		else {
			memcpy(p + k, it, strlen(it));
			k += strlen(it);
		}
		if (rnd(3) == 0)
			p[k++] = quant[rnd(4)];
	}
	if (rnd(5) == 0)
		p[k++] = '$';
	return k;
}

static size_t gensubject(char *s)
{
	static const char alpha[] = "aab()x ]%-^$.1_";
	size_t n = rnd(24);
	for (size_t i = 0; i < n; i++)
		s[i] = rnd(40) == 0 ? 0 : alpha[rnd(sizeof alpha - 1)];
	return n;
}

START_TEST(test_strlib_matches_lua)
{
	KdState S;
	lua_State *ref = newstate(NULL), *bnd = newstate(&S);
	char s[64], p[128], why[600];
	static const char *const repls[] = { "<%0>", "%1", "%%", "x%2y", "%", "%z", "" };
	int calls = 0;
	for (int k = 0; k < 6000; k++) {
		size_t ls = gensubject(s), lp = genpattern(p);
		Call cs[] = {
			{ "string.find", s, p, ls, lp, 0, { 0 }, NULL, 0, 0 },
			{ "string.find", s, p, ls, lp, 1, { (long long)rnd(40) - 10 }, NULL, 0, 0 },
			{ "string.find", s, p, ls, lp, 1, { (long long)rnd(30) - 5 }, NULL, 0, 1 },
			{ "string.match", s, p, ls, lp, 0, { 0 }, NULL, 0, 0 },
			{ "string.match", s, p, ls, lp, 1, { (long long)rnd(40) - 10 }, NULL, 0, 0 },
			{ "GM", s, p, ls, lp, 0, { 0 }, NULL, 0, 0 },
			{ "GM", s, p, ls, lp, 1, { (long long)rnd(40) - 10 }, NULL, 0, 0 },
			{ "string.gsub", s, p, ls, lp, 0, { 0 }, repls[rnd(7)], 0, 0 },
			{ "string.gsub", s, p, ls, lp, 1, { (long long)rnd(5) - 1 }, repls[rnd(7)], 0, 0 },
			{ "string.gsub", s, p, ls, lp, 0, { 0 }, "F", 1, 0 },
			{ "string.gsub", s, p, ls, lp, 0, { 0 }, "G", 1, 0 },
			{ "string.gsub", s, p, ls, lp, 0, { 0 }, "T", 1, 0 },
		};
		for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++, calls++)
			ck_assert_msg(same(ref, bnd, &cs[i], why, sizeof why), "%s", why);
	}
	ck_assert_int_gt(calls, 50000);
	lua_close(ref), lua_close(bnd);
}
END_TEST

/* string.rep, the linear string functions and the table functions: chunks
** whose results (and errors) must agree. */
START_TEST(test_tablib_matches_lua)
{
	static const char *const chunks[] = {
		"return string.rep('ab', 3, ','), string.rep('ab', 1), string.rep('', 5, '-'), "
		"string.rep('x', 0), string.rep('x', -2, 'y'), string.rep('abc', 4), string.rep('a', 7, 'bc')",
		"return string.rep('x', 2^31)",
		"return string.rep('x', 3, 2)",
		"return string.format('%5.2f|%-4d|%q|%s', 3.14159, 7, 'a\\nb', {} ~= nil), ('AbC'):lower(), "
		"('AbC'):upper(), ('abc'):reverse(), ('abcdef'):sub(2, -2), ('abc'):byte(1, -1)",
		"return string.char(72, 105), string.pack('i4', 7):len(), string.unpack('i4', string.pack('i4', -3))",
		"local t = {1, 2, 3, 4, 5} table.insert(t, 2, 'x') table.insert(t, 'y') "
		"local r = table.remove(t, 1) local q = table.remove(t) table.move(t, 2, 4, 1) "
		"table.move(t, 1, 3, 3) return table.concat(t, ','), r, q, #t",
		"local t = {} return table.remove(t), #t, table.remove(t, 0), table.remove(t, 1)",
		"local t = {1, 2} table.insert(t, 4, 3)",
		"local t = {1, 2} table.insert(t, 1, 2, 3)",
		"local t = {1, 2} table.remove(t, 5)",
		"return table.concat({1, 2.5, 'x'}, '-', 2, 3), table.concat({}, 'x'), table.concat({'a'}, ',', 1, 1)",
		"return table.concat({1, {}, 3})",
		"return table.concat({1, 2}, ',', 1, 3)",
		"return table.unpack({1, 2, 3}, 2), table.unpack({1, 2, 3}, -1, 1), select('#', table.unpack({}, 1, 3))",
		"local a, b = {1, 2, 3}, {} table.move(a, 1, 3, 2, b) return b[1], b[2], b[4], #b",
		"return table.move({}, 1, math.maxinteger, 2)",
		"return table.move({}, -1, math.maxinteger, 1)",
		"local t = {5, 2, 8, 1} table.sort(t) local u = {'b', 'a', 'c'} table.sort(u, function(x, y) return x > y end) "
		"return table.concat(t, ','), table.concat(u, ',')",
		"table.sort({1, 'a', 2})",
		"local t = setmetatable({}, {__index = function(_, i) return i * 2 end, __len = function() return 4 end}) "
		"return table.concat(t, ','), table.unpack(t)",
		"return ('x'):rep(5):gsub('x', '%0%0', 2)",
		"return string.gsub('hello world', '(o)', {o = 'O'}), string.gsub('abc', '', '-')",
		"return string.find('a.b', '.', 1, true), string.find('abc', 'b', -1), string.find('', ''), "
		"string.find('abc', '', 10), string.match('  key = val', '(%w+)%s*=%s*(%w+)')",
	};
	KdState S;
	lua_State *ref = newstate(NULL), *bnd = newstate(&S);
	static char a[4096], b[4096];
	for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
		int sa = luaL_loadstring(ref, chunks[i]) || lua_pcall(ref, 0, LUA_MULTRET, 0);
		serialize(ref, 1, sa, a, sizeof a);
		lua_settop(ref, 0);
		int sb = luaL_loadstring(bnd, chunks[i]) || lua_pcall(bnd, 0, LUA_MULTRET, 0);
		serialize(bnd, 1, sb, b, sizeof b);
		lua_settop(bnd, 0);
		ck_assert_msg(!strcmp(a, b), "%s\n  Lua: %s\n  sandbox: %s", chunks[i], a, b);
	}
	lua_close(ref), lua_close(bnd);
}
END_TEST

static const char tail[] = "return kv.policy 'x' { score = function(x) return x.t end, select = kv.topk {} }\n";

static void load_fails(const char *body, const KdLimits *lim, const char *want)
{
	char src[1024];
	snprintf(src, sizeof src, "local kv = require 'kvcc'\n%s\n%s", body, tail);
	KiErr e = { 0 };
	KiFn *f = kd_load("b.lua", src, strlen(src), lim, &e);
	ck_assert_msg(f == NULL, "%s: loaded", body);
	ck_assert_msg(strstr(e.msg, want) != NULL, "%s: %s (want %s)", body, e.msg, want);
}

/* The wall clock bounds what no counter sees: comparing two long strings is
** one VM instruction. */
START_TEST(test_sandbox_deadline)
{
	KdLimits lim = { .seconds = 0.5 };
	load_fails("local a, b = ('x'):rep(2^24), ('x'):rep(2^24)\nwhile true do local _ = a < b end", &lim,
	           "b.lua:3:1: error: policy exceeded the time limit (0.5 s)");
}
END_TEST

/* Library work counts against the instruction limit, and no budget error
** can be caught; an empty rep costs nothing. */
START_TEST(test_sandbox_library_work)
{
	KdLimits lim = { .instructions = 200000 };
	load_fails("local n = 0\nfor i = 1, 100 do n = n + #(('abcd'):rep(1e5)) end", &lim,
	           "b.lua:3:1: error: policy exceeded the instruction limit (200000 ");
	load_fails("local ok = pcall(string.find, ('a'):rep(3000), ('a*'):rep(8) .. 'b')\nlocal t = nil\nt.x = 1",
	           &lim, "b.lua:2:1: error: policy exceeded the instruction limit");
	const char *empty = "local kv = require 'kvcc'\nassert(string.rep('', 1e15) == '' and ('') :rep(1e15, '') == '')\n";
	char src[512];
	snprintf(src, sizeof src, "%s%s", empty, tail);
	KiErr e = { 0 };
	KiFn *f = kd_load("c.lua", src, strlen(src), &lim, &e);
	ck_assert_msg(f != NULL, "%s", e.msg);
	ki_free(f);
}
END_TEST

Suite *sandbox_suite(void)
{
	Suite *s = suite_create("sandbox");
	TCase *tc = tcase_create("sandbox");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_strlib_matches_lua);
	tcase_add_test(tc, test_tablib_matches_lua);
	tcase_add_test(tc, test_sandbox_deadline);
	tcase_add_test(tc, test_sandbox_library_work);
	suite_add_tcase(s, tc);
	return s;
}
