#!/bin/sh
# `kvcc compile --gpu-arch`: the shared object exports kvcc_artifact_gpu beside
# kvcc_artifact; without --gpu-arch it does not; -v prints registers / shared
# memory / spills per kernel and arch; unsupported targets are rejected with a
# message and exit 1. SKIP (never a pass) without NVRTC.
#   tests/gpu/cli.sh BUILD_DIR
B=${1:-build}
d=$B/gpu-cli-test
rm -rf "$d"; mkdir -p "$d"
export KVCC_CACHE_DIR="$(cd "$d" && pwd)/cache"
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL gpu cli: $1"; fail=$((fail + 1)); }
"$B/kvcc" compile policies/knorm.lua -o "$d/cpu.so" --head-dim 64 || bad "compile without --gpu-arch"
if nm -D "$d/cpu.so" | grep -q kvcc_artifact_gpu; then bad "kvcc_artifact_gpu without --gpu-arch"; else ok; fi
if ! "$B/kvcc" dev cuda policies/knorm.lua --head-dim 8 --gen-only >/dev/null 2>&1 ||
   ! "$B/kvcc" dev cuda policies/knorm.lua --head-dim 8 >/dev/null 2>"$d/probe.err"; then
	if grep -q "NVRTC not found" "$d/probe.err"; then
		echo "SKIP gpu cli: $(cat "$d/probe.err")"; echo "gpu cli: $pass passed, $fail failed, 1 skipped"
		exit $((fail != 0))
	fi
fi
if "$B/kvcc" compile policies/tova.lua -o "$d/tova.so" --dtype f16 --head-dim 64 --group 2 \
	--gpu-arch sm_80,sm_90 -v 2>"$d/v.log"; then ok; else bad "compile --gpu-arch"; cat "$d/v.log"; fi
nm -D "$d/tova.so" | grep -q " R kvcc_artifact_gpu" && ok || bad "no kvcc_artifact_gpu symbol"
nm -D "$d/tova.so" | grep -q " kvcc_artifact$" && ok || bad "no kvcc_artifact symbol"
for a in sm_80 sm_90; do
	grep -q "kvcc:   $a: PTX [0-9]* bytes, CUBIN [0-9]* bytes" "$d/v.log" && ok || bad "-v: no $a image line"
done
[ "$(grep -c 'registers, .* B static smem, .* B dynamic smem.*B spills' "$d/v.log")" -ge 4 ] && ok ||
	bad "-v: registers/smem/spills per kernel and arch"
grep -q "cache miss" "$d/v.log" && ok || bad "-v: first compile is a miss"
"$B/kvcc" compile policies/tova.lua -o "$d/tova2.so" --dtype f16 --head-dim 64 --group 2 \
	--gpu-arch sm_90,sm_80 -v 2>"$d/v2.log" && grep -q "cache hit" "$d/v2.log" && ok || bad "same targets: cache hit"
cmp -s "$d/tova.so" "$d/tova2.so" && ok || bad "hit gives the same artifact"
"$B/kvcc" compile policies/tova.lua -o "$d/tova3.so" --dtype f16 --head-dim 64 --group 2 \
	--gpu-arch sm_90 -v 2>"$d/v3.log"
grep -q "cache miss.*gpu (cached sm_80,sm_90, wanted sm_90)" "$d/v3.log" && ok || { bad "miss names the targets"; cat "$d/v3.log"; }
for a in sm_70 sm_999 hopper; do
	if "$B/kvcc" compile policies/tova.lua -o "$d/x.so" --gpu-arch $a 2>"$d/e.log"; then bad "$a accepted"
	elif grep -q "error: --gpu-arch" "$d/e.log"; then ok; else bad "$a: $(cat "$d/e.log")"; fi
done
[ ! -e "$d/x.so" ] && ok || bad "a rejected target wrote an output"
# kvcc check plans for the GPU targets too: the same verdicts as compile, no output
"$B/kvcc" check policies/tova.lua --dtype f16 --head-dim 64 --group 2 --gpu-arch sm_80,sm_90 2>"$d/c.log" &&
	[ ! -s "$d/c.log" ] && ok || bad "check --gpu-arch sm_80,sm_90: $(cat "$d/c.log")"
if "$B/kvcc" check policies/tova.lua --gpu-arch sm_70 2>"$d/c.log"; then bad "check accepted sm_70"
elif grep -q "error: --gpu-arch: sm_70 is not supported" "$d/c.log"; then ok; else bad "check sm_70: $(cat "$d/c.log")"; fi
echo "gpu cli: $pass passed, $fail failed, 0 skipped"
[ $fail -eq 0 ]
