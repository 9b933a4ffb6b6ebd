/*
** The policy sandbox. A policy is untrusted code: it runs in a fresh Lua 5.4
** state with only the safe parts of base, math, string and table, strict
** globals, `require` that knows only "kvcc", and four budgets: VM
** instructions (count hook), library work (string and table functions are
** bounded replacements that charge the same counter, strlib.c), memory
** (allocator) and wall-clock time. Every failure becomes one line
** "file:line:col: error: msg" in a KiErr; nothing escapes as a crash.
**
** Budget errors are final. Once one is raised (kd_fatal) the state is marked:
** pcall and xpcall re-raise it, an xpcall handler is not run for it, the hook
** stays installed while handlers, __close methods and lua_close run, and
** every later hook call raises again. Finalizers cannot exist: setmetatable
** refuses a metatable with __gc and the library's metatables are protected.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "dsl/dsl.h"

#define HOOK_EVERY  256          /* VM instructions between count-hook calls */
#define ALLOC_UNIT  64           /* bytes allocated per instruction unit charged... */
#define ALLOC_FREE  1024         /* ...beyond the first 1 KiB of each allocation */
#define MEM_SLACK   (1u << 20)   /* extra bytes for error handling once the budget is spent */

/* The KdState lives in the main thread's extra space (coroutines are not
** available, so there is no other thread). */
KdState *kd_state(lua_State *L)
{
	return *(KdState **)lua_getextraspace(L);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The allocator enforces the memory budget and charges large growth to the
** work counter (building a big string or table is copying; small allocations
** are paid for by the instructions that make them). A refused allocation marks the budget
** spent for good: the next check point raises the memory error, even if
** Lua's emergency collection let the program go on. When the system's allocator
** fails instead, it is reported as out of memory. */
static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	KdState *S = ud;
	if (!ptr)
		osize = 0;
	if (nsize == 0) {
		free(ptr);
		S->mem -= osize;
		return NULL;
	}
	size_t cap = S->lim.memory + (S->memhit ? MEM_SLACK : 0);
	if (nsize > osize && (nsize - osize > cap || S->mem > cap - (nsize - osize))) {
		S->memhit = 1;
		return NULL;
	}
	void *p = realloc(ptr, nsize);
	if (p) {
		S->mem = S->mem - osize + nsize;
		if (nsize > osize + ALLOC_FREE)
			S->icount += (long long)((nsize - osize - ALLOC_FREE) / ALLOC_UNIT);
	} else
		S->nomem = 1;
	return p;
}

/* --- budget errors ------------------------------------------------------------ */

/* Raise the budget error `kind` at the running Lua line, or the one already
** raised: the first budget error is the one reported. */
int kd_fatal(lua_State *L, int kind)
{
	KdState *S = kd_state(L);
	if (!S->fatal) {
		char msg[300];
		if (kind == KD_FATAL_MEM)
			snprintf(msg, sizeof msg, "policy exceeded the memory limit (%zu MiB)", S->lim.memory >> 20);
		else if (kind == KD_FATAL_TIME)
			snprintf(msg, sizeof msg, "policy exceeded the time limit (%g s); is there an infinite loop?",
			         S->lim.seconds);
		else
			snprintf(msg, sizeof msg, "policy exceeded the instruction limit (%lld Lua instructions); "
			         "is there an infinite loop?", S->lim.instructions);
		uint32_t line, col;
		kd_where(L, 0, NULL, &line, &col);
		KiErr e = { 0 };
		ki_error(&e, S->path, line ? line : 1, col ? col : 1, "%s", msg);
		snprintf(S->fatalmsg, sizeof S->fatalmsg, "%s", e.msg);
		S->fatal = kind;
	}
	lua_pushstring(L, S->fatalmsg);
	return lua_error(L);
}

/* Raise if a budget is spent. */
static void check(lua_State *L, KdState *S)
{
	if (S->fatal)
		kd_fatal(L, S->fatal);
	if (S->memhit)
		kd_fatal(L, KD_FATAL_MEM);
	if (S->icount > S->lim.instructions)
		kd_fatal(L, KD_FATAL_INSTR);
	if (now() > S->deadline)
		kd_fatal(L, KD_FATAL_TIME);
}

/* Library work: `units` instruction equivalents. */
void kd_charge(lua_State *L, long long units)
{
	KdState *S = kd_state(L);
	S->icount += units > 0 ? units : 0;
	check(L, S);
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
	KdState *S = kd_state(L);
	if (lua_getinfo(L, "l", ar) && ar->currentline > 0)
		S->lastline = ar->currentline;   /* where a memory error is reported */
	S->icount += HOOK_EVERY;
	check(L, S);
}

/* pcall and xpcall that cannot catch a budget error. */
static int sb_pcall(lua_State *L)
{
	luaL_checkany(L, 1);
	int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
	KdState *S = kd_state(L);
	if (S->fatal || S->memhit || status == LUA_ERRMEM)
		kd_fatal(L, S->fatal ? S->fatal : KD_FATAL_MEM);
	lua_pushboolean(L, status == LUA_OK);
	lua_insert(L, 1);
	return lua_gettop(L);
}

/* The message handler around the policy's: a budget error passes through
** untouched (the policy's handler might loop, and Lua runs handlers of
** errors raised in a hook with hooks off). */
static int sb_handler(lua_State *L)
{
	if (kd_state(L)->fatal)
		return 1;
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, 1);
	return 1;
}

static int sb_xpcall(lua_State *L)
{
	int n = lua_gettop(L);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_pushvalue(L, 2);
	lua_pushcclosure(L, sb_handler, 1);   /* at n + 1 */
	lua_pushvalue(L, 1);
	for (int i = 3; i <= n; i++)
		lua_pushvalue(L, i);
	int status = lua_pcall(L, n - 2, LUA_MULTRET, n + 1);
	KdState *S = kd_state(L);
	if (S->fatal || S->memhit || status == LUA_ERRMEM)
		kd_fatal(L, S->fatal ? S->fatal : KD_FATAL_MEM);
	lua_pushboolean(L, status == LUA_OK);
	lua_replace(L, n + 1);
	return lua_gettop(L) - n;
}

/* setmetatable without finalizers: a __gc method would run outside the
** policy's evaluation (at collection or lua_close). */
static int sb_setmetatable(lua_State *L)
{
	int t = lua_type(L, 2);
	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
	if (t == LUA_TTABLE) {
		lua_pushliteral(L, "__gc");
		if (lua_rawget(L, 2) != LUA_TNIL)
			return kd_raise(L, "setmetatable", "__gc metamethods (finalizers) are not available "
			                "in the policy sandbox");
		lua_pop(L, 1);
	}
	if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
		return kd_raise(L, "setmetatable", "cannot change a protected metatable");
	lua_settop(L, 2);
	lua_setmetatable(L, 1);
	return 1;
}

/* --- globals --------------------------------------------------------------------- */

/* Strict globals: reading or writing an undeclared global is an error. */
static int strict_index(lua_State *L)
{
	return kd_raise(L, lua_tostring(L, 2), "undefined global '%s'", lua_tostring(L, 2));
}

static int strict_newindex(lua_State *L)
{
	return kd_raise(L, lua_tostring(L, 2), "assignment to global '%s' (use 'local')",
	                lua_tostring(L, 2));
}

static int sandbox_require(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	if (strcmp(name, "kvcc") != 0)
		return kd_raise(L, "require", "module '%s' is not available in the policy sandbox "
		                "(only \"kvcc\")", name);
	lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
	lua_getfield(L, -1, "kvcc");
	return 1;
}

static int forbidden(lua_State *L)
{
	const char *name = lua_tostring(L, lua_upvalueindex(1));
	return kd_raise(L, name, "'%s' is not available in the policy sandbox", name);
}

/* io.open and friends: reading any field of a banned library fails, naming it */
static int forbidden_field(lua_State *L)
{
	const char *lib = lua_tostring(L, lua_upvalueindex(1));
	const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
	return kd_raise(L, lib, "'%s.%s' is not available in the policy sandbox", lib, k);
}

/* Globals that a policy may not touch. They stay defined, as functions that
** fail with a clear message, so `io.open` says why instead of "undefined". */
static const char *const banned_globals[] = {
	"dofile", "loadfile", "load", "loadstring", "collectgarbage", "print", "rawset", "rawget",
	"rawequal", "rawlen", "warn", NULL
};
static const char *const banned_libs[] = { "io", "os", "debug", "package", "coroutine", "utf8", NULL };

/* Protect the metatable at the top of the stack from getmetatable/setmetatable. */
static void protect(lua_State *L)
{
	lua_pushliteral(L, "kvcc sandbox");
	lua_setfield(L, -2, "__metatable");
}

static int open_safe_libs(lua_State *L)
{
	luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
	luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
	luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
	luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
	lua_pop(L, 4);
	kd_openstrlib(L);
	lua_getglobal(L, "string");
	lua_pushstring(L, "string.dump");  /* bytecode out; `load` is gone anyway */
	lua_pushcclosure(L, forbidden, 1);
	lua_setfield(L, -2, "dump");
	lua_pop(L, 1);
	lua_pushliteral(L, "");           /* the string metatable (s:find(...)) */
	lua_getmetatable(L, -1);
	protect(L);
	lua_pop(L, 2);
	static const luaL_Reg wrapped[] = {
		{ "pcall", sb_pcall }, { "xpcall", sb_xpcall }, { "setmetatable", sb_setmetatable },
		{ NULL, NULL }
	};
	lua_pushglobaltable(L);
	luaL_setfuncs(L, wrapped, 0);
	lua_pop(L, 1);
	for (int i = 0; banned_globals[i]; i++) {
		lua_pushstring(L, banned_globals[i]);
		lua_pushcclosure(L, forbidden, 1);
		lua_setglobal(L, banned_globals[i]);
	}
	/* io.open, os.execute, debug.getinfo...: tables whose every field is a
	** function that fails with the qualified name. */
	for (int i = 0; banned_libs[i]; i++) {
		lua_newtable(L);                       /* the fake library */
		lua_newtable(L);                       /* its metatable */
		lua_pushstring(L, banned_libs[i]);
		lua_pushcclosure(L, forbidden, 1);
		lua_setfield(L, -2, "__call");
		lua_pushstring(L, banned_libs[i]);
		lua_pushcclosure(L, forbidden_field, 1);   /* raised when a field is read */
		lua_setfield(L, -2, "__index");
		protect(L);
		lua_setmetatable(L, -2);
		lua_setglobal(L, banned_libs[i]);
	}
	lua_pushcfunction(L, sandbox_require);
	lua_setglobal(L, "require");
	luaL_requiref(L, "kvcc", kd_openlib, 0);
	lua_pop(L, 1);
	/* strict _G */
	lua_pushglobaltable(L);
	lua_newtable(L);
	lua_pushcfunction(L, strict_index);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, strict_newindex);
	lua_setfield(L, -2, "__newindex");
	protect(L);
	lua_setmetatable(L, -2);
	lua_pop(L, 1);
	return 0;
}

/* --- messages ---------------------------------------------------------------------- */

/* Copy `in` to `out` as one printable line: newline, tab, other control
** characters, DEL and bytes that are not UTF-8 become escapes (\n, \t, \xHH). */
void kd_escape(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	const unsigned char *s = (const unsigned char *)in;
	while (*s && o + 5 < cap) {
		unsigned c = *s;
		int n = c >= 0xc2 && c < 0xe0 ? 2 : c >= 0xe0 && c < 0xf0 ? 3 : c >= 0xf0 && c < 0xf5 ? 4 : 1;
		int ok = c >= 0x20 && c < 0x7f;
		if (n > 1) {
			ok = 1;
			for (int k = 1; k < n; k++)
				ok &= (s[k] & 0xc0) == 0x80;
			ok &= !(c == 0xc2 && s[1] < 0xa0);          /* C1 controls U+0080..U+009F */
			ok &= !(c == 0xe0 && s[1] < 0xa0) && !(c == 0xf0 && s[1] < 0x90) &&
			      !(c == 0xf4 && s[1] >= 0x90) && !(c == 0xed && s[1] >= 0xa0);
		}
		if (ok && n > 1) {
			if (o + (size_t)n + 1 > cap)
				break;
			memcpy(out + o, s, (size_t)n);
			o += (size_t)n, s += n;
			continue;
		}
		if (ok)
			out[o++] = (char)c;
		else if (c == '\n')
			out[o++] = '\\', out[o++] = 'n';
		else if (c == '\t')
			out[o++] = '\\', out[o++] = 't';
		else if (c == '\r')
			out[o++] = '\\', out[o++] = 'r';
		else
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
		s++;
	}
	out[o] = 0;
}

/* "CHUNK:LINE: msg" (Lua's own errors) → "path:LINE:COL: error: msg". The
** column is that of the token Lua names ("near 'x'") when it is on the line. */
static void convert_lua_error(KdState *S, const char *m, KiErr *e)
{
	size_t plen = strlen(S->chunk);
	if (strncmp(m, S->chunk, plen) == 0 && m[plen] == ':') {
		char *end;
		long line = strtol(m + plen + 1, &end, 10);
		if (end != m + plen + 1 && *end == ':' && line > 0) {
			const char *msg = end + 1;
			while (*msg == ' ')
				msg++;
			uint32_t col = 1;
			const char *near = strstr(msg, "near '");
			const char *ls = S->text;
			for (long k = 1; k < line && ls; k++) {
				ls = strchr(ls, '\n');
				if (ls)
					ls++;
			}
			if (ls) {
				const char *le = strchr(ls, '\n');
				size_t ll = le ? (size_t)(le - ls) : strlen(ls);
				while (col <= ll && (ls[col - 1] == ' ' || ls[col - 1] == '\t'))
					col++;
				if (near) {
					const char *tok = near + 6, *q = strchr(tok, '\'');
					size_t tl = q ? (size_t)(q - tok) : 0;
					for (size_t k = 0; tl && k + tl <= ll; k++)
						if (memcmp(ls + k, tok, tl) == 0) {
							col = (uint32_t)k + 1;
							break;
						}
				}
			}
			ki_error(e, S->path, (uint32_t)line, col, "%s", msg);
			return;
		}
	}
	ki_error(e, S->path, S->errline > 0 ? (uint32_t)S->errline : 1, 1, "%s", m);
}

/* Lua's name for the chunk: the file's base name when it is short and plain
** (Lua shortens long chunk names, losing the line), else "policy.lua".
** Messages are mapped back to the full path by convert_lua_error. */
static void chunkname(const char *path, char *buf, size_t cap)
{
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	int plain = *base && strlen(base) < 48;
	for (const char *p = base; plain && *p; p++)
		plain = *p > 0x20 && *p < 0x7f && *p != ':';
	snprintf(buf, cap, "=%s", plain ? base : "policy.lua");
}

/* The KIR's source name: the path, with what its text form cannot hold
** (a '"', control characters) escaped. */
static void kirsrc(const char *path, char *buf, size_t cap)
{
	char esc[1024];
	kd_escape(path, esc, sizeof esc);
	size_t o = 0;
	for (const char *p = esc; *p && o + 5 < cap; p++)
		o += *p == '"' ? (size_t)snprintf(buf + o, cap - o, "\\x22") : (buf[o] = *p, 1);
	buf[o] = 0;
}

/* Message handler of the whole run: remembers where an error was raised, for
** errors that carry no position (error(msg, 0), a non-string error). */
static int where_handler(lua_State *L)
{
	KdState *S = kd_state(L);
	lua_Debug ar;
	for (int level = 1; lua_getstack(L, level, &ar); level++)
		if (lua_getinfo(L, "l", &ar) && ar.currentline > 0) {
			S->errline = ar.currentline;
			break;
		}
	return 1;
}

/* Runs the chunk and turns its result into the policy. */
static int run_policy(lua_State *L)
{
	KdState *S = kd_state(L);
	lua_call(L, 0, 1);
	S->finished = 1;
	if (!S->declared || !S->f->score || !kd_ispolicy(L, -1))
		return kd_raise(L, NULL, "a policy file must end with 'return kvcc.policy \"name\" { ... }'");
	return 0;
}

/* The one-line error of a failed run (status rc, error value on top). */
static void report(KdState *S, lua_State *L, int rc, KiErr *e)
{
	const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
	if (S->fatal)
		snprintf(e->msg, sizeof e->msg, "%s", S->fatalmsg), e->set = 1;
	else if (rc == LUA_ERRMEM && S->nomem && !S->memhit)   /* the system's memory, not the budget */
		ki_error(e, S->path, S->lastline > 0 ? (uint32_t)S->lastline : 1, 1, "out of memory");
	else if (S->memhit || rc == LUA_ERRMEM) {
		/* raised by Lua itself: the stack is unwound, the hook saw the line */
		ki_error(e, S->path, S->lastline > 0 ? (uint32_t)S->lastline : 1, 1,
		         "policy exceeded the memory limit (%zu MiB)", S->lim.memory >> 20);
	} else if (!m)
		ki_error(e, S->path, S->errline > 0 ? (uint32_t)S->errline : 1, 1,
		         "policy raised a non-string error (a %s)", luaL_typename(L, -1));
	else if (S->raisedmsg[0] && strcmp(m, S->raisedmsg) == 0)
		snprintf(e->msg, sizeof e->msg, "%s", m), e->set = 1;
	else
		convert_lua_error(S, m, e);
}

KiFn *kd_load(const char *path, const char *text, size_t len, const KdLimits *lim, KiErr *e)
{
	KdState S;
	memset(&S, 0, sizeof S);
	char chunk[64], src[256];
	chunkname(path, chunk, sizeof chunk);
	kirsrc(path, src, sizeof src);
	S.path = path;
	S.chunk = chunk + 1;
	S.text = text;
	S.len = len;
	S.lim.instructions = lim && lim->instructions ? lim->instructions : KD_DEFAULT_INSTRUCTIONS;
	S.lim.memory = lim && lim->memory ? lim->memory : KD_DEFAULT_MEMORY;
	S.lim.kir = lim && lim->kir ? lim->kir : KD_DEFAULT_KIR;
	S.lim.seconds = lim && lim->seconds > 0 ? lim->seconds : KD_DEFAULT_SECONDS;
	S.deadline = now() + S.lim.seconds;
	const char *base = strrchr(path, '/');
	char name[64];
	snprintf(name, sizeof name, "%s", base ? base + 1 : path);
	char *dot = strrchr(name, '.');
	if (dot)
		*dot = 0;
	S.f = ki_new(name, src);
	lua_State *L = S.f ? lua_newstate(limited_alloc, &S) : NULL;
	if (!L) {
		ki_error(e, path, 0, 0, "out of memory (creating the Lua state)");
		ki_free(S.f);
		return NULL;
	}
	*(KdState **)lua_getextraspace(L) = &S;
	/* the hook stays installed until lua_close: nothing of the policy's runs
	** uncounted */
	lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
	lua_pushcfunction(L, open_safe_libs);
	int rc = lua_pcall(L, 0, 0, 0);
	if (rc == LUA_OK)
		rc = luaL_loadbufferx(L, text, len, chunk, "t");   /* text only: no bytecode */
	if (rc == LUA_OK) {
		lua_pushcfunction(L, where_handler);
		lua_insert(L, -2);
		lua_pushcfunction(L, run_policy);
		lua_insert(L, -2);
		rc = lua_pcall(L, 1, 0, 1);
	}
	S.finished = 1;
	if (rc == LUA_OK && (S.memhit || S.fatal))
		rc = LUA_ERRRUN, lua_pushnil(L);
	if (rc != LUA_OK) {
		KiErr raw = { 0 };
		report(&S, L, rc, &raw);
		kd_escape(raw.msg, e->msg, sizeof e->msg);
		e->set = 1;
		lua_close(L);
		ki_free(S.f);
		return NULL;
	}
	lua_close(L);
	if (ki_verify(S.f, e) != 0) {
		ki_free(S.f);
		return NULL;
	}
	return S.f;
}

KiFn *kd_loadfile(const char *path, const KdLimits *lim, KiErr *e)
{
	size_t len;
	char *text = ki_readfilemax(path, KI_MAXTEXT, &len, e);
	if (!text)
		return NULL;
	if (memchr(text, 0, len)) {
		ki_error(e, path, 1, 1, "policy file contains a NUL byte (binary chunks are not accepted)");
		free(text);
		return NULL;
	}
	KiFn *f = kd_load(path, text, len, lim, e);
	free(text);
	return f;
}
