#!/bin/sh
# kvcc compile and the compile cache, from the command line:
#   cold → "cache miss (...)", warm → "cache hit", another dtype → a miss that names the field,
#   a truncated artifact → a miss that rebuilds, two concurrent compiles → both succeed, one artifact;
#   a FIFO as the artifact, a directory as the lock, a full cache disk, and where -o writes
#   (a device, a FIFO, a directory, a path of 1,200+ characters).
# usage: cache_cli.sh KVCC WORKDIR
set -u
KVCC=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
W=$2
rm -rf "$W"
mkdir -p "$W"
export KVCC_CACHE_DIR="$W/cache"
pass=0 fail=0
t() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }
sealed() { [ "$(tail -c 8 "$1")" = KVCCTRL2 ]; }   # ends with the checksum trailer kvcc_open verifies
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
# issue 10, the cache's own files: a FIFO where the artifact should be is a miss (never a wait);
# a lock that is a directory (it cannot be removed) waits KVCC_CACHE_LOCK_TIMEOUT, then builds
art=$(ls "$KVCC_CACHE_DIR"/snapkv-bf16-*.so)
rm -f "$art" && mkfifo "$art"
t "a FIFO as the cached artifact is a miss, at once" 'timeout 60 "$KVCC" compile policies/snapkv.lua -o "$W/f.so" --dtype bf16 && [ -f "$art" ] && ! [ -p "$art" ]'
rm -rf "$art" "$art.lock" && mkdir "$art.lock"
t "a directory as the lock: built after the timeout" 'KVCC_CACHE_LOCK_TIMEOUT=2 timeout 30 "$KVCC" compile policies/snapkv.lua -o "$W/g.so" --dtype bf16 && [ -s "$W/g.so" ]'
rmdir "$art.lock"
# an empty lock that cannot be removed (a mount point: unlink fails with EBUSY; root only)
rm -f "$art" && : >"$W/empty" && : >"$art.lock"
if mount --bind "$W/empty" "$art.lock" 2>/dev/null; then
	t "an empty lock that cannot be removed: built after the timeout" 'KVCC_CACHE_LOCK_TIMEOUT=2 timeout 30 "$KVCC" compile policies/snapkv.lua -o "$W/h.so" --dtype bf16 && [ -s "$W/h.so" ]'
	umount "$art.lock"
else
	echo "SKIP an empty lock that cannot be removed: cannot bind-mount here (not root)"
fi
rm -f "$art.lock"
# a full cache disk (a 16 KiB tmpfs; root only): the compile writes -o, with one warning line
mkdir -p "$W/tiny"
if mount -t tmpfs -o size=16k tmpfs "$W/tiny" 2>/dev/null; then
	KVCC_CACHE_DIR="$W/tiny/cache" timeout 120 "$KVCC" compile policies/snapkv.lua -o "$W/full.so" --dtype bf16 --head-dim 64 --group 2 2>"$W/full.err"
	r=$?
	t "a full cache disk: -o written" '[ $r = 0 ] && sealed "$W/full.so"'
	t "a full cache disk: one warning line" '[ $(wc -l <"$W/full.err") = 1 ] && grep -q "warning: cache: cannot write" "$W/full.err"' || cat "$W/full.err"
	umount "$W/tiny"
else
	echo "SKIP full cache disk: cannot mount a tmpfs here (not root)"
fi
# the -o file (issue 10): a device node (or a symlink to one) is written through, never
# replaced; a FIFO without a reader and a directory are one error line, at once; a path of
# 1,200+ characters never cuts the temporary name (a cut name would be another file)
if mknod "$W/null" c 1 3 2>/dev/null; then
	t "-o a device node: written through, still the device" '"$KVCC" compile policies/snapkv.lua -o "$W/null" --dtype bf16 --head-dim 64 --group 2 && [ -c "$W/null" ]'
else
	echo "SKIP -o a device node: cannot mknod here (not root)"
fi
ln -s /dev/null "$W/link.so"
t "-o a symlink to /dev/null: the link stays" '"$KVCC" compile policies/snapkv.lua -o "$W/link.so" --dtype bf16 --head-dim 64 --group 2 && [ -L "$W/link.so" ] && [ -c /dev/null ]'
mkfifo "$W/fifo.so"
t "-o a FIFO: one error line, at once" '! timeout 30 "$KVCC" compile policies/snapkv.lua -o "$W/fifo.so" --dtype bf16 --head-dim 64 --group 2 2>"$W/e" && [ $(wc -l <"$W/e") = 1 ] && [ -p "$W/fifo.so" ]'
mkdir "$W/dir.so"
t "-o a directory: one error line" '! "$KVCC" compile policies/snapkv.lua -o "$W/dir.so" --dtype bf16 --head-dim 64 --group 2 2>"$W/e" && [ $(wc -l <"$W/e") = 1 ]'
long=$(printf './%.0s' $(seq 597))o.so      # 1,198 characters: a 1,200-byte buffer cut "o.so.tmp.PID" to "o.so."
echo precious >"$W/o.so."
top=$(pwd)
t "-o a 1,198-character path: written, the cut name untouched" '(cd "$W" && "$KVCC" compile "$top/policies/snapkv.lua" -o "$long" --dtype bf16 --head-dim 64 --group 2) && [ -s "$W/o.so" ] && [ "$(cat "$W/o.so.")" = precious ]'
long=$(printf './%.0s' $(seq 750))p.so
t "-o a 1,504-character path, cache off: written" '(cd "$W" && KVCC_CACHE_DIR=off "$KVCC" compile "$top/policies/snapkv.lua" -o "$long" --dtype bf16 --head-dim 64 --group 2) && sealed "$W/p.so"'
rm -rf "$W"
echo "cache cli: $pass passed, $fail failed"
[ $fail = 0 ]
