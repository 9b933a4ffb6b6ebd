# codegen/x86/cfg.c (the kernels' tuning config) and compiler/tunedb.c (the tuning database,
# in libkvcc); tools/tune.c (`kvcc tune`, in the command). doc/tune.md. Included by the top Makefile.
X86OBJ += codegen/x86/cfg.o
IROBJ  += compiler/tunedb.o
CLIOBJ += tools/tune.o tools/tune_gpu.o
