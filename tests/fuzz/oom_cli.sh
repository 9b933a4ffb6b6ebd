#!/bin/sh
# The kvcc command when memory runs out or a file never ends, under a 3 GB address-space
# limit (ulimit -v 3000000): each run must exit with status 1 and one error line, never
# abort or crash. usage: tests/fuzz/oom_cli.sh KVCC
set -u
kvcc=$1
tmp=${TMPDIR:-/tmp}/kvcc-oom-cli.$$
mkdir -p "$tmp"
pass=0 fail=0
# check NAME WANT-SUBSTRING COMMAND...
check() {
	name=$1 want=$2
	shift 2
	(ulimit -v 3000000; "$@") >"$tmp/out" 2>"$tmp/err"
	rc=$?
	if [ "$rc" -ne 1 ] || [ "$(wc -l <"$tmp/err")" -ne 1 ] || ! grep -q "error: .*$want" "$tmp/err"; then
		echo "FAIL $name: status $rc (want 1), stderr: $(head -c 300 "$tmp/err")"
		fail=$((fail + 1))
	else
		pass=$((pass + 1))
	fi
}
ln -sf /dev/zero "$tmp/zero.kir"
check "check /dev/zero" "file too large" "$kvcc" check /dev/zero
check "dump zero.kir" "file too large" "$kvcc" dump "$tmp/zero.kir"
check "compile /dev/zero" "file too large" "$kvcc" compile /dev/zero -o "$tmp/x.so"
check "run --inputs /dev/zero" "out of memory" "$kvcc" run policies/snapkv.lua --inputs /dev/zero
rm -rf "$tmp"
echo "out of memory (command line): $pass passed, $fail failed"
[ "$fail" -eq 0 ]
