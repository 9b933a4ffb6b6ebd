/*
** dsl/ — runs a policy file in a sandboxed Lua 5.4 state whose only module is
** the builder library `kvcc`; builder calls append KIR instructions to a KiFn.
** No Lua runs after this stage.
*/
#ifndef KVCC_DSL_H
#define KVCC_DSL_H

#include "compiler/ir.h"

/* The sandbox's budgets. Every one is uncatchable: once a policy passes one,
** pcall/xpcall re-raise, handlers and __close run under the same budgets,
** and the load fails with that one error. 0 means "the default". */
typedef struct KdLimits {
	long long instructions;   /* Lua VM instructions, plus the work of library calls
	                          ** (string, table) and allocations in the same units */
	size_t memory;            /* bytes the Lua state may allocate */
	int kir;                  /* KIR instructions a policy may create */
	double seconds;           /* wall clock for the whole evaluation */
} KdLimits;

#define KD_DEFAULT_INSTRUCTIONS 20000000LL
#define KD_DEFAULT_MEMORY       (64u << 20)
#define KD_DEFAULT_KIR          KI_MAXINS
#define KD_DEFAULT_SECONDS      10.0
#define KD_MAX_PARAMS           KI_MAXPAR
#define KD_MAX_STATES           KI_MAXST   /* state numbers are 8-bit (KiIns.aux) */

/* sandbox.c: load a policy from `text` (file name `path` for positions).
** Returns the policy's KIR, or NULL with a one-line error in *e. `lim` may be
** NULL for the defaults. */
KC_FUNC KiFn *kd_load(const char *path, const char *text, size_t len, const KdLimits *lim, KiErr *e);
KC_FUNC KiFn *kd_loadfile(const char *path, const KdLimits *lim, KiErr *e);

/* builder.c: the `kvcc` module (internal to the sandbox) */
struct lua_State;
typedef struct KdState KdState;
KC_FUNC int kd_openlib(struct lua_State *L);
KC_FUNC int kd_raise(struct lua_State *L, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
KC_FUNC int kd_raiseat(struct lua_State *L, uint32_t line, uint32_t col, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
KC_FUNC void kd_where(struct lua_State *L, int level, const char *name, uint32_t *line, uint32_t *col);

KC_FUNC int kd_fatal(struct lua_State *L, int kind);
KC_FUNC void kd_charge(struct lua_State *L, long long units);

/* strlib.c: bounded replacements for the string and table functions whose
** work is not made of VM instructions (pattern matching, rep, concat, move...) */
KC_FUNC void kd_openstrlib(struct lua_State *L);

enum { KD_FATAL_NONE, KD_FATAL_INSTR, KD_FATAL_TIME, KD_FATAL_MEM };

struct KdState {
	KiFn *f;                  /* the policy being built */
	const char *path;         /* file name shown in positions */
	const char *chunk;        /* Lua's name for the chunk ("name.lua": Lua's own
	                          ** messages start "name.lua:LINE:") */
	const char *text;         /* source, for columns */
	size_t len;
	int in_observe;           /* 1 while the observe hook runs (x.attn allowed) */
	int declared;             /* kvcc.policy was called */
	int finished;             /* the chunk returned: builder calls are refused */
	KdLimits lim;
	long long icount;         /* work done, in VM-instruction units */
	double deadline;          /* CLOCK_MONOTONIC seconds */
	size_t mem;               /* bytes allocated by the state */
	int memhit;               /* an allocation was refused: the memory budget is spent */
	int nomem;                /* the system's allocator failed: out of memory, not the budget */
	int lastline;             /* line seen by the count hook, for memory errors */
	int errline;              /* line where the reported error was raised */
	int fatal;                /* KD_FATAL_*: a budget error was raised; it is final */
	char fatalmsg[512];       /* that error, formatted */
	char raisedmsg[512];      /* the last error formatted by kd_raise (pre-formatted
	                          ** errors are recognized by equality with it) */
};

KC_FUNC KdState *kd_state(struct lua_State *L);
KC_FUNC int kd_ispolicy(struct lua_State *L, int idx);
KC_FUNC void kd_escape(const char *in, char *out, size_t cap);

#endif
