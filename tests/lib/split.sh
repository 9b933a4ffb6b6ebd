#!/bin/sh
# Issue 13 (session 11): the x86 kernels compiled in two modules on two threads (KVCC_X86_THREADS=2,
# codegen/x86/emit.c kx_emitsplit) give every kernel the same machine code as one module
# (KVCC_X86_THREADS=1), policy.so exports the same symbols, and examples/compress prints the same.
#   tests/lib/split.sh BUILD_DIR
B=${1:-build}
pass=0 fail=0 skip=0
t() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL split: $1"; fi; }
if ! command -v objdump >/dev/null 2>&1 || ! command -v nm >/dev/null 2>&1; then
	echo "SKIP split: no objdump / nm (binutils) to compare the machine code"
	exit 0
fi
D=$(mktemp -d /tmp/kvcc-split-XXXXXX)
export KVCC_CACHE_DIR=off
# the kvcc_* functions' instructions, addresses and symbol offsets masked (the two link layouts differ)
code() { objdump -d --no-show-raw-insn "$1" | awk '/^[0-9a-f]+ <kvcc_/ { name = $2; next }
	/^[0-9a-f]+ </ { name = "" }
	name != "" && /^ / && !/\tnop|\tdata16|\tint3|\txchg +%ax,%ax|\tcs nopw/ { sub(/^ *[0-9a-f]+:\t/, ""); gsub(/0x[0-9a-f]+/, "X");
	  gsub(/[0-9a-f]+ <[^>]*>/, "T"); print name, $0 }' | sort -s -k1,1; }
for c in "snapkv_merge" "snapkv --dtype bf16 --head-dim 128 --group 4" "lagkv --dtype f16 --head-dim 64 --group 2"; do
	p=${c%% *} a=${c#"$p"}
	n="$p$a"
	t "$n: one module compiles" 'KVCC_X86_THREADS=1 "$B/kvcc" compile policies/$p.lua -o "$D/one.so" $a -v 2>"$D/one.log"'
	t "$n: two threads compile" 'KVCC_X86_THREADS=2 "$B/kvcc" compile policies/$p.lua -o "$D/two.so" $a -v 2>"$D/two.log"'
	t "$n: -v says the two threads" 'grep -q "x86: two threads" "$D/two.log" && ! grep -q "x86: two threads" "$D/one.log"'
	code "$D/one.so" >"$D/one.s"
	code "$D/two.so" >"$D/two.s"
	t "$n: the kernels are there" '[ $(awk "{print \$1}" "$D/one.s" | sort -u | wc -l) -ge 20 ]'
	t "$n: every kernel the same machine code" 'cmp -s "$D/one.s" "$D/two.s" || { diff "$D/one.s" "$D/two.s" | head -5; false; }'
	t "$n: the same exported symbols" '[ "$(nm -D --defined-only "$D/one.so" | awk "{print \$3}")" = "$(nm -D --defined-only "$D/two.so" | awk "{print \$3}")" ]'
	if [ "$a" = " --dtype bf16 --head-dim 128 --group 4" ]; then   # examples/compress's cache
		t "$n: examples/compress prints the same" '"$B/compress" "$D/one.so" >"$D/one.out" && "$B/compress" "$D/two.so" >"$D/two.out" && cmp -s "$D/one.out" "$D/two.out"'
	fi
done
echo "split: $pass passed, $fail failed"
[ $fail -eq 0 ] && rm -rf "$D"
[ $fail -eq 0 ]
