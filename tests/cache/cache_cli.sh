#!/bin/sh
# kvcc compile and the compile cache, from the command line:
#   cold → "cache miss (...)", warm → "cache hit", another dtype → a miss that names the field,
#   a truncated artifact → a miss that rebuilds, two concurrent compiles → both succeed, one artifact.
# usage: cache_cli.sh KVCC WORKDIR
set -u
KVCC=$1
W=$2
rm -rf "$W"
mkdir -p "$W"
export KVCC_CACHE_DIR="$W/cache"
pass=0 fail=0
t() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }
c() { "$KVCC" compile policies/snapkv.lua -o "$W/$1.so" --dtype "$2" --head-dim 64 --group 2 -v 2>&1; }
t "cold compile says miss" 'c a bf16 | grep -q "cache miss (no artifact of this policy"'
t "warm compile says hit" 'c b bf16 | grep -q "cache hit"'
t "dtype change is a miss naming the field" 'c c f32 | grep -q "differs in dtype (cached bf16, wanted f32)"'
art=$(ls "$KVCC_CACHE_DIR"/snapkv-bf16-*.so)
head -c 1000 "$art" > "$W/trunc" && mv "$W/trunc" "$art"
t "truncated artifact is a miss that rebuilds" 'c d bf16 | grep -q "cache miss (truncated"'
t "rebuilt artifact is a hit" 'c e bf16 | grep -q "cache hit"'
rm -rf "$KVCC_CACHE_DIR"
"$KVCC" compile policies/snapkv.lua -o "$W/p1.so" --dtype bf16 & p1=$!
"$KVCC" compile policies/snapkv.lua -o "$W/p2.so" --dtype bf16 & p2=$!
wait $p1; r1=$?
wait $p2; r2=$?
t "two concurrent compiles both succeed" '[ $r1 = 0 ] && [ $r2 = 0 ] && [ -s "$W/p1.so" ] && [ -s "$W/p2.so" ]'
t "one artifact, no lock or temp file left" '[ $(ls "$KVCC_CACHE_DIR" | wc -l) = 1 ] && [ $(ls -a "$KVCC_CACHE_DIR" | grep -c -e lock -e tmp) = 0 ]'
rm -rf "$W"
echo "cache cli: $pass passed, $fail failed"
[ $fail = 0 ]
