#!/bin/sh
# The policy manifest tests/policies.tsv is complete and well formed: every policies/*.lua
# has a line; every line has six columns, names an existing file, a known oracle and known
# matrices; names are unique. Part of check-golden.
#   tests/manifest.sh
m=tests/policies.tsv
fail=0
bad() { echo "FAIL manifest: $1"; fail=$((fail + 1)); }
for p in policies/*.lua; do
	awk -v f="$p" '!/^#/ && $2 == f { found = 1 } END { exit !found }' "$m" || bad "$p has no line in $m"
done
awk '!/^#/ && NF' "$m" >"${TMPDIR:-/tmp}/kvcc-manifest.$$"
while read -r name file oracle obs matrices params extra; do
	[ -n "$params" ] && [ -z "$extra" ] || { bad "$name: expected 6 columns"; continue; }
	[ -f "$file" ] || bad "$name: no file $file"
	case $oracle in kvref|kvref.topk|decode_ref|mergeref|selref|-) ;; *) bad "$name: unknown oracle '$oracle'" ;; esac
	for x in $(echo "$matrices" | tr ',' ' '); do
		case $x in golden|diff|chunk|decode|noalloc|emu|emufull|difffull) ;; *) bad "$name: unknown matrix '$x'" ;; esac
	done
	case ",$matrices," in *,golden,*) [ "$oracle" != - ] || bad "$name: golden without an oracle" ;; esac
done <"${TMPDIR:-/tmp}/kvcc-manifest.$$"
dups=$(cut -f1 -d' ' "${TMPDIR:-/tmp}/kvcc-manifest.$$" | sort | uniq -d)
[ -z "$dups" ] || bad "names listed twice: $dups"
rm -f "${TMPDIR:-/tmp}/kvcc-manifest.$$"
echo "manifest: $(grep -cv '^#' "$m") policies, $fail problems"
[ "$fail" -eq 0 ]
