#!/bin/sh
# tests/tune/points.sh DIFF_TESTS DECODE_TESTS WORKDIR [all] — config points of the x86 kernels
# (codegen/x86/cfg.c) through the differential matrix: each point is set with $KVCC_CONFIG
# and a slice of tests/diff's compress matrix (diff_tests) and decode matrix (decode_tests)
# runs with it; the expected values come from the reference interpreter, as for the default.
# A point that the driver refuses (a warning: it would silently test the default) fails.
#   without `all`: a sample that covers every field (make check)
#   with `all`:    every score point the tuner can pick (query block 1..8 × token vectors
#                  1, 2, 4 × 512/256-bit × bf16 dot / f32) and every value of the other
#                  fields (make check-tune)
# Per-bucket compress kernels (issue 15, doc/tune.md "Per-bucket picks"): with $KVCC_CONFIG_BUCKETS
# a point is built as a variant for bucket 1 (4096..16383 tokens) beside the main config, and the
# matrix runs at capacity 4097 (KVCC_DIFF_N): the heads hold 4097 - 2k tokens, so head 0 runs the
# variant's score kernels and the others the main's, in one compress call.
# The bf16 score points run with amx0 (on an AMX host the default's Q·K is AMX, which has no
# register block); amx1 (the AMX tile, where kx_amx allows it) runs in the sample.
set -u
EXPWS= EXPNT= BUCKETS= DIFFN=
DIFF=$1 DEC=$2 W=$3 ALL=${4:-}
rm -rf "$W" && mkdir -p "$W"
export KVCC_CACHE_DIR="$W/cache"
pass=0 fail=0
run() {   # run CONFIG PROGRAM FILTER
	out=$(KVCC_EXPWS=${EXPWS:-} KVCC_EXPNT=${EXPNT:-} KVCC_CONFIG_BUCKETS=${BUCKETS:-} KVCC_DIFF_N=${DIFFN:-} \
	      KVCC_CONFIG=$1 "$2" "$3" 2>"$W/err")
	sum=$(printf '%s\n' "$out" | tail -1)
	if grep -q 'warning' "$W/err" || printf '%s\n' "$out" | grep -q '^FAIL' || ! printf '%s\n' "$sum" | grep -q ' 0 failed'; then
		fail=$((fail + 1))
		echo "FAIL config $1${BUCKETS:+ buckets $BUCKETS n=$DIFFN}, $(basename "$2") '$3': $sum"
		printf '%s\n' "$out" | grep '^FAIL' | head -5
		head -3 "$W/err"
	elif printf '%s\n' "$sum" | grep -q '^0 passed\|: 0 passed'; then
		fail=$((fail + 1))
		echo "FAIL config $1, $(basename "$2") '$3': no case matched"
	else
		pass=$((pass + 1))
	fi
}
if [ -z "$ALL" ]; then
	for c in qb4,nv2,pf64,rb8,dt1.4.2.8,dm64,amx0 w8,qb3,nv4,dot0,rb12,pf16,dt4,dm1024 qb8,nv1,rb10,pf256,dt8,dm16,amx1; do
		run $c "$DIFF" "snapkv bf16 d=128"
		run $c "$DIFF" "snapkv f32 d=96 G=2"
		run $c "$DIFF" "tova f16 d=64 G=4 native"
		run $c "$DEC" "bf16 d=128 G=4"
	done
	# the score phase's two-pass path (Q·K and exp recomputed; no exponential workspace: doc/tune.md
	# "One exp per logit"), with and without AMX
	EXPWS=0
	for c in amx1 amx0,dot0; do
		run $c "$DIFF" "snapkv bf16 d=128"
		run $c "$DIFF" "tova f16 d=64 G=4 native"
	done
	# a workspace smaller than the head (10 KiB: the first tiles one pass, the tail two passes;
	# runtime/compress.c attnscore1); then the kept exponentials written non-temporally (sstate's
	# nq < 0, KVCC_ABI 17), which the matrix's short heads never reach at the default threshold
	for ws in "0.01 " " 0"; do
		EXPWS=${ws% *} EXPNT=${ws#* }
		for c in amx1 amx0,dot0; do
			run $c "$DIFF" "snapkv bf16 d=128"
			run $c "$DIFF" "snapkv f32"
		done
	done
	EXPWS= EXPNT=
	# per-bucket variants: bucket 1 runs another score point than the main config (the f32 block
	# beside the AMX tile and the other way round: the plan asks for the tile state, the variant
	# gets the bf16 query rows; 256-bit beside 512-bit), one case each
	DIFFN=4097
	BUCKETS="1=amx0,dot0,qb4,nv2" run default "$DIFF" "snapkv bf16 d=128 G=4 native"
	BUCKETS="1=amx1" run amx0,dot0 "$DIFF" "snapkv bf16 d=128 G=4 native"   # AMX in the variant only
	BUCKETS="1=w8,qb3,nv4,pf0" run qb5,nv2 "$DIFF" "snapkv f32 d=96 G=2 native"
	DIFFN=
else
	for w in 16 8; do
		for dot in 1 0; do
			[ $w = 8 ] && [ $dot = 1 ] && continue
			for qb in 1 2 3 4 5 6 7 8; do
				for nv in 1 2 4; do
					run w$w,dot$dot,qb$qb,nv$nv,amx0 "$DIFF" "snapkv bf16 d=128 G=2 native"
					[ $dot = 0 ] && run w$w,qb$qb,nv$nv "$DIFF" "snapkv f32 d=64 G=4 native"
				done
			done
		done
	done
	# every value of every score field as a bucket-1 variant at n = 4097 (the main config the default)
	DIFFN=4097
	for v in qb1,nv4 qb2,nv4 qb3,nv4 qb5,nv4 qb7,nv4 qb8,nv1 qb8,nv2 w8,qb4,nv2 w8,dot0,qb6,nv1 dot0,qb6,nv4; do
		BUCKETS="1=$v,amx0" run default "$DIFF" "snapkv bf16 d=128 G=2 native"
		case $v in *dot0*) BUCKETS="1=$v" run default "$DIFF" "snapkv f32 d=64 G=4 native";; esac
	done
	DIFFN=
	for rb in 8 9 10 12; do run rb$rb "$DIFF" "snapkv f32 d=96"; done
	for pf in 16 64 256 1024; do run pf$pf "$DEC" "bf16 d=128 G=4"; run pf$pf "$DEC" "f32 d=96 G=2"; done
	for s in dt1,dm16 dt4,dm64 dt8,dm1024 dt1.2.4.8,dm16.64.256.4096; do run $s "$DEC" "d=64 G=2"; done
fi
echo "tune-points: $pass passed, $fail failed"
[ $fail = 0 ]
