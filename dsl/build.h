/*
** dsl/build.h — what the builder's two halves share (dsl/ only): the expression and
** rule userdata, and the helpers each half lends the other. builder.c: positions and
** errors, expressions, params, weights, scans, inputs, kv.policy and the library table;
** rules.c: the selection, when / state and merge rules.
*/
#ifndef KVCC_DSL_BUILD_H
#define KVCC_DSL_BUILD_H
#include <lua.h>
#include <lauxlib.h>
#include "dsl/dsl.h"

#define EXPR_MT   "kvcc.Expr"
#define RULE_MT   "kvcc.Rule"       /* select / merge / when / state / all values */

typedef struct Expr { KiRef ref; } Expr;

enum { RULE_topk, RULE_drop, RULE_prefill, RULE_decode, RULE_state, RULE_all, RULE_pyramid, RULE_policy,
       RULE_merge, RULE_adaptive, RULE_sched };
typedef struct Rule {
	int kind;
	KiSelect sel;                     /* RULE_topk (any select rule), RULE_pyramid (beta),
	                                  ** RULE_sched (prefix, dynamic: sched, sa, sb) */
	KiMerge mg;                       /* RULE_merge (its functions: user values), RULE_adaptive (beta) */
	KiRef every;                      /* RULE_decode */
	double init;                      /* RULE_state */
	uint32_t line, col;
} Rule;

#define MAX_TOKENS 1e9   /* largest count a select or obs field may name */

/* builder.c */
KC_FUNC KdState *kd_builder(lua_State *L);
KC_FUNC void kd_suggest(const char *name, const char *const *names, const char *noun, char *buf, size_t cap);
KC_FUNC int kd_raisefield(lua_State *L, const char *field, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
KC_FUNC void kd_pushexpr(lua_State *L, KiRef r);
KC_FUNC KiRef kd_kconst(lua_State *L, double v);
KC_FUNC KiRef kd_toref(lua_State *L, int idx, const char *name);
KC_FUNC KiRef kd_emit(lua_State *L, const char *name, int op, KiRef a, KiRef b, KiRef c, int axis, int aux,
                      uint8_t axes);
KC_FUNC void kd_pushinputs(lua_State *L);

/* rules.c */
KC_FUNC Rule *kd_newrule(lua_State *L, int kind, const char *name);
KC_FUNC KiRef kd_countfield(lua_State *L, int t, const char *field, double def, double max);
KC_FUNC void kd_checkfields(lua_State *L, int t, const char *what, const char *const *ok);
KC_FUNC void kd_buildmerge(lua_State *L, int idx);
KC_FUNC const luaL_Reg kd_rulefns[];     /* kv.topk, kv.nearest, ... (the library table's rules) */

#endif
