#!/bin/sh
# KIR tests written as KIR (QBE's test/*.ssa style): each tests/ir/*.kir is a policy in the
# text form followed by expectation blocks in comments,
#
#   # >>> expect-after PASSES      the KIR after running the comma-separated PASSES
#   # <text, each line behind "# ">   (kvcc dump -d PASSES; the text after the last pass)
#   # <<<
#   # >>> expect-error             the error line of the whole pipeline (kvcc compile:
#   # <file:line:col: error: ...>    load, verify, passes, plan, code generation)
#   # <<<
#
# For the planner's errors (files named plan_*.kir) `kvcc check` must print the same line as
# compile (issue 10: check passed policies that both backends reject).
# Every block of a file is checked; a file needs at least one. Files named _*.kir are
# fixtures, not tests. An empty expected line is written "#".
#   tests/ir/run.sh KVCC [WORKDIR]
set -u
kvcc=$1 work=${2:-${TMPDIR:-/tmp}/kvcc-ir.$$}
mkdir -p "$work"
export KVCC_CACHE_DIR="$work/cache"
pass=0 fail=0
for t in tests/ir/*.kir; do
	case $(basename "$t") in _*) continue ;; esac
	name=$(basename "$t" .kir)
	# the blocks: "kind args" lines in $work/$name.blocks, expected text in $name.exp.N
	awk -v dir="$work" -v name="$name" '
		/^# >>> / { k++; sub(/^# >>> /, ""); print > (dir "/" name ".blocks"); f = dir "/" name ".exp." k
		            printf "" > f; on = 1; next }
		/^# <<</ { on = 0; next }
		on { sub(/^# ?/, ""); print >> f }
		END { if (!k) printf "" > (dir "/" name ".blocks") }' "$t"
	k=0 nb=0
	while read -r kind args; do
		k=$((k + 1)) nb=$((nb + 1))
		exp="$work/$name.exp.$k" got="$work/$name.got.$k"
		case $kind in
		expect-after)
			"$kvcc" dump -d "$args" "$t" >"$work/$name.out" 2>&1
			# the text after the last "# after PASS" line
			awk '/^# after / { n = NR } { l[NR] = $0 } END { for (i = n + 1; i <= NR; i++) print l[i] }' \
				"$work/$name.out" >"$got" ;;
		expect-error)
			if "$kvcc" compile "$t" -o "$work/$name.so" >/dev/null 2>"$got"; then
				echo "compiled without an error" >>"$got"
			fi
			case $name in plan_*)
				if "$kvcc" check "$t" >/dev/null 2>"$got.check"; then
					echo "kvcc check passed it" >>"$got.check"
				fi
				cmp -s "$got" "$got.check" || sed 's/^/check: /' "$got.check" >>"$got" ;;
			esac ;;
		*)
			echo "unknown block '# >>> $kind'" >"$got" ;;
		esac
		if cmp -s "$exp" "$got"; then
			pass=$((pass + 1))
		else
			echo "FAIL $name: # >>> $kind $args"
			diff -u "$exp" "$got" | sed 's/^/    /'
			fail=$((fail + 1))
		fi
	done <"$work/$name.blocks"
	if [ "$nb" -eq 0 ]; then
		echo "FAIL $name: no # >>> block"
		fail=$((fail + 1))
	fi
done
echo "ir: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
