/*
** x86 code generation through the LLVM 19 C API (see x86.h): the target machine from the
** feature set the artifact records (runtime/cpu.h names, never the host's CPU name; +evex512 and
** -prefer-256-bit when 512-bit vectors are wanted), one module with every kernel (kern.c), the
** policy's expressions (tmap.c) and the descriptor (desc.c), a trimmed O2 pipeline with that target
** machine, an object file; then linking objects into policy.so with the system compiler.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <unistd.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <pthread.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include "codegen/x86/gen.h"
#include "compiler/interp.h"
#include "runtime/artifact.h"

extern char **environ;

static LLVMValueRef gstr(Gen *g, const char *s, const char *name)
{
	LLVMValueRef init = LLVMConstStringInContext(g->cx, s, (unsigned)strlen(s), 0);
	LLVMValueRef gv = LLVMAddGlobal(g->m, LLVMTypeOf(init), name);
	LLVMSetInitializer(gv, init);
	LLVMSetGlobalConstant(gv, 1);
	LLVMSetLinkage(gv, LLVMPrivateLinkage);
	return gv;
}

int kx_link(const char *const *objs, int nobj, const char *so, KiErr *e)
{
	const char *cc = getenv("KVCC_CC");
	if (!cc || !*cc)
		cc = "cc";
	char *argv[17] = { (char *)cc, "-shared", "-o", (char *)so };
	int na = 4;
	for (int i = 0; i < nobj && na < 14; i++)
		argv[na++] = (char *)objs[i];
	argv[na++] = "-lm";      /* a scalar exp / log the vectorizer left is a libm call: say so in NEEDED */
	argv[na++] = "-lgcc";
	argv[na] = NULL;
	/* the linker's messages go into the error (its last line), not onto our stderr */
	char logp[] = "/tmp/kvcc-ld-XXXXXX";
	int logfd = mkstemp(logp);
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	if (logfd >= 0) {
		unlink(logp);
		posix_spawn_file_actions_adddup2(&fa, logfd, 2);
	}
	pid_t pid;
	int rc = posix_spawnp(&pid, cc, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0) {
		if (logfd >= 0)
			close(logfd);
		ki_error(e, "kvcc", 0, 0, "cannot run %s: %s", cc, strerror(rc));
		return -1;
	}
	int st = 0;
	while (waitpid(pid, &st, 0) < 0)
		;
	char log[400] = "";
	if (logfd >= 0) {
		ssize_t k = pread(logfd, log, sizeof log - 1, 0);
		log[k > 0 ? k : 0] = 0;
		close(logfd);
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		char *c = log + strlen(log);
		while (c > log && (c[-1] == '\n' || c[-1] == ' '))
			*--c = 0;
		while (c > log && c[-1] != '\n')
			c--;
		for (char *q = c; *q; q++)
			*q = *q < ' ' ? ' ' : *q;
		ki_error(e, "kvcc", 0, 0, "%s -shared failed linking %s (status %d)%s%s", cc, so, st, *c ? ": " : "", c);
		return -1;
	}
	return 0;
}

int kx_checkspec(const KiFn *f, const kvcc_spec *spec, KiErr *e)
{
	if (spec->head_dim < 8 || spec->head_dim > 256 || spec->head_dim % 8) {
		ki_error(e, f->src, f->line, f->col, "x86 backend: head_dim %d not supported (multiples of 8 up to 256)",
		         spec->head_dim);
		return -1;
	}
	if (spec->group < 1 || spec->group > 8) {
		ki_error(e, f->src, f->line, f->col, "x86 backend: group %d not supported (1..8)", spec->group);
		return -1;
	}
	if (spec->dtype < KVCC_F32 || spec->dtype > KVCC_BF16) {
		ki_error(e, f->src, f->line, f->col, "x86 backend: unknown dtype %d", spec->dtype);
		return -1;
	}
	if (spec->target < KVCC_TARGET_NATIVE || spec->target > KVCC_TARGET_SCALAR) {
		ki_error(e, f->src, f->line, f->col, "x86 backend: unknown target %d", spec->target);
		return -1;
	}
	char *host = kx_hostfeatures();
	if (!host)
		return ki_error(e, f->src, 0, 0, "x86 backend: out of memory"), -1;
	int W = kx_vecwidth(spec, host);
	free(host);
	if (!W) {
		ki_error(e, f->src, 0, 0, "target %s needs CPU features this host lacks", kx_targetname(spec->target));
		return -1;
	}
	return 0;
}

/* The target machine: the artifact's feature set (never the host's CPU name). *cpu its CPU. */
static LLVMTargetMachineRef machine(const KiFn *f, const kvcc_spec *spec, const char *host, int W, const char **cpu,
                                    char *triple, KiErr *e)
{
	char feats[1200] = "";
	*cpu = "x86-64";
	switch (spec->target) {
	case KVCC_TARGET_V3: *cpu = "x86-64-v3"; break;
	case KVCC_TARGET_V4: *cpu = "x86-64-v4"; snprintf(feats, sizeof feats, "+evex512,-prefer-256-bit"); break;
	case KVCC_TARGET_SCALAR: break;
	default: snprintf(feats, sizeof feats, "%s%s", host, W == 16 ? ",-prefer-256-bit" : "");
	}
	if (W == 8 && kx_vecwidth(spec, host) == 16)    /* the config asks for 256-bit vectors */
		snprintf(feats + strlen(feats), sizeof feats - strlen(feats), "%s+prefer-256-bit", feats[0] ? "," : "");
	char *err = NULL;
	LLVMTargetRef tgt;
	if (LLVMGetTargetFromTriple(triple, &tgt, &err)) {
		ki_error(e, f->src, 0, 0, "LLVM: %s", err);
		LLVMDisposeMessage(err);
		return NULL;
	}
	return LLVMCreateTargetMachine(tgt, triple, *cpu, feats, LLVMCodeGenLevelAggressive, LLVMRelocPIC,
	                               LLVMCodeModelDefault);
}

/* g's module, types and shared intrinsics for spec on tm */
static void module(Gen *g, const KiFn *f, const kvcc_spec *spec, const KxConfig *c, const char *triple,
                   LLVMTargetDataRef td)
{
	int W = c->width;
	g->cx = LLVMContextCreate();
	g->m = LLVMModuleCreateWithNameInContext(f->name, g->cx);
	g->b = LLVMCreateBuilderInContext(g->cx);
	LLVMSetTarget(g->m, triple);
	LLVMSetModuleDataLayout(g->m, td);
	g->W = W, g->d = spec->head_dim, g->dtype = spec->dtype, g->G = spec->group;
	g->bf16dot = !c->nodot, g->c = *c;
	g->f32 = LLVMFloatTypeInContext(g->cx), g->half = LLVMHalfTypeInContext(g->cx);
	g->i16 = LLVMInt16TypeInContext(g->cx), g->i32 = LLVMInt32TypeInContext(g->cx), g->i64 = LLVMInt64TypeInContext(g->cx);
	g->ptr = LLVMPointerTypeInContext(g->cx, 0);
	g->vf = LLVMVectorType(g->f32, (unsigned)W);
	LLVMTypeRef ot = W == 1 ? g->f32 : g->vf;
	unsigned id = LLVMLookupIntrinsicID("llvm.fmuladd", 12);
	g->fma = LLVMGetIntrinsicDeclaration(g->m, id, &ot, 1);
	g->fma_ty = LLVMIntrinsicGetType(g->cx, id, &ot, 1);
	if (W > 1) {
		unsigned rid = LLVMLookupIntrinsicID("llvm.vector.reduce.fadd", 23);
		g->red = LLVMGetIntrinsicDeclaration(g->m, rid, &ot, 1);
		g->red_ty = LLVMIntrinsicGetType(g->cx, rid, &ot, 1);
	}
}

/* the artifact's entry points, in kvcc_artifact's order */
enum { E_qk, E_cvt, E_decode, E_probs, E_qkt, E_sstat, E_sacc, E_selkeys, E_topk, E_keepidx, E_compact, E_tmap,
       E_ckeys, E_kcount, E_ckeepidx, E_nkeep, E_ascale, E_hmean, E_observe, E_qround, E_mscal, E_mbest, E_mpair,
       E_mupd, E_tfilter, E_mtotal, E_ksum, E_kfloor, E_decodeb, E_sstate, E_sacce, E_mstore, E_mrow,
       E_keepn /* issue 13, KVCC_ABI 16 */, E_ctfilter /* issue 13, KVCC_ABI 16 */,
       E_schedcnt /* the schedules' counts, KVCC_ABI 17 */, E_cmass /* issue 13, KVCC_ABI 17 */,
       E_msplit, E_mtop2 /* issue 12: the f32 merge similarity on AMX, KVCC_ABI 18 */,
       E_kcut /* merge summary's cap, KVCC_ABI 18 */,
       E_msimx /* issue 12, KVCC_ABI 18 */, E_NUM };
_Static_assert(sizeof(kvcc_artifact) == 5 * 8 + E_NUM * 8, "kvcc_artifact: 5 header fields, then the entry points");

/* an entry point the runtime never calls for this policy (no such step in its plan): returns at once
** (ret NULL: void; else 0 of that type) */
static LLVMValueRef stub(Gen *g, const char *name, LLVMTypeRef ret, LLVMTypeRef *ps, int np)
{
	newfn(g, name, ret ? ret : LLVMVoidTypeInContext(g->cx), ps, np);
	if (ret)
		LLVMBuildRet(g->b, LLVMConstNull(ret));
	else
		LLVMBuildRetVoid(g->b);
	return g->fn;
}

/* g->fn, just generated, becomes a stub of its type when `used` is 0 (the generated body deleted
** before any pass or codegen sees it); returns g->fn */
static LLVMValueRef usedor(Gen *g, int used)
{
	if (used)
		return g->fn;
	LLVMValueRef old = g->fn;
	LLVMTypeRef ft = LLVMGlobalGetValueType(old), ret = LLVMGetReturnType(ft), ps[16];
	unsigned np = LLVMCountParamTypes(ft);
	if (np > 16)            /* no fixed kernel has that many: keep the body */
		return old;
	LLVMGetParamTypes(ft, ps);
	size_t len = 0;
	char name[64];
	snprintf(name, sizeof name, "%s", LLVMGetValueName2(old, &len));
	LLVMDeleteFunction(old);
	return stub(g, name, LLVMGetTypeKind(ret) == LLVMVoidTypeKind ? NULL : ret, ps, (int)np);
}

/* every kernel of the artifact: the fixed ones (kern.c) and the policy's (tmap.c); a stub (qk, retired)
** for each one the descriptor's record of the run's kernels (u, runtime/artifact.h ka_kernels)
** does not list; 0, or -1: out of memory */
static int kernels(Gen *g, const KiFn *f, const KiPlan *kp, unsigned u, LLVMValueRef *fn)
{
	LLVMTypeRef hm[4] = { g->ptr, g->i64, g->i64, g->ptr }, ob[1] = { g->ptr };
	LLVMTypeRef qk[6] = { g->ptr, g->i64, g->i64, g->ptr, g->i64, g->ptr };
	int rc = 0;
	fn[E_qk] = stub(g, "kvcc_qk", NULL, qk, 6);   /* retired (artifact.h): nothing calls it */
	kx_gen_cvt(g), fn[E_cvt] = g->fn;
	kx_gen_decode(g, g->G, 0), fn[E_decode] = g->fn;
	kx_gen_probs(g), fn[E_probs] = usedor(g, u & KA_KOBSERVE);   /* decode.c: only before the observe hook */
	kx_gen_qkt(g), fn[E_qkt] = usedor(g, u & KA_KQKT);   /* attention scores, merge nearest */
	kx_gen_sstat(g), fn[E_sstat] = usedor(g, u & KA_KATTN);
	kx_gen_sacc(g), fn[E_sacc] = usedor(g, u & KA_KATTN);
	kx_gen_selkeys(g), fn[E_selkeys] = g->fn;
	kx_gen_topk(g), fn[E_topk] = g->fn;
	kx_gen_keepidx(g), fn[E_keepidx] = g->fn;
	kx_gen_ckeys(g), fn[E_ckeys] = usedor(g, u & KA_KCHUNK);
	kx_gen_kcount(g), fn[E_kcount] = usedor(g, u & KA_KCOUNT);
	kx_gen_ckeepidx(g), fn[E_ckeepidx] = usedor(g, u & KA_KCHUNK);
	kx_gen_compact(g), fn[E_compact] = g->fn;
	kx_gen_nkeep(g, f), fn[E_nkeep] = g->fn;   /* before tmap, which calls it (x.nkeep) */
	rc |= kx_gen_tmap(g, f, kp), fn[E_tmap] = g->fn;
	if (u & KA_KOBSERVE)
		rc |= kx_gen_observe(g, f, kp), fn[E_observe] = g->fn;
	else
		fn[E_observe] = stub(g, "kvcc_observe", g->i64, ob, 1);
	kx_gen_ascale(g, f, kp), fn[E_ascale] = usedor(g, u & KA_KATTN);
	if (u & KA_KHMEAN)
		kx_gen_hmean(g), fn[E_hmean] = g->fn;
	else
		fn[E_hmean] = stub(g, "kvcc_hmean", NULL, hm, 4);
	kx_gen_qround(g), fn[E_qround] = g->fn;
	rc |= kx_gen_merge(g, f, fn + E_mscal);
	kx_gen_tfilter(g), fn[E_tfilter] = usedor(g, u & KA_KTFILTER);
	kx_gen_mtotal(g), fn[E_mtotal] = usedor(g, u & KA_KMASS);
	kx_gen_ksum(g), fn[E_ksum] = usedor(g, u & KA_KMASS);
	kx_gen_kfloor(g), fn[E_kfloor] = usedor(g, u & KA_KFLOOR);
	if (u & KA_KDECODEB)      /* decode with the merge count bias (issue 12) */
		kx_gen_decode(g, g->G, 1), fn[E_decodeb] = g->fn;
	else {
		LLVMTypeRef db[9] = { g->ptr, g->ptr, g->i64, g->i64, g->ptr, g->ptr, g->i64, g->ptr, g->ptr };
		fn[E_decodeb] = stub(g, "kvcc_decodeb", NULL, db, 9);
	}
	kx_gen_sstate(g), fn[E_sstate] = usedor(g, u & KA_KATTN);   /* issue 15: the score phase's one exp per logit */
	kx_gen_sacce(g), fn[E_sacce] = usedor(g, u & KA_KATTN);
	kx_gen_mstore(g), fn[E_mstore] = usedor(g, u & KA_KSUMMARY);     /* merge summary's rows (issue 12) */
	rc |= kx_gen_mrow(g, f, &fn[E_mrow]);    /* merge runs' pair evaluator (mpos.c) */
	rc |= kx_gen_keepn(g, f, NULL), fn[E_keepn] = g->fn;   /* the select keep count (keep.c) */
	if (u & KA_KCTFILTER)                    /* threshold over chunks (issue 13) */
		kx_gen_ctfilter(g), fn[E_ctfilter] = g->fn;
	else {
		LLVMTypeRef ct[7] = { g->ptr, g->i64, g->i64, g->i64, g->i64, LLVMDoubleTypeInContext(g->cx), g->ptr };
		fn[E_ctfilter] = stub(g, "kvcc_ctfilter", g->i64, ct, 7);
	}
	LLVMValueRef sel[5] = { fn[E_selkeys], fn[E_topk], fn[E_kcount], fn[E_mtotal], fn[E_ksum] };
	kx_gen_schedcnt(g, f, sel), fn[E_schedcnt] = g->fn;     /* prefix / dynamic schedules (sched.c) */
	if (u & KA_KCMASS)                       /* mass over chunks (issue 13) */
		kx_gen_cmass(g), fn[E_cmass] = g->fn;
	else {
		LLVMTypeRef cm[6] = { g->ptr, g->ptr, g->i64, g->i64, g->i64, g->ptr };
		fn[E_cmass] = stub(g, "kvcc_cmass", LLVMDoubleTypeInContext(g->cx), cm, 6);
	}
	kx_gen_mamx3(g, f, g->amx3, fn + E_msplit);   /* issue 12: f32 merge similarity on AMX (mamx3.c) */
	kx_gen_kcut(g), fn[E_kcut] = usedor(g, u & KA_KSUMCAP);   /* merge summary's cap (compress.c sumgroup) */
	kx_gen_msimx(g, f), fn[E_msimx] = g->fn;   /* merge nearest's AMX similarity (msimx.c) */
	return rc;
}

/* the exported kvcc_artifact: magic, ABI, size, the descriptor blob (kx_desccfg's, made first:
** its record of the run's kernels decides the stubs) and its hash, the KIR text (for dump), the
** entry points; vt: a per-bucket variant's own symbol, or the main artifact's bucket table */
static void descriptor(Gen *g, const char *kir, void *blob, size_t nblob, LLVMValueRef *fn, const KxVarTab *vt)
{
	char sym[40] = KVCC_DESC_SYMBOL;
	if (vt && vt->self > 0)        /* a per-bucket variant (issue 15): its own symbol, no table */
		snprintf(sym, sizeof sym, KVCC_VAR_SYMBOL, vt->self);
	else if (vt) {                 /* the main artifact: the bucket -> variant table */
		KaHdr *hb = blob;
		hb->nvar = vt->nvar;
		for (int k = 0; k < KA_NBUCKET; k++)
			hb->cvar[k] = vt->cvar[k];
	}
	LLVMValueRef binit = LLVMConstStringInContext(g->cx, blob, (unsigned)nblob, 1);
	LLVMValueRef bgv = LLVMAddGlobal(g->m, LLVMTypeOf(binit), "kv.desc");
	LLVMSetInitializer(bgv, binit);
	LLVMSetGlobalConstant(bgv, 1);
	LLVMSetLinkage(bgv, LLVMPrivateLinkage);
	LLVMSetAlignment(bgv, 16);
	LLVMTypeRef fields[6 + E_NUM] = { g->i64, g->i32, g->i32, g->ptr, g->i64 };
	LLVMValueRef vals[6 + E_NUM] = {
		LLVMConstInt(g->i64, KVCC_MAGIC, 0), LLVMConstInt(g->i32, KVCC_ABI, 0),
		LLVMConstInt(g->i32, sizeof(kvcc_artifact), 0), bgv, LLVMConstInt(g->i64, ka_fnv(blob, nblob, 0), 0),
	};
	fields[5] = g->ptr, vals[5] = gstr(g, kir, "kv.kir");
	for (int k = 0; k < E_NUM; k++)
		fields[6 + k] = g->ptr, vals[6 + k] = fn[k];
	LLVMTypeRef dt = LLVMStructTypeInContext(g->cx, fields, 6 + E_NUM, 0);
	LLVMValueRef desc = LLVMAddGlobal(g->m, dt, sym);
	LLVMSetInitializer(desc, LLVMConstNamedStruct(dt, vals, 6 + E_NUM));
	LLVMSetGlobalConstant(desc, 1);
	LLVMSetVisibility(desc, LLVMDefaultVisibility);
}

/*
** The pass pipeline: the part of LLVM's O2 function pipeline the generated kernels need, not
** all of it (issue 15: cold compile <= 300 ms CPU; O2 spent ~45 % of it here). The kernels
** arrive vectorized and register-blocked (kern.c, tmap.c), call nothing and are called only
** through the descriptor, so the inliner and the interprocedural passes have nothing to do;
** what remains is cleanup (sroa, early-cse, instcombine, simplifycfg, gvn), loop canonical form
** (licm, loop-rotate, indvars) for the loop vectorizer and SLP (probs, cvt, qround, hmean and
** the scalar loops of tmap.c), and full unrolling of constant-trip loops. Runtime and partial
** unrolling are off: on the kernels that matter they only copied cold loops (edge tiles,
** topk, compact); the decode V loop asks for its unroll count itself (kern.c). Instcombine
** runs 5 times instead of O2's 8. On the hot kernels (qk, qkt, probs, sstat, sacc, cvt, qround,
** observe) the machine code equals O2's instruction for instruction count.
** Tried in session 8 and not used (runtime/STATUS.md, wt-ctime8 round 2): LLVMCodeGenLevelDefault
** for the machine code (the same instructions, no measurable CPU saved); -disable-lsr (about 23 %
** of the compile CPU, but qkt's dot0 inner loop then spills 40 zmm to the stack and the f32-FMA
** score phase is 1.3-1.45x slower); dropping any one of the instcombine / sroa / licm / simplifycfg
** steps below (each within the compile time's noise, and most change a kernel's code).
*/
#define SCFG "simplifycfg<bonus-inst-threshold=1;switch-range-to-icmp;keep-loops;speculate-blocks;simplify-cond-branch>"
#define ICOMB "instcombine<max-iterations=1;no-verify-fixpoint>"
#define ROT "loop-rotate<header-duplication;no-prepare-for-lto>"
static const char kx_pipeline[] =
	"function("
	"sroa<modify-cfg>,early-cse<memssa>," SCFG "," ICOMB ","
	"loop-mssa(licm<no-allowspeculation>," ROT ",licm<allowspeculation>)," SCFG "," ICOMB ","
	"loop(loop-idiom,indvars,loop-deletion),gvn<>," ICOMB ",adce,dse,loop-mssa(licm<allowspeculation>)," SCFG ","
	ROT ",loop-vectorize<no-interleave-forced-only;no-vectorize-forced-only;>," ICOMB ","
	"simplifycfg<bonus-inst-threshold=1;forward-switch-cond;switch-range-to-icmp;switch-to-lookup;no-keep-loops;"
	"hoist-common-insts;sink-common-insts;speculate-blocks;simplify-cond-branch>,"
	"slp-vectorizer,vector-combine," ICOMB ",loop-unroll<O2;no-partial;no-runtime>,sroa<preserve-cfg>," ICOMB ","
	"loop-mssa(licm<allowspeculation>),instsimplify," SCFG ")";

/* verify, the pass pipeline (kx_pipeline) with tm, the object file; phase times into t[0..1] */
static int object(Gen *g, const KiFn *f, LLVMTargetMachineRef tm, const char *objpath, int verbose, double t[2],
                  KiErr *e)
{
	char *err = NULL;
	int rc = -1;
	LLVMMemoryBufferRef buf = NULL;
	if (LLVMVerifyModule(g->m, LLVMReturnStatusAction, &err)) {
		ki_error(e, f->src, 0, 0, "internal: generated LLVM IR does not verify: %.300s", err);
		goto out;
	}
	LLVMDisposeMessage(err), err = NULL;
	t[0] = ki_now_ms();
	LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
	LLVMErrorRef perr = LLVMRunPasses(g->m, kx_pipeline, tm, po);
	LLVMDisposePassBuilderOptions(po);
	if (perr) {
		char *m = LLVMGetErrorMessage(perr);
		ki_error(e, f->src, 0, 0, "LLVM passes: %s", m);
		LLVMDisposeErrorMessage(m);
		goto out;
	}
	if (verbose > 1) {
		char *ir = LLVMPrintModuleToString(g->m);
		fputs(ir, stderr);
		LLVMDisposeMessage(ir);
	}
	t[1] = ki_now_ms();
	if (LLVMTargetMachineEmitToMemoryBuffer(tm, g->m, LLVMObjectFile, &err, &buf)) {
		ki_error(e, f->src, 0, 0, "LLVM codegen: %s", err);
		goto out;
	}
	size_t sz = LLVMGetBufferSize(buf);
	FILE *fo = fopen(objpath, "wb");
	int ok = fo && fwrite(LLVMGetBufferStart(buf), 1, sz, fo) == sz;
	if (fo && fclose(fo) != 0)
		ok = 0;
	if (!ok) {
		ki_error(e, f->src, 0, 0, "cannot write %s", objpath);
		unlink(objpath);
		goto out;
	}
	rc = 0;
out:
	if (err)
		LLVMDisposeMessage(err);
	if (buf)
		LLVMDisposeMemoryBuffer(buf);
	return rc;
}

/*
** Issue 13 (session 11): the module's passes and machine code on two threads. The kernels are
** independent functions (the passes are function passes; a kernel calls another at most
** directly), so a second thread generates the same module again in its own LLVM context (IR
** generation is ~1 % of the compile: cheaper than copying the module as bitcode), each copy keeps
** the bodies of about half the kernels by instruction count (the other half become declarations;
** the descriptor stays in the first), and both go through object() at once, each with its own
** target machine, into two object files that kx_link puts into one policy.so. Every kernel is
** the same machine code as in one module (external hidden instead of internal linkage: hidden, so
** policy.so exports the descriptor alone as before).
*/
#define KX_MAXFN 128

typedef struct Split {
	int nf;
	char name[KX_MAXFN][64];
	char part[KX_MAXFN];       /* the part that keeps the body of kernel k (0: the descriptor's) */
	long nfn[2], weight[2];    /* per part: its kernels and their instructions before the passes */
	double cpu[2];             /* per part: the thread's CPU ms (IR of the second part included) */
} Split;

/* the second part's thread: its own target machine, module and kernels */
typedef struct Part2 {
	const KiFn *f;
	const KiPlan *kp;
	const kvcc_spec *spec;
	const KxConfig *c;
	const char *host, *triple, *obj;
	int W, amx3, verbose, rc;
	unsigned kern;               /* ka_kernels of the descriptor */
	Split *sp;
	KiErr e;
} Part2;

static long fnweight(LLVMValueRef fn)
{
	long n = 0;
	for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fn); bb; bb = LLVMGetNextBasicBlock(bb))
		for (LLVMValueRef in = LLVMGetFirstInstruction(bb); in; in = LLVMGetNextInstruction(in))
			n++;
	return n;
}

/* fn's definition in m replaced by a declaration of the same name and type */
static void declonly(LLVMModuleRef m, LLVMValueRef fn)
{
	size_t len = 0;
	char name[64];
	snprintf(name, sizeof name, "%s", LLVMGetValueName2(fn, &len));
	LLVMSetValueName2(fn, "", 0);
	LLVMValueRef d = LLVMAddFunction(m, name, LLVMGlobalGetValueType(fn));
	LLVMSetVisibility(d, LLVMHiddenVisibility);
	LLVMReplaceAllUsesWith(fn, d);
	LLVMDeleteFunction(fn);
}

/* the kernels of g's module into two parts by instruction count (largest first to the lighter
** part, deterministic): 0, or -1 (too many / too few: compile one module) */
static int partition(Gen *g, Split *sp)
{
	long w[KX_MAXFN];
	int nf = 0;
	for (LLVMValueRef fn = LLVMGetFirstFunction(g->m); fn; fn = LLVMGetNextFunction(fn))
		if (LLVMCountBasicBlocks(fn)) {
			if (nf == KX_MAXFN)
				return -1;
			size_t len = 0;
			snprintf(sp->name[nf], sizeof sp->name[nf], "%s", LLVMGetValueName2(fn, &len));
			w[nf++] = fnweight(fn);
		}
	if (nf < 2)
		return -1;
	char done[KX_MAXFN] = { 0 };
	for (int k = 0; k < nf; k++) {
		int best = -1;
		for (int i = 0; i < nf; i++)
			if (!done[i] && (best < 0 || w[i] > w[best]))
				best = i;
		done[best] = 1;
		int p = sp->weight[1] < sp->weight[0];
		sp->part[best] = (char)p;
		sp->nfn[p]++, sp->weight[p] += w[best];
	}
	sp->nf = nf;
	return 0;
}

/* m keeps the bodies of part `which` (external hidden), declarations of the others; the private
** globals nothing uses any more removed */
static void keeppart(LLVMModuleRef m, const Split *sp, int which)
{
	for (LLVMValueRef fn = LLVMGetFirstFunction(m), nx; fn; fn = nx) {
		nx = LLVMGetNextFunction(fn);
		if (!LLVMCountBasicBlocks(fn))
			continue;
		size_t len = 0;
		const char *nm = LLVMGetValueName2(fn, &len);
		int p = 0;
		for (int i = 0; i < sp->nf; i++)
			if (!strcmp(sp->name[i], nm))
				p = sp->part[i];
		if (p != which)
			declonly(m, fn);
		else {
			LLVMSetLinkage(fn, LLVMExternalLinkage);
			LLVMSetVisibility(fn, LLVMHiddenVisibility);
		}
	}
	for (int again = 1; again;) {
		again = 0;
		for (LLVMValueRef gv = LLVMGetFirstGlobal(m), nx; gv; gv = nx) {
			nx = LLVMGetNextGlobal(gv);
			LLVMLinkage l = LLVMGetLinkage(gv);
			if ((l == LLVMPrivateLinkage || l == LLVMInternalLinkage) && !LLVMGetFirstUse(gv)) {
				LLVMDeleteGlobal(gv);
				again = 1;
			}
		}
	}
}

static void *part2run(void *arg)
{
	Part2 *p = arg;
	double c0 = ki_thread_cpu_ms(), t[2];
	const char *cpu;
	p->rc = -1;
	LLVMTargetMachineRef tm = machine(p->f, p->spec, p->host, p->W, &cpu, (char *)p->triple, &p->e);
	if (!tm)
		return NULL;
	LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
	Gen g = { 0 };
	LLVMValueRef fn[E_NUM];
	module(&g, p->f, p->spec, p->c, p->triple, td);
	g.amx3 = p->amx3;
	if (kernels(&g, p->f, p->kp, p->kern, fn) != 0)     /* no descriptor: the first part has it */
		ki_error(&p->e, p->f->src, 0, 0, "out of memory (kernels)");
	else {
		keeppart(g.m, p->sp, 1);
		p->rc = object(&g, p->f, tm, p->obj, p->verbose, t, &p->e);
	}
	LLVMDisposeBuilder(g.b);
	LLVMDisposeModule(g.m);
	LLVMDisposeTargetData(td);
	LLVMContextDispose(g.cx);
	LLVMDisposeTargetMachine(tm);
	p->sp->cpu[1] = ki_thread_cpu_ms() - c0;
	return NULL;
}

/* the x86 threads (KVCC_X86_THREADS: 1 one module, 2 two parts; default 2 when the host has 2
** online CPUs, 3 with GPU targets, whose NVRTC threads run at the same time) */
int kx_threads(int gpu)
{
	const char *s = getenv("KVCC_X86_THREADS");
	if (s && *s)
		return atoi(s) >= 2 ? 2 : 1;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n >= (gpu ? 3 : 2) ? 2 : 1;
}

int kx_emit(const KiFn *f, const KiPlan *kp, const kvcc_spec *spec, const char *objpath, int verbose, double *ms,
            KiErr *e)
{
	return kx_emitcfg(f, kp, spec, NULL, objpath, verbose, ms, e);
}

int kx_emitcfg(const KiFn *f, const KiPlan *kp, const kvcc_spec *spec, const KxConfig *cfg, const char *objpath,
               int verbose, double *ms, KiErr *e)
{
	return kx_emitvar(f, kp, spec, cfg, NULL, objpath, verbose, ms, e);
}

int kx_emitvar(const KiFn *f, const KiPlan *kp, const kvcc_spec *spec, const KxConfig *cfg, const KxVarTab *vt,
               const char *objpath, int verbose, double *ms, KiErr *e)
{
	return kx_emitsplit(f, kp, spec, cfg, vt, objpath, NULL, verbose, ms, e) < 0 ? -1 : 0;
}

int kx_emitsplit(const KiFn *f, const KiPlan *kp, const kvcc_spec *spec, const KxConfig *cfg, const KxVarTab *vt,
                 const char *objpath, const char *obj2, int verbose, double *ms, KiErr *e)
{
	int nobj = 1;
	double t0 = ki_now_ms(), t[2] = { t0, t0 };
	if (kx_checkspec(f, spec, e) != 0)
		return -1;
	LLVMInitializeX86TargetInfo();
	LLVMInitializeX86Target();
	LLVMInitializeX86TargetMC();
	LLVMInitializeX86AsmPrinter();
	char *host = kx_hostfeatures();
	KxConfig c;
	char why[200];
	if (!host || kx_cfgresolve(cfg, spec, host, &c, why, sizeof why) != 0) {
		free(host);
		ki_error(e, f->src, 0, 0, "%s", host ? why : "out of memory");
		return -1;
	}
	int W = c.width;
	const char *cpu;
	char *triple = LLVMGetDefaultTargetTriple();
	LLVMTargetMachineRef tm = machine(f, spec, host, W, &cpu, triple, e);
	int rc = -1;
	if (tm) {
		LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
		Gen g = { 0 };
		LLVMValueRef fn[E_NUM];
		module(&g, f, spec, &c, triple, td);
		g.amx3 = kx_mamx3(f, spec, host, W, NULL);
		char *kir = ki_print(f);
		size_t nblob = 0;
		void *blob = kir ? kx_desccfg(f, kp, spec, &g.c, W, kx_cpumask(spec, host), ki_fnv(kir, strlen(kir), 0),
		                              &nblob) : NULL;
		if (blob && g.amx3)      /* issue 12: msplit / mtop2 are real (codegen/x86/mamx3.c) */
			((KaHdr *)blob)->flags |= KA_FAMX3;
		if (!blob)
			ki_error(e, f->src, 0, 0, "out of memory (descriptor)");
		else if (kernels(&g, f, kp, ka_kernels(blob), fn) != 0)
			ki_error(e, f->src, 0, 0, "out of memory (kernels)");
		else {
			descriptor(&g, kir, blob, nblob, fn, vt);
			Split sp = { 0 };
			/* two parts on two threads (above); the IR dump (-v -v) from one module */
			if (obj2 && verbose < 2 && partition(&g, &sp) == 0) {
				Part2 p2 = { .f = f, .kp = kp, .spec = spec, .c = &c, .host = host, .triple = triple, .obj = obj2,
				             .W = W, .amx3 = g.amx3, .verbose = verbose, .kern = ka_kernels(blob), .sp = &sp };
				pthread_t th;
				pthread_attr_t at;      /* LLVM's recursion (SCEV, ISel) wants the main thread's 8 MiB, not
				                        ** glibc's 2 MiB default under an unlimited stack rlimit */
				int started = pthread_attr_init(&at) == 0;
				if (started) {
					pthread_attr_setstacksize(&at, 16u << 20);
					started = pthread_create(&th, &at, part2run, &p2) == 0;
					pthread_attr_destroy(&at);
				}
				double c0 = ki_thread_cpu_ms();
				keeppart(g.m, &sp, 0);
				rc = object(&g, f, tm, objpath, verbose, t, e);
				sp.cpu[0] = ki_thread_cpu_ms() - c0;
				if (started)
					pthread_join(th, NULL);
				else
					part2run(&p2);
				if (rc == 0 && p2.rc != 0)
					*e = p2.e, rc = -1;
				if (rc == 0)
					nobj = 2;
				else
					unlink(obj2);
				if (rc == 0 && verbose)
					fprintf(stderr, "kvcc: x86: two threads: %ld kernels (%ld instructions) in %.1f ms CPU, "
					        "%ld (%ld) in %.1f ms CPU\n", sp.nfn[0], sp.weight[0], sp.cpu[0], sp.nfn[1],
					        sp.weight[1], sp.cpu[1]);
			} else
				rc = object(&g, f, tm, objpath, verbose, t, e);
		}
		free(kir), free(blob);
		LLVMDisposeBuilder(g.b);
		LLVMDisposeModule(g.m);
		LLVMDisposeTargetData(td);
		LLVMContextDispose(g.cx);
		LLVMDisposeTargetMachine(tm);
	}
	if (rc == 0 && verbose) {
		fprintf(stderr, "kvcc: times: IR %.1f ms, passes %.1f ms, codegen %.1f ms\n", t[0] - t0, t[1] - t[0],
		        ki_now_ms() - t[1]);
		fprintf(stderr, "kvcc: x86: %s, cpu %s, %d-lane f32 vectors, dtype %s, head_dim %d, group %d\n",
		        kx_targetname(spec->target), cpu, W, ki_dtypename(spec->dtype), spec->head_dim, spec->group);
		char cs[160];
		kx_cfgstr(&c, cs, sizeof cs);
		fprintf(stderr, "kvcc: x86 config: %s\n", cs);
	}
	LLVMDisposeMessage(triple);
	free(host);
	if (ms)
		*ms = ki_now_ms() - t0;
	return rc ? -1 : nobj;
}
