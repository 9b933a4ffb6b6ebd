# kvcc — build, test and install.
#
#   make            the kvcc command and libkvcc (shared library + include/kvcc.h)
#   make check      every test tier (installs missing Debian packages first; tests/README.md)
#   make demo       the end-to-end demonstration on the shipped checkpoint
#   make asan       the whole suite under AddressSanitizer + UndefinedBehaviorSanitizer
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
DSLOBJ  = dsl/sandbox.o dsl/builder.o dsl/strlib.o
IROBJ   = compiler/ir.o compiler/print.o compiler/lex.o compiler/parse.o \
          compiler/verify.o compiler/passes.o compiler/interp.o compiler/select.o compiler/merge.o \
          compiler/mplan.o compiler/diag.o
RTOBJ   =
X86OBJ  =
PTXOBJ  =
CLIOBJ  = tools/main.o tools/dev.o tools/npz.o tools/rundecode.o tools/weights.o

LIBOBJ  = $(addprefix $(B)/,$(DSLOBJ) $(IROBJ) $(X86OBJ) $(PTXOBJ) $(RTOBJ))

all: $(B)/kvcc $(B)/libkvcc.so

-include $(wildcard */*.mk */*/*.mk)

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LUA_CFLAGS) -MMD -MP -c $< -o $@

$(B)/compiler/lex.c: compiler/lex.re
	@mkdir -p $(dir $@)
	re2c -W --no-generation-date -o $@ $<
$(B)/compiler/lex.o: $(B)/compiler/lex.c
	$(CC) $(CFLAGS) -Icompiler -MMD -MP -c $< -o $@

$(B)/libkvcc.so: $(LIBOBJ)
	$(CC) -shared -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

$(B)/kvcc: $(addprefix $(B)/,$(CLIOBJ)) $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

# --- tests ----------------------------------------------------------------------
deps:
	@scripts/install-deps

check: deps
	$(MAKE) all
	$(MAKE) $(CHECK_TIERS) $(CHECK_MORE)
	@echo "make check: all tiers passed"

demo: deps
	$(MAKE) all $(DEMO_MORE)
	scripts/demo.sh $(B) $(PYTHON) $(SHARED)

asan:
	$(MAKE) B=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" check

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(B)/kvcc $(DESTDIR)$(PREFIX)/bin/kvcc
	install -m 755 $(B)/libkvcc.so $(DESTDIR)$(PREFIX)/lib/libkvcc.so
	install -m 644 include/kvcc.h $(DESTDIR)$(PREFIX)/include/kvcc.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' scripts/kvcc.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/kvcc.pc

clean:
	rm -rf build build-asan

.PHONY: all deps demo check asan install clean

-include $(shell find $(B) -name '*.d' 2>/dev/null)
