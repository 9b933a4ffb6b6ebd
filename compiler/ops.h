/*
** KIR op table. One row per op; this table drives the printer, the parser, the
** verifier's arity and axis checks, the interpreter's dispatch and doc/kir.md.
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
**   flags  KF_PURE (no side effects), KF_COMM (commutative), KF_FOLD
**          (constant-foldable when all operands are constants)
**   doc    one line for doc/kir.md
*/
#ifndef KVCC_OPS_H
#define KVCC_OPS_H

/*  name      nargs rule  flags                      doc */
#define KI_OPS(X) \
	X(input,   0, LEAF, KF_PURE,                    "input tensor named by `aux` (K V Q lse pos qpos)") \
	X(state,   0, LEAF, KF_PURE,                    "per-token state tensor number `aux`, axes [token]") \
	X(attn,    0, LEAF, KF_PURE,                    "decode attention probabilities [group, token]; observe hook only") \
	X(index,   0, LEAF, KF_PURE,                    "index along `axis` (0 .. size-1)") \
	X(size,    0, LEAF, KF_PURE,                    "size of `axis` as a scalar (n tokens, obs, group, head_dim)") \
	X(info,    0, LEAF, KF_PURE,                    "instance scalar named by `aux`: scale layer head nlayers nheads step") \
	X(rand,    1, TOK,  KF_PURE,                    "uniform [0,1) per token from (seed a, layer, head, pos); counter-based") \
	X(neg,     1, EW,   KF_PURE|KF_FOLD,            "-a") \
	X(exp,     1, EW,   KF_PURE|KF_FOLD,            "exp(a)") \
	X(log,     1, EW,   KF_PURE|KF_FOLD,            "log(a)") \
	X(sqrt,    1, EW,   KF_PURE|KF_FOLD,            "sqrt(a)") \
	X(abs,     1, EW,   KF_PURE|KF_FOLD,            "|a|") \
	X(add,     2, EW,   KF_PURE|KF_COMM|KF_FOLD,    "a + b") \
	X(sub,     2, EW,   KF_PURE|KF_FOLD,            "a - b") \
	X(mul,     2, EW,   KF_PURE|KF_COMM|KF_FOLD,    "a * b") \
	X(div,     2, EW,   KF_PURE|KF_FOLD,            "a / b") \
	X(pow,     2, EW,   KF_PURE|KF_FOLD,            "a ^ b") \
	X(max,     2, EW,   KF_PURE|KF_COMM|KF_FOLD,    "max(a, b)") \
	X(min,     2, EW,   KF_PURE|KF_COMM|KF_FOLD,    "min(a, b)") \
	X(lt,      2, EW,   KF_PURE|KF_FOLD,            "1 if a < b else 0") \
	X(le,      2, EW,   KF_PURE|KF_FOLD,            "1 if a <= b else 0") \
	X(eq,      2, EW,   KF_PURE|KF_COMM|KF_FOLD,    "1 if a == b else 0") \
	X(ne,      2, EW,   KF_PURE|KF_COMM|KF_FOLD,    "1 if a != b else 0") \
	X(where,   3, EW,   KF_PURE|KF_FOLD,            "b if a != 0 else c") \
	X(sum,     1, RED,  KF_PURE,                    "sum of a over `axis`") \
	X(mean,    1, RED,  KF_PURE,                    "mean of a over `axis`") \
	X(rmax,    1, RED,  KF_PURE,                    "maximum of a over `axis`") \
	X(rmin,    1, RED,  KF_PURE,                    "minimum of a over `axis`") \
	X(norm,    1, RED,  KF_PURE,                    "Euclidean norm of a over `axis`") \
	X(std,     1, RED,  KF_PURE,                    "population standard deviation of a over `axis`") \
	X(dot,     2, DOT,  KF_PURE|KF_COMM,            "sum over `axis` of a * b") \
	X(softmax, 1, KEEP, KF_PURE,                    "softmax of a over `axis`; over token with obs present it is causal (pos <= qpos)") \
	X(softmaxnc, 1, KEEP, KF_PURE,                  "softmax of a over `axis`, no causal mask") \
	X(avgpool, 2, KEEP, KF_PURE,                    "average pool of a along token, kernel b (runtime scalar), zero padding counted") \
	X(maxpool, 2, KEEP, KF_PURE,                    "max pool of a along token, kernel b (runtime scalar), -inf padding") \
	X(hmean,   1, SAME, KF_PURE,                    "mean of a over the KV heads of the layer (instance axis head)")

enum {
	KF_PURE = 1,
	KF_COMM = 2,
	KF_FOLD = 4,
};

enum { AR_LEAF, AR_EW, AR_RED, AR_DOT, AR_KEEP, AR_TOK, AR_SAME };

#define KI_ENUM(name, nargs, rule, flags, doc) KO_##name,
enum { KI_OPS(KI_ENUM) KO_NUM };
#undef KI_ENUM

#endif
