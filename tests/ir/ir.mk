# tests/ir: KIR tests written as KIR (QBE's test/*.ssa style): each tests/ir/*.kir holds
# a policy and, in comments, what it must become after given passes (# >>> expect-after)
# or the error the pipeline must give (# >>> expect-error). tests/ir/run.sh checks them.
#
#   make check-ir

check-ir: $(B)/kvcc
	tests/ir/run.sh $(B)/kvcc $(B)/ir

.PHONY: check-ir
