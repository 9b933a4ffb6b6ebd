#!/bin/sh
# Minimize a committed corpus: tests/fuzz/merge.sh DIR NAME
# Keeps the inputs of tests/fuzz/corpus/NAME and DIR/corpus-NAME (make fuzz's finds) that add
# coverage, smallest first, and writes them back to tests/fuzz/corpus/NAME (named by content
# hash; regression inputs named regress-* are always kept as they are).
set -eu
dir=$1 name=$2
here=$(cd "$(dirname "$0")" && pwd)
new="$dir/merged-$name"
rm -rf "$new" && mkdir -p "$new" "$dir/corpus-$name"
nice -n 10 "$dir/fuzz-$name" -merge=1 -timeout=10 -rss_limit_mb=2048 "$new" \
	"$here/corpus/$name" "$dir/corpus-$name" >"$dir/merge-$name.txt" 2>&1
find "$here/corpus/$name" -type f ! -name 'regress-*' ! -name 'seed-*' -delete
cp "$new"/* "$here/corpus/$name/" 2>/dev/null || true
# an input the merge kept that is byte-identical to a named one is dropped again
for f in "$here/corpus/$name"/regress-* "$here/corpus/$name"/seed-*; do
	[ -f "$f" ] || continue
	h=$(sha1sum "$f" | cut -d' ' -f1)
	rm -f "$here/corpus/$name/$h"
done
echo "fuzz-merge $name: $(ls "$here/corpus/$name" | wc -l) inputs, $(du -sk "$here/corpus/$name" | cut -f1) KB"
