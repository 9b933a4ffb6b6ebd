/*
** KIR op table. One row per op, and on it everything about the op's meaning
** that can be written as data (LuaJIT's IRDEF). The table drives the printer,
** the parser, the verifier's arity and axis checks, constant folding and its
** identities (passes.c), the interpreter's elementwise evaluator and its
** reductions (ir.c ki_evalew, interp.c), the CUDA expressions and reduction
** code (codegen/ptx), and doc/kir.md (tools/kirdoc.c). ir.c turns the sem
** column into data: ki_sem(op) (ir.h), which the backends read.
**
** Columns:
**   name   op name in the text form (KO_<name> in C)
**   nargs  operand count (refs a, b, c)
**   rule   how the result's axes follow from the operands:
**            LEAF  given by the instruction itself (inputs, constants)
**            EW    union of the operands' axes (broadcast by name)
**            RED   operand a's axes minus `axis` (a must have it)
**            DOT   union of a's and b's axes minus `axis` (both must have it)
**            KEEP  same axes as operand a; `axis` must be one of them
**            TOK   the result has axes [token]
**            SAME  operand a's axes (cross-instance reductions over heads)
**            ROW   operand a's axes minus token (a must have it): a value read
**                  at one token of a merge pair (erow, krow, tmean)
**            SEG   operand a's axes; `axis` is token: a reduction (or rank) over
**                  the segment of tokens each token lies in, broadcast back to
**                  it. Segments: [0, c) and then b tokens at a time from c
**                  (b, c scalars; b = inf: one segment from c on)
**            SCAN  [token]: a recurrence along token (scan, below)
**   flags  KF_PURE (no side effects), KF_COMM (commutative), KF_FOLD
**          (constant-foldable when all operands are constants)
**   sem    what the op computes:
**            KS_LEAF   a leaf: each evaluator reads it from its inputs
**            KS_EW(value, cuda, lid, rid)   elementwise:
**                value  the result as a C expression of the double operands
**                       a, b, c; the interpreter and constant folding evaluate
**                       exactly it (ki_fmax, ki_fmin: ir.c)
**                cuda   the f32 CUDA C expression, a printf format whose %s
**                       are the operands a, b, c in order
**                lid    left identity: lid op x == x (KI_NOID: none); fold
**                rid    right identity: x op rid == x     drops such an op
**            KS_RED(init, map, comb, fin)   a reduction over `axis` (pools:
**                over the window; hmean: over the heads of the layer):
**                acc = init; acc = comb(acc, map(e)) for each element e;
**                result = fin(acc). init is comb's identity. The backends
**                emit one piece of code per kind below, not per op.
**            KS_SPECIAL  neither: written out in each evaluator (softmax, rand,
**                      shift, srank, scan)
**   doc    one line for doc/kir.md
**
** Reduction kinds (KS_RED):
**   map   MAP_ID    e                     MAP_SQ    e * e
**         MAP_MUL   a * b (dot)           MAP_DEV   (e - mean)^2, the mean from
**                                                   a first pass (std)
**   comb  CMB_ADD   acc + v               CMB_MAX   v if v > acc or v is NaN
**         CMB_MIN   v if v < acc or v is NaN        (a NaN stays)
**   fin   FIN_NONE  acc                   FIN_MEAN  acc / count (NaN when 0)
**         FIN_SQRT  sqrt(acc)             FIN_RMS   sqrt(acc / count) (NaN when 0)
**         FIN_DIVK  acc / the window size (avgpool: padding counted)
**
** A new elementwise op: its row (value and cuda), the x86 emitter
** (codegen/x86), the DSL function (dsl/builder.c). A new reduction: its row,
** and a new kind in each backend only when no map/comb/fin above fits.
*/
#ifndef KVCC_OPS_H
#define KVCC_OPS_H

/*  name       nargs rule  flags                    sem                                                                       doc */
#define KI_OPS(X) \
	X(input,     0, LEAF, KF_PURE,                 KS_LEAF,                                                                  "input tensor named by `aux` (K V Q lse pos qpos)") \
	X(state,     0, LEAF, KF_PURE,                 KS_LEAF,                                                                  "per-token state tensor number `aux`, axes [token]") \
	X(attn,      0, LEAF, KF_PURE,                 KS_LEAF,                                                                  "decode attention probabilities [group, token]; observe hook only") \
	X(index,     0, LEAF, KF_PURE,                 KS_LEAF,                                                                  "index along `axis` (0 .. size-1)") \
	X(size,      0, LEAF, KF_PURE,                 KS_LEAF,                                                                  "size of `axis` as a scalar (n tokens, obs, group, head_dim)") \
	X(info,      0, LEAF, KF_PURE,                 KS_LEAF,                                                                  "instance scalar named by `aux`: scale layer head nlayers nheads step ratio nkeep") \
	X(weight,    0, LEAF, KF_PURE,                 KS_LEAF,                                                                  "weight tensor number `aux` at this (layer, head); its declared group, chan, out axes") \
	X(carry,     0, LEAF, KF_PURE,                 KS_LEAF,                                                                  "in the body of scan `aux`: the scan's value at the previous token, h[t-1]") \
	X(rand,      1, TOK,  KF_PURE,                 KS_SPECIAL,                                                               "uniform [0,1) per token from (seed a, layer, head, pos); counter-based") \
	X(scan,      2, SCAN, KF_PURE,                 KS_SPECIAL,                                                               "recurrence h[t] = a at token t, carry = h[t-1] (b before the first token), in position order; per-token state `aux`") \
	X(neg,       1, EW,   KF_PURE|KF_FOLD,         KS_EW(-a, "-(%s)", KI_NOID, KI_NOID),                                     "-a") \
	X(exp,       1, EW,   KF_PURE|KF_FOLD,         KS_EW(exp(a), "expf(%s)", KI_NOID, KI_NOID),                              "exp(a)") \
	X(log,       1, EW,   KF_PURE|KF_FOLD,         KS_EW(log(a), "logf(%s)", KI_NOID, KI_NOID),                              "log(a)") \
	X(sqrt,      1, EW,   KF_PURE|KF_FOLD,         KS_EW(sqrt(a), "sqrtf(%s)", KI_NOID, KI_NOID),                            "sqrt(a)") \
	X(abs,       1, EW,   KF_PURE|KF_FOLD,         KS_EW(fabs(a), "fabsf(%s)", KI_NOID, KI_NOID),                            "|a|") \
	X(sin,       1, EW,   KF_PURE|KF_FOLD,         KS_EW(sin(a), "sinf(%s)", KI_NOID, KI_NOID),                              "sin(a)") \
	X(cos,       1, EW,   KF_PURE|KF_FOLD,         KS_EW(cos(a), "cosf(%s)", KI_NOID, KI_NOID),                              "cos(a)") \
	X(floor,     1, EW,   KF_PURE|KF_FOLD,         KS_EW(floor(a), "floorf(%s)", KI_NOID, KI_NOID),                          "largest integer <= a") \
	X(rint,      1, EW,   KF_PURE|KF_FOLD,         KS_EW(nearbyint(a), "rintf(%s)", KI_NOID, KI_NOID),                       "a rounded to the nearest integer, ties to even (Python round)") \
	X(add,       2, EW,   KF_PURE|KF_COMM|KF_FOLD, KS_EW(a + b, "(%s) + (%s)", 0, 0),                                        "a + b") \
	X(sub,       2, EW,   KF_PURE|KF_FOLD,         KS_EW(a - b, "(%s) - (%s)", KI_NOID, 0),                                  "a - b") \
	X(mul,       2, EW,   KF_PURE|KF_COMM|KF_FOLD, KS_EW(a * b, "(%s) * (%s)", 1, 1),                                        "a * b") \
	X(div,       2, EW,   KF_PURE|KF_FOLD,         KS_EW(a / b, "(%s) / (%s)", KI_NOID, 1),                                  "a / b") \
	X(pow,       2, EW,   KF_PURE|KF_FOLD,         KS_EW(pow(a, b), "powf(%s, %s)", KI_NOID, KI_NOID),                       "a ^ b") \
	X(max,       2, EW,   KF_PURE|KF_COMM|KF_FOLD, KS_EW(ki_fmax(a, b), "kv_max(%s, %s)", KI_NOID, KI_NOID),                 "max(a, b)") \
	X(min,       2, EW,   KF_PURE|KF_COMM|KF_FOLD, KS_EW(ki_fmin(a, b), "kv_min(%s, %s)", KI_NOID, KI_NOID),                 "min(a, b)") \
	X(lt,        2, EW,   KF_PURE|KF_FOLD,         KS_EW(a < b, "((%s) < (%s) ? 1.f : 0.f)", KI_NOID, KI_NOID),              "1 if a < b else 0") \
	X(le,        2, EW,   KF_PURE|KF_FOLD,         KS_EW(a <= b, "((%s) <= (%s) ? 1.f : 0.f)", KI_NOID, KI_NOID),            "1 if a <= b else 0") \
	X(eq,        2, EW,   KF_PURE|KF_COMM|KF_FOLD, KS_EW(a == b, "((%s) == (%s) ? 1.f : 0.f)", KI_NOID, KI_NOID),            "1 if a == b else 0") \
	X(ne,        2, EW,   KF_PURE|KF_COMM|KF_FOLD, KS_EW(a != b, "((%s) != (%s) ? 1.f : 0.f)", KI_NOID, KI_NOID),            "1 if a != b else 0") \
	X(where,     3, EW,   KF_PURE|KF_FOLD,         KS_EW(a != 0 ? b : c, "((%s) != 0.f ? (%s) : (%s))", KI_NOID, KI_NOID),   "b if a != 0 else c") \
	X(sum,       1, RED,  KF_PURE,                 KS_RED(0, MAP_ID, CMB_ADD, FIN_NONE),                                        "sum of a over `axis`") \
	X(mean,      1, RED,  KF_PURE,                 KS_RED(0, MAP_ID, CMB_ADD, FIN_MEAN),                                        "mean of a over `axis`") \
	X(rmax,      1, RED,  KF_PURE,                 KS_RED(-INFINITY, MAP_ID, CMB_MAX, FIN_NONE),                                "maximum of a over `axis`") \
	X(rmin,      1, RED,  KF_PURE,                 KS_RED(INFINITY, MAP_ID, CMB_MIN, FIN_NONE),                                 "minimum of a over `axis`") \
	X(norm,      1, RED,  KF_PURE,                 KS_RED(0, MAP_SQ, CMB_ADD, FIN_SQRT),                                        "Euclidean norm of a over `axis`") \
	X(std,       1, RED,  KF_PURE,                 KS_RED(0, MAP_DEV, CMB_ADD, FIN_RMS),                                        "population standard deviation of a over `axis`") \
	X(dot,       2, DOT,  KF_PURE|KF_COMM,         KS_RED(0, MAP_MUL, CMB_ADD, FIN_NONE),                                       "sum over `axis` of a * b") \
	X(softmax,   1, KEEP, KF_PURE,                 KS_SPECIAL,                                                               "softmax of a over `axis`; over token with obs present it is causal (pos <= qpos)") \
	X(softmaxnc, 1, KEEP, KF_PURE,                 KS_SPECIAL,                                                               "softmax of a over `axis`, no causal mask") \
	X(avgpool,   2, KEEP, KF_PURE,                 KS_RED(0, MAP_ID, CMB_ADD, FIN_DIVK),                                        "average pool of a along token, kernel b (runtime scalar), zero padding counted") \
	X(maxpool,   2, KEEP, KF_PURE,                 KS_RED(-INFINITY, MAP_ID, CMB_MAX, FIN_NONE),                                "max pool of a along token, kernel b (runtime scalar), -inf padding") \
	X(hmean,     1, SAME, KF_PURE,                 KS_RED(0, MAP_ID, CMB_ADD, FIN_MEAN),                                        "mean of a over the KV heads of the layer (instance axis head)") \
	X(erow,      1, ROW,  KF_PURE,                 KS_SPECIAL,                                                               "merge pair context: a [token] value a at the evicted token e") \
	X(krow,      1, ROW,  KF_PURE,                 KS_SPECIAL,                                                               "merge pair context: a [token] value a at the kept token k") \
	X(tmean,     1, ROW,  KF_PURE,                 KS_SPECIAL,                                                               "merge pair context: mean of a [token] value a over the targets of e (next)") \
	X(pinfo,     0, LEAF, KF_PURE,                 KS_LEAF,                                                                  "merge pair context scalar named by `aux`: sim absorbed ntargets ecount kcount") \
	X(shift,     3, KEEP, KF_PURE,                 KS_SPECIAL,                                                               "a moved along `axis` (token or chan): result[i] = a[i + b], c where i + b is outside") \
	X(ssum,      3, SEG,  KF_PURE,                 KS_RED(0, MAP_ID, CMB_ADD, FIN_NONE),                                        "sum of a over each token's segment (b tokens from c)") \
	X(smean,     3, SEG,  KF_PURE,                 KS_RED(0, MAP_ID, CMB_ADD, FIN_MEAN),                                        "mean of a over each token's segment") \
	X(smax,      3, SEG,  KF_PURE,                 KS_RED(-INFINITY, MAP_ID, CMB_MAX, FIN_NONE),                                "maximum of a over each token's segment") \
	X(smin,      3, SEG,  KF_PURE,                 KS_RED(INFINITY, MAP_ID, CMB_MIN, FIN_NONE),                                 "minimum of a over each token's segment") \
	X(srank,     3, SEG,  KF_PURE,                 KS_SPECIAL,                                                               "rank of a within each token's segment, 0 = smallest; ties: lower position first; NaN above every number")

enum {
	KF_PURE = 1,
	KF_COMM = 2,
	KF_FOLD = 4,
};

enum { AR_LEAF, AR_EW, AR_RED, AR_DOT, AR_KEEP, AR_TOK, AR_SAME, AR_ROW, AR_SEG, AR_SCAN };

/* the sem column: what each constructor stands for, and the reduction kinds */
enum { SEM_LEAF, SEM_EW, SEM_RED, SEM_SPECIAL };
enum { MAP_ID, MAP_SQ, MAP_MUL, MAP_DEV };
enum { CMB_ADD, CMB_MAX, CMB_MIN };
enum { FIN_NONE, FIN_MEAN, FIN_SQRT, FIN_RMS, FIN_DIVK };
#define KI_NOID NAN           /* KS_EW: no identity (needs math.h where expanded) */

#define KI_ENUM(name, nargs, rule, flags, sem, doc) KO_##name,
enum { KI_OPS(KI_ENUM) KO_NUM };
#undef KI_ENUM

#endif
