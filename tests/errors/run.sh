#!/bin/sh
# Diagnostics golden tests: each tests/errors/NAME.lua (or DIR/NAME.lua) is a
# malformed or hostile policy; expect.tsv holds, per file, the exact one-line
# message `kvcc check` must print. The command must exit with status 1 (not a crash, not a hang:
# a 30 s limit), print exactly that one line, and nothing on stdout. `kvcc compile`
# goes through the same driver: it must print the same line and write no output.
# usage: tests/errors/run.sh KVCC
set -u
kvcc=$1
dir=$(dirname "$0")
tmp=${TMPDIR:-/tmp}/kvcc-errors.$$
mkdir -p "$tmp"
pass=0 fail=0
tab=$(printf '\t')
while IFS="$tab" read -r name expect; do
	timeout 30 "$kvcc" check "$dir/$name" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	got=$(cat "$tmp/err")
	lines=$(wc -l <"$tmp/err")
	if [ "$rc" -ne 1 ]; then
		echo "FAIL $name: exit status $rc (want 1)${got:+: $got}"
		fail=$((fail + 1))
	elif [ "$lines" -ne 1 ] || [ -s "$tmp/out" ]; then
		echo "FAIL $name: want exactly one line on stderr and nothing on stdout"
		fail=$((fail + 1))
	elif [ "$got" != "$expect" ]; then
		echo "FAIL $name:"
		echo "  want: $expect"
		echo "  got:  $got"
		fail=$((fail + 1))
	else
		rm -f "$tmp/out.so"
		KVCC_CACHE_DIR=off timeout 30 "$kvcc" compile "$dir/$name" -o "$tmp/out.so" >"$tmp/out" 2>"$tmp/cerr"
		if [ "$(cat "$tmp/cerr")" != "$expect" ] || [ -e "$tmp/out.so" ]; then
			echo "FAIL $name: kvcc compile says '$(cat "$tmp/cerr")' (kvcc check: '$expect')"
			fail=$((fail + 1))
		else
			pass=$((pass + 1))
		fi
	fi
done <"$dir/expect.tsv"
# Valid policies under awkward paths pass check, and their KIR (which names
# the source) prints and parses back: a '"' in the name, a path longer than
# Lua's chunk names.
long="$tmp/$(printf 'long_directory_name_%.0s' 1 2 3 4)"
mkdir -p "$long"
for p in "$tmp/quote\"name.lua" "$long/snapkv.lua"; do
	cp policies/snapkv.lua "$p"
	if ! timeout 30 "$kvcc" check "$p" >"$tmp/out" 2>"$tmp/err" || [ -s "$tmp/err" ] || [ -s "$tmp/out" ] ||
	   ! timeout 30 "$kvcc" dump "$p" >"$tmp/p.kir" 2>"$tmp/err" ||
	   ! timeout 30 "$kvcc" check "$tmp/p.kir" >"$tmp/out" 2>"$tmp/err"; then
		echo "FAIL valid policy at $p: $(cat "$tmp/err")"
		fail=$((fail + 1))
	else
		pass=$((pass + 1))
	fi
done
# What is not a file is one error line, at once (issue 10: a FIFO blocked forever): a FIFO
# as the policy (.lua, .kir) or the --inputs case, a directory.
mkfifo "$tmp/fifo.lua" "$tmp/fifo.kir" "$tmp/fifo.npz"
mkdir -p "$tmp/dir.lua"
for c in "check $tmp/fifo.lua|$tmp/fifo.lua: error: cannot read a FIFO (a file is needed)" \
         "check $tmp/fifo.kir|$tmp/fifo.kir: error: cannot read a FIFO (a file is needed)" \
         "run policies/snapkv.lua --inputs $tmp/fifo.npz|$tmp/fifo.npz: error: cannot read a FIFO (a file is needed)" \
         "check $tmp/dir.lua|$tmp/dir.lua: error: cannot read a directory (a file is needed)"; do
	args=${c%%|*} want=${c#*|}
	# shellcheck disable=SC2086
	timeout 10 "$kvcc" $args >"$tmp/out" 2>"$tmp/err"
	rc=$?
	if [ "$rc" -ne 1 ] || [ "$(cat "$tmp/err")" != "$want" ] || [ -s "$tmp/out" ]; then
		echo "FAIL kvcc $args: status $rc, want 1 and '$want', got '$(cat "$tmp/err")'"
		fail=$((fail + 1))
	else
		pass=$((pass + 1))
	fi
done
# --help and doc/cli.md agree: every option and command --help names, and every
# KVCC_* variable the sources read, is documented there.
help=$("$kvcc" --help; "$kvcc" eval --help)
for w in $(printf '%s\n' "$help" | grep -oE '(^|[ [])--?[a-z][a-z0-9-]*' | tr -d ' [' | sort -u) \
         $(printf '%s\n' "$help" | sed -n 's/^  \([a-z]*\) .*/\1/p') \
         $(grep -rhoE 'getenv\("KVCC_[A-Z0-9_]+' compiler runtime codegen dsl | sed 's/getenv("//' | sort -u); do
	if grep -qe "$w" doc/cli.md; then
		pass=$((pass + 1))
	else
		echo "FAIL doc/cli.md does not mention '$w' (kvcc --help or the sources do)"
		fail=$((fail + 1))
	fi
done
for f in "$dir"/*.lua; do
	grep -q "^$(basename "$f")$tab" "$dir/expect.tsv" || { echo "FAIL $(basename "$f"): no expected message"; fail=$((fail + 1)); }
done
rm -rf "$tmp"
echo "diagnostics: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
