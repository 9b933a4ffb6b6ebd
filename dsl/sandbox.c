/*
** The policy sandbox. A policy is untrusted code: it runs in a fresh Lua 5.4
** state with only the safe parts of base, math, string and table, strict
** globals, `require` that knows only "kvcc", an instruction budget (count
** hook) and a memory budget (allocator). Every failure becomes one line
** "file:line:col: error: msg" in a KcErr; nothing escapes as a crash.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "dsl/dsl.h"

#define HOOK_EVERY 1000     /* VM instructions between count-hook calls */

static const char KEY_STATE = 'k';   /* registry key for the KdState */

KdState *kd_state(lua_State *L)
{
	lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_STATE);
	KdState *S = lua_touserdata(L, -1);
	lua_pop(L, 1);
	return S;
}

/* The allocator enforces the memory budget. Lua turns a refused allocation
** into a "not enough memory" error that we report with the budget; when the
** system's allocator fails instead, it is reported as out of memory. */
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
	if (nsize > osize && S->mem + (nsize - osize) > S->lim.memory) {
		S->oom = 1;
		return NULL;
	}
	void *p = realloc(ptr, nsize);
	if (p)
		S->mem = S->mem - osize + nsize;
	else
		S->nomem = 1;
	return p;
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
	KdState *S = kd_state(L);
	if (lua_getinfo(L, "l", ar) && ar->currentline > 0)
		S->lastline = ar->currentline;   /* where a memory error is reported */
	S->icount += HOOK_EVERY;
	if (S->icount > S->lim.instructions)
		kd_raise(L, NULL, "policy exceeded the instruction limit (%lld Lua instructions); "
		         "is there an infinite loop?", S->lim.instructions);
}

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
	"rawequal", "rawlen", NULL
};
static const char *const banned_libs[] = { "io", "os", "debug", "package", "coroutine", "utf8", NULL };

static void open_safe_libs(lua_State *L)
{
	luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
	luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
	luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
	luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
	lua_pop(L, 4);
	lua_getglobal(L, "string");
	lua_pushstring(L, "string.dump");  /* bytecode out; `load` is gone anyway */
	lua_pushcclosure(L, forbidden, 1);
	lua_setfield(L, -2, "dump");
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
	lua_setmetatable(L, -2);
	lua_pop(L, 1);
}

/* "src:LINE: msg" (Lua's own errors) → "src:LINE:COL: error: msg". The column
** is that of the token Lua names ("near 'x'") when it is on the line. */
static void convert_lua_error(KdState *S, const char *m, KcErr *e)
{
	size_t plen = strlen(S->path);
	if (strncmp(m, S->path, plen) == 0 && m[plen] == ':') {
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
			kc_error(e, S->path, (uint32_t)line, col, "%s", msg);
			return;
		}
	}
	kc_error(e, S->path, 1, 1, "%s", m);
}

/* The state's setup, in protected mode (a memory error here is an error, not a
** panic): the KdState in the registry, the sandboxed libraries. */
static int setup(lua_State *L)
{
	lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_STATE);   /* the light userdata argument */
	open_safe_libs(L);
	return 0;
}

/* Runs the chunk and turns its result into the policy. */
static int run_policy(lua_State *L)
{
	KdState *S = kd_state(L);
	lua_call(L, 0, 1);
	if (!S->declared || !S->f->score || !kd_ispolicy(L, -1))
		return kd_raise(L, NULL, "a policy file must end with 'return kvcc.policy \"name\" { ... }'");
	return 0;
}

KiFn *kd_load(const char *path, const char *text, size_t len, const KdLimits *lim, KcErr *e)
{
	KdState S;
	memset(&S, 0, sizeof S);
	S.path = path;
	S.text = text;
	S.len = len;
	S.lim.instructions = lim && lim->instructions ? lim->instructions : KD_DEFAULT_INSTRUCTIONS;
	S.lim.memory = lim && lim->memory ? lim->memory : KD_DEFAULT_MEMORY;
	S.lim.kir = lim && lim->kir ? lim->kir : KD_DEFAULT_KIR;
	const char *base = strrchr(path, '/');
	char name[64];
	snprintf(name, sizeof name, "%s", base ? base + 1 : path);
	char *dot = strrchr(name, '.');
	if (dot)
		*dot = 0;
	S.f = ki_new(name, path);
	lua_State *L = S.f ? lua_newstate(limited_alloc, &S) : NULL;
	if (!L) {
		kc_error(e, path, 0, 0, "out of memory (creating the Lua state)");
		ki_free(S.f);
		return NULL;
	}
	lua_pushcfunction(L, setup);
	lua_pushlightuserdata(L, &S);
	int rc = lua_pcall(L, 1, 0, 0);

	char chunkname[300];
	snprintf(chunkname, sizeof chunkname, "@%s", path);
	if (rc == LUA_OK)
		rc = luaL_loadbufferx(L, text, len, chunkname, "t");   /* text only: no bytecode */
	if (rc == LUA_OK) {
		lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
		lua_pushcfunction(L, run_policy);
		lua_insert(L, -2);
		rc = lua_pcall(L, 1, 0, 0);
		lua_sethook(L, NULL, 0, 0);
	}
	if (rc != LUA_OK) {
		if (rc == LUA_ERRMEM && S.nomem && !S.oom)   /* the system's memory, not the budget */
			kc_error(e, path, S.lastline > 0 ? (uint32_t)S.lastline : 1, 1, "out of memory");
		else if (rc == LUA_ERRMEM || S.oom) {
			if (S.raised && lua_type(L, -1) == LUA_TSTRING)
				kc_error(e, NULL, 0, 0, "%s", lua_tostring(L, -1));
			else
				kc_error(e, path, S.lastline > 0 ? (uint32_t)S.lastline : 1, 1,
				         "policy exceeded the memory limit (%zu MiB)", S.lim.memory >> 20);
		} else if (lua_type(L, -1) != LUA_TSTRING)
			kc_error(e, path, 1, 1, "policy raised a non-string error");
		else if (S.raised)
			kc_error(e, NULL, 0, 0, "%s", lua_tostring(L, -1));
		else
			convert_lua_error(&S, lua_tostring(L, -1), e);
		/* kc_error with no source prints "error: msg": strip that for
		** pre-formatted messages */
		if (S.raised && strncmp(e->msg, "error: ", 7) == 0)
			memmove(e->msg, e->msg + 7, strlen(e->msg + 7) + 1);
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

KiFn *kd_loadfile(const char *path, const KdLimits *lim, KcErr *e)
{
	size_t len;
	char *text = kc_readfilemax(path, KI_MAXTEXT, &len, e);
	if (!text)
		return NULL;
	if (memchr(text, 0, len)) {
		kc_error(e, path, 1, 1, "policy file contains a NUL byte (binary chunks are not accepted)");
		free(text);
		return NULL;
	}
	KiFn *f = kd_load(path, text, len, lim, e);
	free(text);
	return f;
}
