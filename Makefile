# kvcc — build, test and install.
#
#   make            the kvcc command, libkvcc_rt (the runtime: include/kvcc.h; shared and
#                   static) and libkvcc (the compiler library: include/kvcc_compiler.h);
#                   relinks the test and bench programs already built in $(B) when out of date
#   make check      every test tier (installs missing Debian packages first; tests/README.md)
#   make check-full make check plus the slow tiers (CHECK_FULL: check-python-full)
#   make demo       the end-to-end demonstration on the shipped checkpoint
#   make asan       the whole suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make check-san  the fast sanitizer tier (part of make check): unit, errors, golden,
#                   fuzz corpora, allocation-failure injection under ASan + UBSan
#   make fuzz       libFuzzer harnesses, FUZZ_SECONDS each (tests/fuzz/fuzz.mk; needs clang)
#   make bench      CPU benchmarks (a program, not a test)
#   make install PREFIX=/usr/local
#
# Objects go to $(B)/ (build/ by default, build-asan/ for `make asan`). Each folder
# lists its objects below; folders with more rules add a fragment (*.mk).

VERSION  = 0.1.0
PREFIX  ?= /usr/local
B       ?= build
SHARED  ?= $(abspath ../shared)

CC      ?= cc
LLVMCFG ?= llvm-config-19
PYTHON  ?= $(shell for p in python3 /usr/bin/python3; do $$p -c 'import numpy' 2>/dev/null && { command -v $$p; break; }; done)

SAN      ?=
OPT      ?= -O2 -g
CFLAGS   = -std=c11 -Wall -Wextra $(OPT) $(SAN) -fPIC -fvisibility=hidden \
           -D_GNU_SOURCE -DKVCC_VERSION='"$(VERSION)"' -Iinclude -I. -I$(B)
LUA_CFLAGS   := $(shell pkg-config --cflags lua5.4 2>/dev/null)
LUA_LIBS     := $(shell pkg-config --libs lua5.4 2>/dev/null)
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   := $(shell pkg-config --libs check 2>/dev/null)
LLVM_CFLAGS  := $(shell $(LLVMCFG) --cflags 2>/dev/null)
LLVM_LIBS    := $(shell $(LLVMCFG) --ldflags 2>/dev/null) $(shell $(LLVMCFG) --libs 2>/dev/null)
LDLIBS   = $(SAN) $(LUA_LIBS) -lm -lpthread -ldl

# --- objects, one group per stage ---------------------------------------------
# libkvcc_rt = RTOBJ (libc, libm, libpthread, libdl only); libkvcc = the compiler
# (DSLOBJ IROBJ X86OBJ PTXOBJ) on top of it. The kvcc command and the test programs
# link every object statically.
DSLOBJ  = dsl/sandbox.o dsl/builder.o dsl/rules.o dsl/strlib.o
IROBJ   = compiler/ir.o compiler/print.o compiler/lex.o compiler/parse.o \
          compiler/verify.o compiler/passes.o compiler/interp.o compiler/select.o compiler/merge.o \
          compiler/mplan.o compiler/diag.o
RTOBJ   =
X86OBJ  =
PTXOBJ  =
CLIOBJ  = tools/main.o tools/dev.o tools/npz.o tools/rundecode.o tools/weights.o

COMPOBJ = $(addprefix $(B)/,$(DSLOBJ) $(IROBJ) $(X86OBJ) $(PTXOBJ))
RTLIBOBJ = $(addprefix $(B)/,$(RTOBJ))
LIBOBJ  = $(COMPOBJ) $(RTLIBOBJ)

all: $(B)/kvcc $(B)/libkvcc_rt.so $(B)/libkvcc_rt.a $(B)/libkvcc.so

-include $(wildcard */*.mk */*/*.mk)

# The tiers' programs (tests, benchmarks) already built in $(B): `make all` relinks each one that
# is out of date (an object or library it links changed), so one run by hand after `make all`
# never runs old code. It builds none that is absent (the tiers build those).
BUILT_PROGS := $(shell find $(B) -maxdepth 2 -type f -perm -u+x ! -name '*.so' ! -name '*.a' 2>/dev/null)
all: $(BUILT_PROGS)

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LUA_CFLAGS) -MMD -MP -c $< -o $@

$(B)/compiler/lex.c: compiler/lex.re
	@mkdir -p $(dir $@)
	re2c -W --no-generation-date -o $@ $<
$(B)/compiler/lex.o: $(B)/compiler/lex.c
	$(CC) $(CFLAGS) -Icompiler -MMD -MP -c $< -o $@

# the runtime: nothing but the C library, libm, libpthread and libdl (--no-undefined)
$(B)/libkvcc_rt.so: $(RTLIBOBJ)
	$(CC) -shared -o $@ $^ -Wl,--no-undefined -Wl,-soname,libkvcc_rt.so $(SAN) -lm -lpthread -ldl

$(B)/libkvcc_rt.a: $(RTLIBOBJ)
	rm -f $@
	ar rcs $@ $^

# the compiler library on top of it (runtime/artifact.o: the GPU blob reader both use)
$(B)/libkvcc.so: $(COMPOBJ) $(B)/runtime/artifact.o $(B)/libkvcc_rt.so
	$(CC) -shared -o $@ $(COMPOBJ) $(B)/runtime/artifact.o -L$(B) -lkvcc_rt -Wl,-rpath,'$$ORIGIN' \
	  -Wl,--no-undefined $(LDLIBS) $(LLVM_LIBS_USED)

$(B)/kvcc: $(addprefix $(B)/,$(CLIOBJ)) $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

# --- tests ----------------------------------------------------------------------
deps:
	@scripts/install-deps

# The tiers are independent (each has its own build outputs and temporary folders), so make check
# runs CHECK_JOBS of them at once, each tier's output kept together (--output-sync); most tiers
# are one process at a time, and the machines have 2 cores. CHECK_JOBS=1: one after another.
CHECK_JOBS ?= 2

check: deps
	$(CHECK_START)
	$(MAKE) all
	$(MAKE) -j$(CHECK_JOBS) --output-sync=target $(CHECK_TIERS) $(CHECK_MORE) $(CHECK_LAST)
	@echo "make check: all tiers passed$(PY_SKIPPED)"

# CHECK_START: recipe lines run first (python.mk: the torch venv's install, in the background);
# CHECK_LAST: tiers started after all others (python.mk: check-python-torch, which waits for the
# venv): in make check the end of the parallel list, so it overlaps the last long tier instead of
# running alone (session 10: ~70 s of one idle core);
# CHECK_FULL_LAST: the same for make check-full (python.mk: check-python-full).
# The slow tiers replace the fast ones they include (CHECK_FULL_OMIT).
check-full: deps
	$(CHECK_START)
	$(MAKE) all
	$(MAKE) -j$(CHECK_JOBS) --output-sync=target \
	  $(filter-out $(CHECK_FULL_OMIT) $(CHECK_FULL_LAST),$(CHECK_TIERS) $(CHECK_MORE) $(CHECK_FULL))
	$(MAKE) $(filter-out $(CHECK_FULL_OMIT),$(CHECK_LAST)) $(CHECK_FULL_LAST)
	@echo "make check-full: all tiers passed$(PY_SKIPPED)"

demo: deps
	$(MAKE) all $(DEMO_MORE)
	scripts/demo.sh $(B) $(PYTHON) $(SHARED)

SANFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined

asan:
	$(MAKE) B=build-asan OPT="-O1 -g -fno-omit-frame-pointer" SAN="$(SANFLAGS)" check

# the fast sanitizer tier of make check: unit, ir, errors, the fuzz corpora, the allocation-failure
# injection and the API misuse cases under ASan + UBSan in build-asan/ (inside make asan, a no-op);
# check-san-full (make check-full) adds the golden tier (every oracle case through the
# interpreter under ASan: make check's time budget)
SAN_TIERS = check-unit check-ir check-errors check-fuzz check-oom check-api
check-san:
	$(if $(SAN),@echo "check-san: part of this sanitizer run already",\
	  $(MAKE) B=build-asan OPT="-O1 -g -fno-omit-frame-pointer" SAN="$(SANFLAGS)" $(SAN_TIERS))

check-san-full:
	$(if $(SAN),@echo "check-san-full: part of this sanitizer run already",\
	  $(MAKE) B=build-asan OPT="-O1 -g -fno-omit-frame-pointer" SAN="$(SANFLAGS)" $(SAN_TIERS) check-golden)

CHECK_FULL += check-san-full
CHECK_FULL_OMIT += check-san

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(B)/kvcc $(DESTDIR)$(PREFIX)/bin/kvcc
	install -m 755 $(B)/libkvcc.so $(DESTDIR)$(PREFIX)/lib/libkvcc.so
	install -m 755 $(B)/libkvcc_rt.so $(DESTDIR)$(PREFIX)/lib/libkvcc_rt.so
	install -m 644 $(B)/libkvcc_rt.a $(DESTDIR)$(PREFIX)/lib/libkvcc_rt.a
	install -m 644 include/kvcc.h $(DESTDIR)$(PREFIX)/include/kvcc.h
	install -m 644 include/kvcc_compiler.h $(DESTDIR)$(PREFIX)/include/kvcc_compiler.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' scripts/kvcc.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/kvcc.pc

clean:
	rm -rf build build-asan build-fuzz

.PHONY: all deps demo check check-full asan check-san check-san-full install clean

# dependency files of this build only (not of builds nested in it, e.g. check-twice's second one)
-include $(shell find $(B) -name '*.d' -not -path '$(B)/*/build/*' 2>/dev/null)
