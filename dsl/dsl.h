/*
** dsl/ — runs a policy file in a sandboxed Lua 5.4 state whose only module is
** the builder library `kvcc`; builder calls append KIR instructions to a KiFn.
** No Lua runs after this stage.
*/
#ifndef KVCC_DSL_H
#define KVCC_DSL_H

#include "compiler/ir.h"

typedef struct KdLimits {
	long long instructions;   /* Lua VM instructions before "runs too long" */
	size_t memory;            /* bytes the Lua state may allocate */
	int kir;                  /* KIR instructions a policy may create */
} KdLimits;

#define KD_DEFAULT_INSTRUCTIONS 20000000LL
#define KD_DEFAULT_MEMORY       (64u << 20)
#define KD_DEFAULT_KIR          KI_MAXINS

/* sandbox.c: load a policy from `text` (file name `path` for positions).
** Returns the policy's KIR, or NULL with a one-line error in *e. `lim` may be
** NULL for the defaults. */
KC_FUNC KiFn *kd_load(const char *path, const char *text, size_t len, const KdLimits *lim, KcErr *e);
KC_FUNC KiFn *kd_loadfile(const char *path, const KdLimits *lim, KcErr *e);

/* builder.c: the `kvcc` module (internal to the sandbox) */
struct lua_State;
typedef struct KdState KdState;
KC_FUNC int kd_openlib(struct lua_State *L);
KC_FUNC int kd_raise(struct lua_State *L, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
KC_FUNC int kd_raiseat(struct lua_State *L, uint32_t line, uint32_t col, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
KC_FUNC void kd_where(struct lua_State *L, int level, const char *name, uint32_t *line, uint32_t *col);

struct KdState {
	KiFn *f;                  /* the policy being built */
	const char *path;         /* file name shown in positions */
	const char *text;         /* source, for columns */
	size_t len;
	int in_observe;           /* 1 while the observe hook runs (x.attn allowed) */
	int raised;               /* the error on the Lua stack is already formatted */
	int declared;             /* kvcc.policy was called */
	KdLimits lim;
	long long icount;         /* instructions executed (in hook units) */
	size_t mem;               /* bytes allocated by the state */
	int oom;                  /* an allocation was refused (the budget) */
	int nomem;                /* an allocation failed (the system is out of memory) */
	int lastline;             /* line seen by the count hook, for memory errors */
	char oomwhere[300];
};

KC_FUNC KdState *kd_state(struct lua_State *L);
KC_FUNC int kd_ispolicy(struct lua_State *L, int idx);

#endif
