#!/bin/sh
# tests/tune/gpu.sh KVCC EMU_DIFF BUILD_DIR WORKDIR [all] — the GPU config space (doc/tune.md "GPU"):
#   1. GPU config points through the emulated GPU matrix (tests/emu/emu_diff --gpu-config: the
#      point's CUDA C compiled by g++ against cuda_emu.h, run against the reference interpreter).
#      Without `all` (make check): a point that moves every field off its default, on h2o
#      (decode, observe hook) and snapkv (tiled score), every 8th spec. With `all`
#      (make check-tune): every value of every field the tuner's search can set (st2 / st3 included),
#      one field off the default at a time, plus combined points, on h2o, snapkv and scope_layer, every 4th spec
#      (every 16th at 512 threads).
#   2. `kvcc tune --gpu-arch sm_80 --gpu-only` (the static model; NVRTC): says that nothing was
#      measured on a GPU and which config it picks; the pick passes the emulation; `kvcc compile
#      --gpu-arch sm_80 -v` uses it and the artifact records it; KVCC_TUNE=0 gives the default;
#      a bad KVCC_GPU_CONFIG falls back with a message. With `all`, NVRTC also compiles every field
#      value for sm_80 and sm_90 (h2o, snapkv). Without NVRTC part 2 is a SKIP (said).
# Times are never asserted.
set -u
KVCC=$1 EMU=$2 B=$3 W=$4 ALL=${5:-}
rm -rf "$W" && mkdir -p "$W"
export KVCC_CACHE_DIR="$W/cache"
pass=0 fail=0 skip=0
ok() { pass=$((pass + 1)); echo "PASS $1"; }
no() { fail=$((fail + 1)); echo "FAIL $1"; [ -f "$W/err" ] && sed 's/^/  | /' "$W/err" | head -20; }
emu() {   # emu CONFIG POLICY EVERY
	out=$("$EMU" "$B" --policy "$2" --every "$3" --gpu-config "$1" 2>"$W/err")
	sum=$(printf '%s\n' "$out" | tail -1)
	if printf '%s\n' "$sum" | grep -q ' 0 failed' && ! printf '%s\n' "$sum" | grep -q '^0 passed'; then
		ok "GPU config $1, $2 (emulated): $sum"
	else
		printf '%s\n' "$out" | grep '^FAIL' | head -5 >"$W/err"
		no "GPU config $1, $2 (emulated): $sum"
	fi
}

# 1. config points through the emulation
if [ "$ALL" = all ]; then
	for p in h2o snapkv scope_layer; do
		for c in nt128 lpt1 lpt2 lpt4 lpt8 lpt16 lpt32 sq16,sk32 sq32,sk128 sq128,sk64 sq256,sk32 tt8 tt32 \
		         nt128,lpt8,sq32,sk32,tt8 st2 st3 sq32,sk32,st3; do
			emu "$c" $p 4
		done
		# 512 threads as fibers: every 16th spec (the emulation's time grows with the block)
		emu nt512 $p 16
		emu nt512,lpt16,sq128,sk128,tt32 $p 16
	done
else
	for p in h2o snapkv; do
		emu nt96,lpt16,sq48,sk24,tt3 $p 8
	done
fi

# 2. the static model through kvcc tune, the pick through compile and the emulation
nvrtc() {   # nvrtc CONFIG POLICY: NVRTC compiles the point for sm_80 and sm_90, the artifact records it
	if KVCC_GPU_CONFIG=$1 "$KVCC" compile "policies/$2.lua" --dtype bf16 --head-dim 128 --group 4 --gpu-arch sm_80,sm_90 \
	       -o "$W/n.so" -v >/dev/null 2>"$W/err" && ! grep -q warning "$W/err" &&
	   grep -q "kvcc: GPU config .* (KVCC_GPU_CONFIG)" "$W/err"; then
		ok "GPU config $1, $2: NVRTC compiles it (sm_80, sm_90)"
	else
		no "GPU config $1, $2: NVRTC compiles it (sm_80, sm_90)"
	fi
}
if ! "$KVCC" compile policies/h2o.lua --gpu-arch sm_80 -o "$W/probe.so" 2>"$W/err" >/dev/null &&
   grep -q 'NVRTC\|nvrtc' "$W/err"; then
	skip=$((skip + 1)); echo "SKIP the static model: no NVRTC ($(head -1 "$W/err"))"
else
	P=policies/h2o.lua
	if "$KVCC" tune $P --dtype f32 --head-dim 64 --group 2 --gpu-arch sm_80 --gpu-only -v >"$W/out" 2>"$W/err" &&
	   grep -q 'nothing was measured on a GPU' "$W/out" && grep -q '^GPU static pick for sm_80: ' "$W/out"; then
		ok "kvcc tune --gpu-only: static model, says nothing was measured"
	else
		cat "$W/out" >>"$W/err"; no "kvcc tune --gpu-only: static model, says nothing was measured"
	fi
	pick=$(sed -n 's/^GPU static pick for sm_80: \([^ ]*\) .*/\1/p' "$W/out")
	comp() { "$KVCC" compile $P --dtype f32 --head-dim 64 --group 2 --gpu-arch sm_80 -o "$W/p.so" -v 2>"$W/err" >/dev/null; }
	if [ -n "$pick" ] && comp && grep -q "kvcc: GPU config $pick (tuning database (static model, not measured))" "$W/err" &&
	   grep -q "kvcc:   GPU config $pick" "$W/err" && grep -aq "$pick" "$W/p.so"; then
		ok "compile --gpu-arch uses the static pick ($pick), the artifact records it"
	else
		no "compile --gpu-arch uses the static pick ($pick)"
	fi
	if KVCC_TUNE=0 comp && grep -q 'kvcc: GPU config .* (default)' "$W/err"; then ok "KVCC_TUNE=0: the default GPU config"
	else no "KVCC_TUNE=0: the default GPU config"; fi
	if KVCC_GPU_CONFIG=nt100 comp && grep -q "warning: GPU config 'nt100' (KVCC_GPU_CONFIG): GPU config nt100: must be" "$W/err" &&
	   grep -q 'kvcc: GPU config .* (default)' "$W/err"; then ok "bad KVCC_GPU_CONFIG: the default, said"
	else no "bad KVCC_GPU_CONFIG: the default, said"; fi
	[ -n "$pick" ] && emu "$pick" h2o 16
	if [ "$ALL" = all ]; then
		for p in h2o snapkv; do
			for c in nt128 nt512 lpt1 lpt8 lpt16 sq16,sk32 sq32,sk128 sq256,sk32 tt8 tt32 nt96,lpt16,sq48,sk24,tt3 \
			         st2 st3 nt512,sk128,st2; do
				nvrtc "$c" $p
			done
		done
	fi
fi

echo "tune-gpu: $pass passed, $fail failed, $skip skipped"
[ $fail = 0 ]
