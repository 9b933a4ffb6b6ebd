#!/bin/sh
# Golden tests: every policy on the oracle's cases (tests/oracle/gen_golden.py,
# an independent numpy implementation of the published formulas), run through
# the reference interpreter (`kvcc run`), compared by tests/oracle/compare.py.
# usage: tests/golden/run.sh KVCC PYTHON WORKDIR
set -u
kvcc=$1 py=$2 work=$3
mkdir -p "$work"
"$py" tests/oracle/gen_golden.py "$work" >/dev/null || { echo "golden: the oracle failed"; exit 1; }
"$py" tests/oracle/decode_ref.py "$work" || { echo "golden: the decode oracle failed"; exit 1; }
pass=0 fail=0
while read -r policy file; do
	case_=$(basename "$file" .npz)
	out="$work/$case_.result.npz"
	case $policy in */*) lua=$policy.lua ;; *) lua=policies/$policy.lua ;; esac
	if ! "$kvcc" run "$lua" --inputs "$work/$file" --out "$out" 2>"$work/$case_.err"; then
		echo "FAIL $case_: kvcc run: $(head -1 "$work/$case_.err")"
		fail=$((fail + 1))
		continue
	fi
	if line=$("$py" tests/oracle/compare.py "$work/$file" "$out"); then
		pass=$((pass + 1))
	else
		echo "$line"
		fail=$((fail + 1))
	fi
done < "$work/cases.txt"
echo "golden: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
