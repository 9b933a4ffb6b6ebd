#!/bin/sh
# Two builds of the same sources: a policy.so compiled by one build loads and runs in the runtime
# of the other, both ways. The second build is a copy of this checkout's files (git's tracked and
# untracked-but-not-ignored ones) built later, so its compiler has another build time (the compile
# cache keys on it: the test checks that its miss names it) — the runtime checks the artifact's
# format, ABI, specialization and CPU features only.
#   tests/lib/twice.sh BUILD_DIR
set -u
B=${1:-build}
S=$B/second
pass=0 fail=0
t() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL twice: $1"; fi; }
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo "SKIP twice: not a git checkout (the second build copies git's file list)"
	exit 0
fi
rm -rf "$S"
mkdir -p "$S"
git ls-files -z -co --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$S" || { echo "FAIL twice: copy"; exit 1; }
sleep 1                                  # another __TIME__ for the second compiler
if ! make -C "$S" B=build -j2 build/kvcc build/compress >"$S/make.log" 2>&1; then
	tail -20 "$S/make.log"; echo "FAIL twice: the second build"; exit 1
fi
export KVCC_CACHE_DIR="$(cd "$S" && pwd)/cache"
spec="--dtype bf16 --head-dim 128 --group 4"
t "build one compiles" '"$B/kvcc" compile policies/snapkv.lua -o "$S/one.so" $spec -v 2>"$S/one.log"'
t "build two compiles" '"$S/build/kvcc" compile policies/snapkv.lua -o "$S/two.so" $spec -v 2>"$S/two.log"'
t "build two is another compiler build (its cache miss names the build)" 'grep -q "cache miss.*build (cached" "$S/two.log"'
t "the runtime of build two runs the policy.so of build one" '"$S/build/compress" "$S/one.so" >"$S/run21.log"'
t "the runtime of build one runs the policy.so of build two" '"$B/compress" "$S/two.so" >"$S/run12.log"'
t "both runs print the same" 'cmp -s "$S/run21.log" "$S/run12.log"'
echo "twice: $pass passed, $fail failed"
[ $fail -eq 0 ] && rm -rf "$S"
[ $fail -eq 0 ]
