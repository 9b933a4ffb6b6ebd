/*
** x86 code generation through the LLVM 19 C API (see x86.h): the target machine from the
** feature set the artifact records (runtime/cpu.h names, never the host's CPU name; +evex512 and
** -prefer-256-bit when 512-bit vectors are wanted), one module with every kernel (kern.c), the
** policy's expressions (tmap.c) and the descriptor (desc.c), the O2 pipeline with that target
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

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int kx_link(const char *const *objs, int nobj, const char *so, KcErr *e)
{
	const char *cc = getenv("KVCC_CC");
	if (!cc || !*cc)
		cc = "cc";
	char *argv[16] = { (char *)cc, "-shared", "-o", (char *)so };
	int na = 4;
	for (int i = 0; i < nobj && na < 14; i++)
		argv[na++] = (char *)objs[i];
	argv[na++] = "-lgcc";
	argv[na] = NULL;
	pid_t pid;
	int rc = posix_spawnp(&pid, cc, NULL, NULL, argv, environ);
	if (rc != 0) {
		kc_error(e, "kvcc", 0, 0, "cannot run %s: %s", cc, strerror(rc));
		return -1;
	}
	int st = 0;
	while (waitpid(pid, &st, 0) < 0)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		kc_error(e, "kvcc", 0, 0, "%s -shared failed linking %s (status %d)", cc, so, st);
		return -1;
	}
	return 0;
}

int kx_checkspec(const KiFn *f, const kvcc_spec *spec, KcErr *e)
{
	if (spec->head_dim < 8 || spec->head_dim > 256 || spec->head_dim % 8) {
		kc_error(e, f->src, f->line, f->col, "x86 backend: head_dim %d not supported (multiples of 8 up to 256)",
		         spec->head_dim);
		return -1;
	}
	if (spec->group < 1 || spec->group > 8) {
		kc_error(e, f->src, f->line, f->col, "x86 backend: group %d not supported (1..8)", spec->group);
		return -1;
	}
	if (spec->dtype < KVCC_F32 || spec->dtype > KVCC_BF16) {
		kc_error(e, f->src, f->line, f->col, "x86 backend: unknown dtype %d", spec->dtype);
		return -1;
	}
	if (spec->target < KVCC_TARGET_NATIVE || spec->target > KVCC_TARGET_SCALAR) {
		kc_error(e, f->src, f->line, f->col, "x86 backend: unknown target %d", spec->target);
		return -1;
	}
	char *host = kx_hostfeatures();
	int W = host ? kx_vecwidth(spec, host) : 0;
	free(host);
	if (!W) {
		kc_error(e, f->src, 0, 0, "target %s needs CPU features this host lacks", kx_targetname(spec->target));
		return -1;
	}
	return 0;
}

int kx_emit(const KiFn *f, const KpPlan *kp, const kvcc_spec *spec, const char *objpath, int verbose, double *ms,
            KcErr *e)
{
	double t0 = now_ms();
	if (kx_checkspec(f, spec, e) != 0)
		return -1;
	LLVMInitializeX86TargetInfo();
	LLVMInitializeX86Target();
	LLVMInitializeX86TargetMC();
	LLVMInitializeX86AsmPrinter();
	char *host = kx_hostfeatures();
	if (!host) {
		kc_error(e, f->src, 0, 0, "out of memory");
		return -1;
	}
	int W = kx_vecwidth(spec, host);
	if (!W) {
		kc_error(e, f->src, 0, 0, "target %s needs CPU features this host lacks", kx_targetname(spec->target));
		free(host);
		return -1;
	}
	const char *cpu = "x86-64";
	char *feats = NULL;
	switch (spec->target) {
	case KVCC_TARGET_V3: cpu = "x86-64-v3"; feats = strdup(""); break;
	case KVCC_TARGET_V4: cpu = "x86-64-v4"; feats = strdup("+evex512,-prefer-256-bit"); break;
	case KVCC_TARGET_SCALAR: cpu = "x86-64"; feats = strdup(""); break;
	default:
		feats = malloc(strlen(host) + 32);
		if (feats)
			sprintf(feats, "%s%s", host, W == 16 ? ",-prefer-256-bit" : "");
	}
	/* the features recorded in the artifact (and its key) */
	const char *recfeat = spec->target == KVCC_TARGET_NATIVE ? host : kx_targetname(spec->target);
	char *triple = LLVMGetDefaultTargetTriple();
	char *err = NULL;
	LLVMTargetRef tgt;
	if (LLVMGetTargetFromTriple(triple, &tgt, &err)) {
		kc_error(e, f->src, 0, 0, "LLVM: %s", err);
		LLVMDisposeMessage(err), LLVMDisposeMessage(triple), free(host), free(feats);
		return -1;
	}
	LLVMTargetMachineRef tm = LLVMCreateTargetMachine(tgt, triple, cpu, feats ? feats : "", LLVMCodeGenLevelAggressive,
	                                                  LLVMRelocPIC, LLVMCodeModelDefault);
	Gen g = { 0 };
	g.cx = LLVMContextCreate();
	g.m = LLVMModuleCreateWithNameInContext(f->name, g.cx);
	g.b = LLVMCreateBuilderInContext(g.cx);
	LLVMSetTarget(g.m, triple);
	LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
	LLVMSetModuleDataLayout(g.m, td);
	g.W = W, g.d = spec->head_dim, g.dtype = spec->dtype, g.G = spec->group;
	g.bf16dot = kx_bf16dot(spec, host, W);
	g.f32 = LLVMFloatTypeInContext(g.cx), g.half = LLVMHalfTypeInContext(g.cx);
	g.i16 = LLVMInt16TypeInContext(g.cx), g.i32 = LLVMInt32TypeInContext(g.cx), g.i64 = LLVMInt64TypeInContext(g.cx);
	g.ptr = LLVMPointerTypeInContext(g.cx, 0);
	g.vf = LLVMVectorType(g.f32, (unsigned)W);
	LLVMTypeRef ot = W == 1 ? g.f32 : g.vf;
	unsigned id = LLVMLookupIntrinsicID("llvm.fmuladd", 12);
	g.fma = LLVMGetIntrinsicDeclaration(g.m, id, &ot, 1);
	g.fma_ty = LLVMIntrinsicGetType(g.cx, id, &ot, 1);
	if (W > 1) {
		unsigned rid = LLVMLookupIntrinsicID("llvm.vector.reduce.fadd", 23);
		g.red = LLVMGetIntrinsicDeclaration(g.m, rid, &ot, 1);
		g.red_ty = LLVMIntrinsicGetType(g.cx, rid, &ot, 1);
	}
	kx_gen_qk(&g);
	LLVMValueRef qk = g.fn;
	kx_gen_cvt(&g);
	LLVMValueRef cvt = g.fn;
	kx_gen_decode(&g, spec->group);
	LLVMValueRef dec = g.fn;
	kx_gen_probs(&g);
	LLVMValueRef probs = g.fn;
	kx_gen_qkt(&g);
	LLVMValueRef qkt = g.fn;
	kx_gen_sstat(&g, 0);
	LLVMValueRef sstat = g.fn;
	kx_gen_sacc(&g, 0);
	LLVMValueRef sacc = g.fn;
	kx_gen_sstat(&g, 1);
	LLVMValueRef sstatm = g.fn;
	kx_gen_sacc(&g, 1);
	LLVMValueRef saccm = g.fn;
	kx_gen_selkeys(&g);
	LLVMValueRef selkeys = g.fn;
	kx_gen_topk(&g);
	LLVMValueRef topk = g.fn;
	kx_gen_keepidx(&g);
	LLVMValueRef keepidx = g.fn;
	kx_gen_ckeys(&g);
	LLVMValueRef ckeys = g.fn;
	kx_gen_kcount(&g);
	LLVMValueRef kcount = g.fn;
	kx_gen_ckeepidx(&g);
	LLVMValueRef ckeepidx = g.fn;
	kx_gen_compact(&g);
	LLVMValueRef compact = g.fn;
	kx_gen_tmap(&g, f, kp);
	LLVMValueRef tmap = g.fn;
	kx_gen_observe(&g, f, kp);
	LLVMValueRef observe = g.fn;
	kx_gen_ascale(&g, f, kp);
	LLVMValueRef ascale = g.fn;
	kx_gen_nkeep(&g, f);
	LLVMValueRef nkeep = g.fn;
	kx_gen_hmean(&g);
	LLVMValueRef hmean = g.fn;

	kx_gen_qround(&g);
	LLVMValueRef qround = g.fn;

	/* the descriptor: entry points, the blob (codegen/x86/desc.c), the KIR text for dump */
	char *kir = ki_print(f);
	uint64_t key = kir ? kx_key(kir, KVCC_VERSION, recfeat, spec->dtype, spec->head_dim, spec->group, spec->target, W) : 0;
	size_t nblob = 0;
	void *blob = kir ? kx_desc(f, kp, spec, W, kx_cpumask(spec, host), ki_fnv(kir, strlen(kir), 0), &nblob) : NULL;
	if (!blob) {
		free(kir);
		kc_error(e, f->src, 0, 0, "out of memory (descriptor)");
		LLVMDisposeBuilder(g.b), LLVMDisposeModule(g.m), LLVMContextDispose(g.cx);
		LLVMDisposeTargetData(td), LLVMDisposeTargetMachine(tm);
		LLVMDisposeMessage(triple), free(host), free(feats);
		return -1;
	}
	LLVMValueRef binit = LLVMConstStringInContext(g.cx, blob, (unsigned)nblob, 1);
	LLVMValueRef bgv = LLVMAddGlobal(g.m, LLVMTypeOf(binit), "kv.desc");
	LLVMSetInitializer(bgv, binit);
	LLVMSetGlobalConstant(bgv, 1);
	LLVMSetLinkage(bgv, LLVMPrivateLinkage);
	LLVMSetAlignment(bgv, 16);
	LLVMTypeRef fields[] = { g.i64, g.i32, g.i32, g.ptr, g.i64, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr,
	                         g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr,
	                         g.ptr, g.ptr };
	int nf = (int)(sizeof fields / sizeof fields[0]);
	LLVMTypeRef dt = LLVMStructTypeInContext(g.cx, fields, (unsigned)nf, 0);
	LLVMValueRef vals[] = {
		LLVMConstInt(g.i64, KVCC_MAGIC, 0), LLVMConstInt(g.i32, KVCC_ABI, 0),
		LLVMConstInt(g.i32, sizeof(kvcc_artifact), 0), bgv, LLVMConstInt(g.i64, ka_fnv(blob, nblob, 0), 0),
		gstr(&g, kir, "kv.kir"), qk, cvt, dec, probs, qkt, sstat, sacc, selkeys, topk, keepidx, compact, tmap,
		ckeys, kcount, ckeepidx, nkeep, ascale, hmean, observe, qround, sstatm, saccm,
	};
	_Static_assert(sizeof(kvcc_artifact) == 5 * 8 + 22 * 8, "kvcc_artifact: the descriptor fields above");
	LLVMValueRef desc = LLVMAddGlobal(g.m, dt, KVCC_DESC_SYMBOL);
	LLVMSetInitializer(desc, LLVMConstNamedStruct(dt, vals, (unsigned)nf));
	LLVMSetGlobalConstant(desc, 1);
	LLVMSetVisibility(desc, LLVMDefaultVisibility);
	free(kir), free(blob);

	int rc = -1;
	LLVMMemoryBufferRef buf = NULL;
	if (LLVMVerifyModule(g.m, LLVMReturnStatusAction, &err)) {
		kc_error(e, f->src, 0, 0, "internal: generated LLVM IR does not verify: %.300s", err);
		goto out;
	}
	LLVMDisposeMessage(err), err = NULL;
	double tgen = now_ms();
	LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
	LLVMErrorRef perr = LLVMRunPasses(g.m, "default<O2>", tm, po);
	LLVMDisposePassBuilderOptions(po);
	if (perr) {
		char *m = LLVMGetErrorMessage(perr);
		kc_error(e, f->src, 0, 0, "LLVM passes: %s", m);
		LLVMDisposeErrorMessage(m);
		goto out;
	}
	if (verbose > 1) {
		char *ir = LLVMPrintModuleToString(g.m);
		fputs(ir, stderr);
		LLVMDisposeMessage(ir);
	}
	double topt = now_ms();
	if (LLVMTargetMachineEmitToMemoryBuffer(tm, g.m, LLVMObjectFile, &err, &buf)) {
		kc_error(e, f->src, 0, 0, "LLVM codegen: %s", err);
		goto out;
	}
	size_t sz = LLVMGetBufferSize(buf);
	const char *p = LLVMGetBufferStart(buf);
	FILE *fo = fopen(objpath, "wb");
	int ok = fo && fwrite(p, 1, sz, fo) == sz;
	if (fo && fclose(fo) != 0)
		ok = 0;
	if (!ok) {
		kc_error(e, f->src, 0, 0, "cannot write %s", objpath);
		unlink(objpath);
		goto out;
	}
	rc = 0;
	if (verbose)
		fprintf(stderr, "kvcc: times: IR %.1f ms, passes %.1f ms, codegen %.1f ms\n", tgen - t0, topt - tgen,
		        now_ms() - topt);
	if (verbose)
		fprintf(stderr, "kvcc: x86: %s, cpu %s, %d-lane f32 vectors, dtype %s, head_dim %d, group %d, key %016llx\n",
		        kx_targetname(spec->target), cpu, W, ki_dtypename(spec->dtype), spec->head_dim, spec->group,
		        (unsigned long long)key);
out:
	if (err)
		LLVMDisposeMessage(err);
	if (buf)
		LLVMDisposeMemoryBuffer(buf);
	LLVMDisposeBuilder(g.b);
	LLVMDisposeModule(g.m);
	LLVMDisposeTargetData(td);
	LLVMContextDispose(g.cx);
	LLVMDisposeTargetMachine(tm);
	LLVMDisposeMessage(triple);
	free(host), free(feats);
	if (ms)
		*ms = now_ms() - t0;
	return rc;
}
