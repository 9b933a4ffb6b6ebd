#!/bin/sh
# Golden tests: every policy of the manifest's golden matrix (tests/policies.tsv) on
# its oracle's cases (tests/oracle/gen_golden.py for kvref, tests/oracle/decode_ref.py
# for decode-time policies: independent numpy implementations of the published
# formulas), run through the reference interpreter (`kvcc run`), compared by
# tests/oracle/compare.py.
# usage: tests/golden/run.sh KVCC PYTHON WORKDIR
set -u
kvcc=$1 py=$2 work=$3
manifest=tests/policies.tsv
mkdir -p "$work"
tests/manifest.sh >/dev/null || { tests/manifest.sh; echo "golden: the manifest is broken"; exit 1; }
"$py" tests/oracle/gen_golden.py "$work" >/dev/null || { echo "golden: the oracle failed"; exit 1; }
if awk '!/^#/ && $3 == "decode_ref" && $5 ~ /(^|,)golden(,|$)/ { f = 1 } END { exit !f }' "$manifest"; then
	"$py" tests/oracle/decode_ref.py "$work" || { echo "golden: the decode oracle failed"; exit 1; }
fi
pass=0 fail=0
while read -r policy file; do
	case_=$(basename "$file" .npz)
	out="$work/$case_.result.npz"
	lua=$(awk -v p="$policy" '!/^#/ && $1 == p { print $2 }' "$manifest")
	if [ -z "$lua" ]; then
		echo "FAIL $case_: policy $policy has no line in $manifest"
		fail=$((fail + 1))
		continue
	fi
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
