# tests/fuzz: libFuzzer harnesses (fz_<name>.c) and their committed corpora
# (corpus/<name>/). Included by the top Makefile; the tiers are in CHECK_TIERS (tests/tests.mk).
#
#   make check-fuzz     replay every corpus through its harness built with $(CC), without
#                       libFuzzer, and corrupted checkpoints / tokenizers through `llama` and
#                       `kvcc eval` (llama_cli.py) (part of make check; under ASan + UBSan in
#                       check-san)
#   make fuzz           build the harnesses with clang -fsanitize=fuzzer,address,undefined in
#                       build-fuzz/ and run each for FUZZ_SECONDS (default 60; FUZZERS picks
#                       some); prints execs and CPU time, appends them to
#                       build-fuzz/fuzz/stats.tsv, keeps new inputs in build-fuzz/fuzz/corpus-<name>
#                       and crashes in build-fuzz/fuzz/crash-<name>-* (not part of make check;
#                       needs clang and libclang-rt: scripts/install-deps fuzz)
#   make fuzz-descseeds write the descriptor seeds of fz_artifact (descseed.c) into
#                       corpus/artifact from the shipped policies compiled by kvcc
#   make fuzz-merge     minimize corpus/<name> with -merge=1 over it and the new inputs
#   make check-oom      allocation-failure injection over the compile path and the runtime's
#                       setup (oom.c), and the command line under ulimit -v (oom_cli.sh);
#                       part of make check (check-san runs check-fuzz and check-oom under ASan
#                       + UBSan: the top Makefile)
#
# A crash found by make fuzz is fixed, then its input goes into corpus/<name>/ as a
# regression, named after what it found.

FUZZERS      ?= kir dsl npz ckpt tok artifact
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_SAN      = -fsanitize=address,undefined -fno-sanitize-recover=undefined

FZ_COMMON = $(B)/tests/fuzz/util.o
FZ_PIPE   = $(B)/tests/fuzz/pipeline.o
FZ_LLAMA  = $(B)/lib/llama/model.o $(B)/lib/llama/tokenizer.o $(B)/lib/llama/file.o
FZ_NPZ    = $(B)/tools/npz.o
fz_objs   = $(B)/tests/fuzz/fz_$(1).o $(FZ_COMMON) $(if $(filter kir dsl,$(1)),$(FZ_PIPE)) \
            $(if $(filter ckpt tok,$(1)),$(FZ_LLAMA)) $(if $(filter npz,$(1)),$(FZ_NPZ)) $(LIBOBJ)

define FZ_RULES
$(B)/fuzz/replay-$(1): $(B)/tests/fuzz/replay.o $(call fz_objs,$(1))
	@mkdir -p $$(dir $$@)
	$$(CC) -o $$@ $$^ $$(LDLIBS) $$(LLVM_LIBS_USED)

$(B)/fuzz/fuzz-$(1): $(call fz_objs,$(1))
	@mkdir -p $$(dir $$@)
	$$(CC) -fsanitize=fuzzer -o $$@ $$^ $$(LDLIBS) $$(LLVM_LIBS_USED)
endef
$(foreach h,$(FUZZERS),$(eval $(call FZ_RULES,$(h))))

check-fuzz: $(foreach h,$(FUZZERS),$(B)/fuzz/replay-$(h)) $(B)/llama $(B)/kvcc
	@for h in $(FUZZERS); do $(B)/fuzz/replay-$$h tests/fuzz/corpus/$$h || exit 1; done
	@mkdir -p $(B)/llama-cli
	$(PYTHON) tests/fuzz/llama_cli.py $(B)/llama $(B)/kvcc $(SHARED)/data $(B)/llama-cli

fuzz:
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz needs clang (scripts/install-deps fuzz)" >&2; exit 1; }
	$(MAKE) B=build-fuzz CC=$(FUZZ_CC) OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" fuzz-run

fuzz-run: $(foreach h,$(FUZZERS),$(B)/fuzz/fuzz-$(h))
	@for h in $(FUZZERS); do tests/fuzz/run.sh $(B)/fuzz $$h $(FUZZ_SECONDS) || exit 1; done

fuzz-merge:
	$(MAKE) B=build-fuzz CC=$(FUZZ_CC) OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" fuzz-merge-run

fuzz-merge-run: $(foreach h,$(FUZZERS),$(B)/fuzz/fuzz-$(h))
	@for h in $(FUZZERS); do tests/fuzz/merge.sh $(B)/fuzz $$h || exit 1; done

# seeds of fz_artifact's descriptor mode: the CPU descriptors of a few shipped policies
DESCSEED_POLICIES = snapkv h2o tova keydiff pyramidkv streaming_llm snapkv_merge lagkv kmeans d2o kvmerger prefixkv_bisect criticalkv

$(B)/fuzz/descseed: $(B)/tests/fuzz/descseed.o
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ -ldl

fuzz-descseeds: $(B)/fuzz/descseed $(B)/kvcc
	@mkdir -p $(B)/descseed
	for p in $(DESCSEED_POLICIES); do KVCC_CACHE_DIR=off $(B)/kvcc compile policies/$$p.lua -o $(B)/descseed/$$p.so || exit 1; done
	$(B)/fuzz/descseed tests/fuzz/corpus/artifact $(foreach p,$(DESCSEED_POLICIES),$(B)/descseed/$(p).so)

# allocation-failure injection (oom.c): the program sees every malloc & co. of kvcc's objects
OOM_WRAP = -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free,--wrap=strdup

$(B)/fuzz/oom_tests: $(B)/tests/fuzz/oom.o $(FZ_NPZ) $(LIBOBJ)
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(OOM_WRAP) $(LDLIBS) $(LLVM_LIBS_USED)

# (no address-space limit under a sanitizer: its shadow memory needs terabytes of it)
# make check: a sample of the policies (each kind: fused attention, decode state, head mean,
# token_map only, a merge rule, a selection rule); check-oom-full (make check-full): all of them
OOM_SAMPLE = policies/snapkv.lua policies/h2o.lua policies/tova.lua policies/keydiff.lua \
             policies/lookm.lua policies/adakv.lua

check-oom: $(B)/fuzz/oom_tests $(B)/kvcc
	$(B)/fuzz/oom_tests $(if $(SAN),policies/snapkv.lua policies/h2o.lua,--x86 $(OOM_SAMPLE))
	$(if $(SAN),@echo "SKIP oom_cli.sh: no ulimit -v under a sanitizer",tests/fuzz/oom_cli.sh $(B)/kvcc)

check-oom-full: $(B)/fuzz/oom_tests $(B)/kvcc
	$(B)/fuzz/oom_tests --x86 policies/*.lua
	tests/fuzz/oom_cli.sh $(B)/kvcc

CHECK_FULL += check-oom-full
CHECK_FULL_OMIT += check-oom

.PHONY: check-fuzz check-oom check-oom-full fuzz fuzz-run fuzz-merge fuzz-merge-run fuzz-descseeds
