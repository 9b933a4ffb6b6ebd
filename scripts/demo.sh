#!/bin/sh
# make demo: what kvcc does, end to end, on what this build has.
# usage: scripts/demo.sh BUILD_DIR PYTHON SHARED_DIR
set -eu
B=$1 PY=$2 SHARED=$3
kvcc=$B/kvcc
echo "== kvcc $($kvcc --version | cut -d' ' -f2): the policy library"
for p in policies/*.lua; do
	$kvcc check "$p"
	printf '  %-22s %3d KIR instructions\n' "$(basename "$p" .lua)" "$($kvcc dump "$p" | grep -c '^%')"
done
echo
echo "== SnapKV's KIR after the default passes"
$kvcc dump policies/snapkv.lua
echo
echo "== SnapKV at ratio 0.5 on a golden case (reference interpreter)"
mkdir -p "$B/demo"
$PY tests/oracle/gen_golden.py "$B/demo" >/dev/null
case_=$(grep '^snapkv ' "$B/demo/cases.txt" | head -1 | cut -d' ' -f2)
$kvcc run policies/snapkv.lua --inputs "$B/demo/$case_" --ratio 0.5 | head -4 | cut -c1-160
if [ -x "$B/llama" ] && [ -f "$SHARED/data/stories260K.bin" ]; then
	echo
	echo "== a story from the shipped checkpoint (stories260K)"
	$B/llama --model "$SHARED/data/stories260K.bin" --tokenizer "$SHARED/data/tok512.bin" generate --steps 80
fi
