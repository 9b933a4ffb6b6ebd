# tests/unit: the Check unit tests. Every tests/unit/*.c is part of the runner;
# a new suite is a test_<area>.c plus one line in main.c's SUITES list.
#
#   make check-unit     build and run them (CK_RUN_SUITE=parse or CK_RUN_CASE=... pick one)

UNITOBJ = $(patsubst %.c,$(B)/%.o,$(wildcard tests/unit/*.c))

$(UNITOBJ): CFLAGS += $(CHECK_CFLAGS)

$(B)/unit_tests: $(UNITOBJ) $(LIBOBJ)
	$(CC) -o $@ $^ $(CHECK_LIBS) $(LDLIBS) $(LLVM_LIBS_USED)

check-unit: $(B)/unit_tests
	$(B)/unit_tests

.PHONY: check-unit
