#!/bin/sh
# One NVVM run for sm_80 and sm_90 with ptxas per arch (codegen/ptx/compile.c share_archs, the
# default when the toolkit's ptxas of NVRTC's release is found) against one NVRTC program per arch
# (KVCC_PTXAS=off, as before): every kernel's machine code (.text sections, tests/gpu/cubin_cmp.c)
# and the registers / shared memory / spills `kvcc dev cuda -v` prints must be the same. SKIP
# without NVRTC or without ptxas.
#   tests/gpu/ptxas_same.sh BUILD_DIR [all]   (all: more policies and specs)
B=${1:-build}
ALL=${2:-}
out=$B/ptxas-same
rm -rf "$out"; mkdir -p "$out/a" "$out/b"
if ! "$B/kvcc" dev cuda policies/knorm.lua --head-dim 8 --gpu-arch sm_80 >/dev/null 2>"$out/probe.err"; then
	echo "SKIP: $(head -1 "$out/probe.err")"; echo "0 passed, 0 failed, 1 skipped"; exit 0
fi
pass=0; fail=0; skip=0
set -- "snapkv f32 128 1"
[ "$ALL" = all ] && set -- "snapkv f32 128 1" "kvmerger bf16 128 4" "adakv f16 64 2" "lagkv bf16 96 2" "h2o f32 8 4"
for spec in "$@"; do
	set -- $spec
	rm -f "$out"/a/* "$out"/b/*
	KVCC_PTXAS=off "$B/kvcc" dev cuda "policies/$1.lua" --dtype $2 --head-dim $3 --group $4 -v --emit-dir "$out/a" \
		2>&1 | grep '^    kv_' >"$out/a.log"
	"$B/kvcc" dev cuda "policies/$1.lua" --dtype $2 --head-dim $3 --group $4 -v --emit-dir "$out/b" >"$out/b.full" 2>&1
	grep '^    kv_' "$out/b.full" >"$out/b.log"
	# the compiler's own account (kvcc dev cuda -v "how:"): two NVRTC parts that were not joined, or a
	# ptxas that failed, while a ptxas of NVRTC's release was found, is a regression, not a skip
	grep '^    how: ' "$out/b.full" >"$out/how.log"
	if grep -q 'NVRTC alone: ' "$out/how.log" && ! grep -q 'no ptxas of' "$out/how.log"; then
		echo "FAIL $spec: the shared NVVM run fell back to NVRTC per arch:"; cat "$out/how.log"
		fail=$((fail + 1)); continue
	fi
	# shared: the two images hold the same PTX but for `.target` (one NVVM run); NVRTC per arch
	# adds an unused global to compute_90's, so there they differ
	grep -v '^\.target' "$out"/b/*.sm_90.*.ptx >"$out/b.ptx90"
	if ! grep -v '^\.target' "$out"/b/*.sm_80.*.ptx | cmp -s - "$out/b.ptx90"; then
		echo "SKIP $spec: not one NVVM run (no ptxas of NVRTC's release found: KVCC_PTXAS, bin/ptxas beside NVRTC," \
		     "/usr/local/cuda/bin/ptxas; or the archs' score tiles differ)"
		skip=$((skip + 1)); continue
	fi
	if ! diff "$out/a.log" "$out/b.log" >"$out/diff"; then
		echo "FAIL $spec: kvcc dev cuda -v differs (NVRTC per arch <, one NVVM run >):"; cat "$out/diff"
		fail=$((fail + 1)); continue
	fi
	ok=1
	for f in "$out"/a/*.cubin; do
		"$B/cubin_cmp" "$f" "$out/b/$(basename "$f")" >"$out/cmp" || { ok=0; echo "FAIL $spec $(basename "$f"):"; cat "$out/cmp"; }
	done
	ls "$out"/a/*.cubin >/dev/null 2>&1 || ok=0
	[ $ok = 1 ] && { pass=$((pass + 1)); echo "ok $spec: $(ls "$out"/a/*.cubin | wc -l) CUBINs, the same machine code"; } || fail=$((fail + 1))
done
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
