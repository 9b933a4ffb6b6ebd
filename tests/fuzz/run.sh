#!/bin/sh
# Run one libFuzzer harness for a while: tests/fuzz/run.sh DIR NAME SECONDS
# DIR holds fuzz-NAME (make fuzz builds it). New inputs go to DIR/corpus-NAME (the committed
# tests/fuzz/corpus/NAME is read, never written), crashes to DIR/crash-NAME-*. Prints the
# executions and the CPU time, and appends "NAME<TAB>seconds<TAB>cpu_s<TAB>execs<TAB>crashes"
# to DIR/stats.tsv. At low priority (nice 10): the machine is shared.
set -u
dir=$1 name=$2 secs=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/corpus-$name"
dict=""
[ -f "$here/$name.dict" ] && dict="-dict=$here/$name.dict"
log="$dir/log-$name.txt"
before=$(ls "$dir"/crash-"$name"-* "$dir"/timeout-"$name"-* "$dir"/leak-"$name"-* "$dir"/oom-"$name"-* 2>/dev/null | wc -l)
/usr/bin/time -f "%U %S" -o "$dir/time-$name.txt" nice -n 10 "$dir/fuzz-$name" \
	-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=8192 \
	-print_final_stats=1 $dict \
	-artifact_prefix="$dir/crash-$name-" "$dir/corpus-$name" "$here/corpus/$name" >"$log" 2>&1
rc=$?
cpu=$(tail -1 "$dir/time-$name.txt" 2>/dev/null | awk '{ printf "%.1f", $1 + $2 }')
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
after=$(ls "$dir"/crash-"$name"-* "$dir"/timeout-"$name"-* "$dir"/leak-"$name"-* "$dir"/oom-"$name"-* 2>/dev/null | wc -l)
crashes=$((after - before))
printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$secs" "$cpu" "${execs:-0}" "$crashes" >>"$dir/stats.tsv"
echo "fuzz $name: ${execs:-0} execs, ${cpu} CPU seconds, $crashes new finding(s) (log: $log)"
if [ $rc -ne 0 ]; then
	grep -m1 -E 'ERROR|BUG|SUMMARY|Test unit written' "$log"
	exit 1
fi
