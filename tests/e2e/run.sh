#!/bin/sh
# tests/e2e/run.sh - end to end: the llama example and `kvcc eval` on the shipped checkpoint,
# through libkvcc (make check-e2e).
#
# usage: tests/e2e/run.sh BUILD_DIR PYTHON DATA_DIR
#
# Every expected value comes from ../shared/data/README.md or from the independent numpy
# oracle tests/oracle/eval_ref.py (run here, in this test run) - never from kvcc's own output.
# Prints one line per check and "N passed, N failed"; exits 1 when a check failed.

B=${1:-build}
PY=${2:-/usr/bin/python3}
DATA=${3:-../shared/data}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KVCC=$B/kvcc
LLAMA=$B/llama
MODEL=$DATA/stories260K.bin
TOKZ=$DATA/tok512.bin
STORIES=$DATA/tinystories_valid_70.txt
ALICE=$DATA/alice_in_wonderland_pg11.txt
ORACLE=$ROOT/tests/oracle
export KVCC_DATA=$DATA

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS $1${2:+: $2}"; }
ko() { fail=$((fail + 1)); echo "FAIL $1${2:+: $2}"; }
check() { if [ "$3" -eq 0 ]; then ok "$1" "$2"; else ko "$1" "$2"; fi; }
# bad DETAIL: 0 when DETAIL does not end in BAD
bad() { case "$1" in *BAD) return 1 ;; *) return 0 ;; esac; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kvcc-e2e.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT INT TERM
t0=$(date +%s)
# a compile cache of this run's own: nothing stale from elsewhere, nothing left behind
KVCC_CACHE_DIR=$TMP/cache
export KVCC_CACHE_DIR

for f in "$KVCC" "$LLAMA" "$MODEL" "$TOKZ" "$STORIES" "$ALICE"; do
    [ -e "$f" ] || { echo "FAIL missing $f"; echo "0 passed, 1 failed"; exit 1; }
done
if ! "$PY" -c 'import numpy' 2>/dev/null; then
    echo "FAIL PYTHON='$PY' has no numpy (the oracle needs it)"
    echo "0 passed, 1 failed"
    exit 1
fi

L() { "$LLAMA" --model "$MODEL" --tokenizer "$TOKZ" "$@"; }
EV() { "$KVCC" eval --model "$MODEL" --tokenizer "$TOKZ" "$@"; }

# ---- the README's reference numbers through libkvcc (kvcc_cache + kvcc_decode_layer) ----
README_IDS="403 407 261 378 432 383 286 261 376 298 315 421 395 317 426 338 401 396 267 337 410 408 419 292 411 322 265 282 295 433 426 385 328 432 358 394 261 370 432 352"
README_TOP5="403 17.0235
385 15.4062
410 13.1083
317 12.7692
407 12.4181"
for attn in kvcc ref; do
    got=$(L --attn $attn generate --steps 40 --ids 2>&1)
    [ "$got" = "$README_IDS" ]; check "[$attn attention] greedy 40 token ids after BOS (README)" "" $?
    L --attn $attn logits > "$TMP/top5" 2>&1
    echo "$README_TOP5" > "$TMP/top5.ref"
    detail=$(awk 'NR==FNR { id[FNR] = $1; v[FNR] = $2; next }
                  { if ($1 != id[FNR]) b = 1; d = $2 - v[FNR]; if (d < 0) d = -d; if (d > m) m = d; n++ }
                  END { printf "max |diff| %.2e%s", m, (b || n != 5 || m >= 1e-3) ? " BAD" : "" }' \
             "$TMP/top5.ref" "$TMP/top5")
    bad "$detail"; check "[$attn attention] top-5 logits at pos 0 within 1e-3 (README)" "$detail" $?
    line=$(L --attn $attn nll --data "$STORIES" 2>&1 | tail -n 1)
    detail=$(echo "$line" | awk '{ d = $10 - 1.2894; if (d < 0) d = -d;
        printf "%s stories, %s predictions, nll %s, %s s%s", $2, $8, $10, $14,
               ($2 != 70 || $8 != 22510 || $10 == "" || d > 5e-4) ? " BAD" : "" }')
    bad "$detail"; check "[$attn attention] mean NLL over tinystories_valid_70 = 1.2894 +- 5e-4 (README)" "$detail" $?
done

# ---- kvcc eval --weights: duo's head ranks [layer 5, head 4] from an .npz through the compiled
# policy (weights, threshold); a missing weight and a wrong shape are one-line errors (a smoke test:
# duo's numbers have no oracle here) ---------------------------------------------------------------
"$PY" -c "import numpy as np, sys; np.savez(sys.argv[1], duo_rank=np.arange(20.0).reshape(5, 4)); \
np.savez(sys.argv[2], duo_rank=np.zeros((5, 3)))" "$TMP/duo.npz" "$TMP/bad.npz"
EV "$ROOT/policies/duo.lua" --data "$STORIES" --stories 0:2 --ratios 0,0.5 --weights "$TMP/duo.npz" \
    > "$TMP/duo.out" 2> "$TMP/duo.err"
rc=$?
check "kvcc eval --weights runs duo" "rc $rc $(head -c 300 "$TMP/duo.err")" $rc
EV "$ROOT/policies/duo.lua" --data "$STORIES" --stories 0:2 > /dev/null 2> "$TMP/duo.err"
rc=$?
[ $rc -ne 0 ] && grep -q "declares weight 'duo_rank': give it with --weights" "$TMP/duo.err"
check "kvcc eval without duo's weight: an error" "rc $rc $(head -c 300 "$TMP/duo.err")" $?
EV "$ROOT/policies/duo.lua" --data "$STORIES" --stories 0:2 --weights "$TMP/bad.npz" > /dev/null 2> "$TMP/duo.err"
rc=$?
[ $rc -ne 0 ] && grep -q "duo.lua:10:24: error: weight 'duo_rank' has shape (5, 3)" "$TMP/duo.err"
check "kvcc eval with a weight of the wrong shape: an error at the declaration" "rc $rc $(head -c 300 "$TMP/duo.err")" $?

# ---- kvcc eval == eval_ref.py (numpy) on stories 0-5, ratios 0 / 0.25 / 0.5 -----------------
# adakv: the floor at scope layer; prefixkv_bisect, dynamickv: the model schedules
POLS="streaming_llm knorm snapkv tova observed_attention adakv prefixkv_bisect dynamickv"
RANGE=0:6
RATIOS=0,0.25,0.5
args=""
for p in $POLS; do args="$args $ROOT/policies/$p.lua"; done
# shellcheck disable=SC2086
EV $args --data "$STORIES" --stories $RANGE --ratios $RATIOS --param window=16 \
    --csv "$TMP/ev.csv" > "$TMP/ev.out" 2> "$TMP/ev.err"
rc=$?
check "kvcc eval of 8 policies runs" "rc $rc $(head -c 300 "$TMP/ev.err")" $rc
for p in $POLS; do
    case $p in snapkv|tova|adakv|dynamickv) par="--param window=16" ;; *) par="" ;; esac
    # shellcheck disable=SC2086
    "$PY" "$ORACLE/eval_ref.py" --data "$STORIES" --policy $p --ratios $RATIOS --stories $RANGE $par \
        > "$TMP/ref.$p" 2>&1
    for r in 0.25 0.5 0; do
        detail=$(awk -F'[ ,]' -v p=$p -v r=$r '
            NR==FNR { if ($1 == p && $2 == r) { ref = $6; rn = $5 }; next }
            $1 == p && $2 == r { got = $6; gn = $5; gs = $4 }
            END { d = got - ref; if (d < 0) d = -d;
                  printf "kvcc %s, oracle %s, |diff| %.1e, %s predictions%s", got, ref, d, gn,
                         (got == "" || ref == "" || gn != rn || gs != 6 || d > 1e-3) ? " BAD" : "" }' \
            "$TMP/ref.$p" "$TMP/ev.csv")
        bad "$detail"; check "eval $p ratio $r == eval_ref.py within 1e-3 NLL" "$detail" $?
    done
done
# ---- merge rules on the x86 kernels: kvcc eval == eval_merge.py (numpy, mergeref.py) ----------
# snapkv_merge (nearest, cosine, mean), mergingpress (values only, weights of each row's norm) and
# kmeans (decode: H2O's selection, 4 k-means summary rows updated online at every step)
MPOLS="snapkv_merge mergingpress kmeans"
EV "$ROOT/policies/snapkv_merge.lua" "$ROOT/policies/mergingpress.lua" "$ROOT/policies/kmeans.lua" --data "$STORIES" --stories 0:4 \
    --ratios 0.5 --param window=16 --csv "$TMP/evm.csv" > "$TMP/evm.out" 2> "$TMP/evm.err"
rc=$?
check "kvcc eval of 3 merge policies runs" "rc $rc $(head -c 300 "$TMP/evm.err")" $rc
"$PY" "$ORACLE/eval_merge.py" --data "$STORIES" --policies snapkv_merge,mergingpress,kmeans --ratios 0.5 --stories 0:4 \
    --param window=16 > "$TMP/refm" 2>&1
for p in $MPOLS; do
    detail=$(awk -F'[ ,]' -v p=$p '
        NR==FNR { if ($1 == p && $2 == 0.5) { ref = $6; rn = $5 }; next }
        $1 == p && $2 == 0.5 { got = $6; gn = $5; gs = $4 }
        END { d = got - ref; if (d < 0) d = -d;
              printf "kvcc %s, oracle %s, |diff| %.1e, %s predictions%s", got, ref, d, gn,
                     (got == "" || ref == "" || gn != rn || gs != 4 || d > 1e-3) ? " BAD" : "" }' \
        "$TMP/refm" "$TMP/evm.csv")
    bad "$detail"; check "eval $p (merge on x86) ratio 0.5 == eval_merge.py within 1e-3 NLL" "$detail" $?
done
# ratio 0 keeps everything: every policy gives the same number (the uncompressed model)
detail=$(awk -F, '$2 == "0" { v[$6] = 1; n++ } END { k = 0; for (x in v) k++;
         printf "%d policies, %d distinct values%s", n, k, (n != 8 || k != 1) ? " BAD" : "" }' "$TMP/ev.csv")
bad "$detail"; check "ratio 0 is the same uncompressed NLL for every policy" "$detail" $?
head -n 1 "$TMP/ev.csv" > "$TMP/hdr"
[ "$(cat "$TMP/hdr")" = "policy,ratio,window,stories,predictions,nll" ]
check "--csv columns policy,ratio,window,stories,predictions,nll" "$(cat "$TMP/hdr")" $?
grep -q '^snapkv .* 16 ' "$TMP/ev.out" && grep -q '^observed_attention .* all ' "$TMP/ev.out" &&
    grep -q '^knorm .* - ' "$TMP/ev.out"
check "table window column: 16 (--param window=16), all (obs = kvcc.all), - (no queries)" "" $?

# the thread count changes nothing
EV "$ROOT/policies/snapkv.lua" "$ROOT/policies/knorm.lua" --data "$STORIES" --stories 6:10 \
    --ratios 0.5 --param window=8 --threads 1 --csv "$TMP/t1.csv" > /dev/null 2>&1
EV "$ROOT/policies/snapkv.lua" "$ROOT/policies/knorm.lua" --data "$STORIES" --stories 6:10 \
    --ratios 0.5 --param window=8 --threads 3 --csv "$TMP/t3.csv" > /dev/null 2>&1
cmp -s "$TMP/t1.csv" "$TMP/t3.csv" && [ -s "$TMP/t1.csv" ]
check "same CSV with 1 and 3 threads" "" $?

# ---- a decode policy (H2O): observe hook in decode attention, budget floor(C(1-r)) + s --------
EV "$ROOT/policies/h2o.lua" "$ROOT/policies/streaming_llm.lua" --data "$STORIES" --stories 0:3 \
    --ratios 0,0.5,0.75 --csv "$TMP/h2o.csv" > "$TMP/h2o.out" 2>&1
rc=$?
detail=$(awk -F, '$1 == "h2o" { v[$2] = $6 } $1 == "streaming_llm" && $2 == "0" { s0 = $6 }
         END { printf "h2o %s / %s / %s, uncompressed %s%s", v["0"], v["0.5"], v["0.75"], s0,
               (v["0"] != s0 || !(v["0.75"] > v["0"]) || !(v["0.5"] > v["0"])) ? " BAD" : "" }' "$TMP/h2o.csv")
[ $rc -eq 0 ] && bad "$detail"
check "eval h2o (decode policy): ratio 0 == uncompressed, compression costs NLL" "$detail" $?

# ---- stories with a context not longer than the window are skipped, with a note -------------
EV "$ROOT/policies/snapkv.lua" --data "$STORIES" --stories 63:67 --ratios 0.5 \
    --csv "$TMP/skip.csv" > "$TMP/skip.out" 2>&1
grep -q '^note: snapkv skipped 1 of 4 stories .*(C <= 64): 65$' "$TMP/skip.out" &&
    grep -q '^snapkv,0.5,64,3,' "$TMP/skip.csv"
check "story 65 (97 tokens, C = 48 <= window 64) skipped with a note; 3 stories counted" \
    "$(grep '^note' "$TMP/skip.out")" $?

# ---- --chunk-chars: a plain text cut at line boundaries, each chunk a story -------------------
# the chunks written out by an independent few lines of Python, as a stories file
"$PY" - "$ALICE" 1500 "$TMP/chunks.txt" 2>/dev/null <<'PYEOF'
import sys
text = open(sys.argv[1], encoding="utf-8").read()
text = text[text.index("\nCHAPTER I.") + 1:]
K = int(sys.argv[2])
chunks, cur, n = [], [], 0
for line in text.splitlines(keepends=True):
    cur.append(line)
    n += len(line)
    if n >= K:
        chunks.append("".join(cur).strip("\n"))
        cur, n = [], 0
if "".join(cur).strip("\n"):
    chunks.append("".join(cur).strip("\n"))
chunks = [c for c in chunks if c]
open(sys.argv[3], "w", encoding="utf-8").write("".join(c + "\n<|endoftext|>\n" for c in chunks))
print(len(chunks), file=sys.stderr)
PYEOF
EV "$ROOT/policies/streaming_llm.lua" "$ROOT/policies/snapkv.lua" --data "$ALICE" --from "CHAPTER I." \
    --chunk-chars 1500 --stories 0:3 --ratios 0.5 --param window=16 --csv "$TMP/ch.csv" > /dev/null 2>&1
EV "$ROOT/policies/streaming_llm.lua" "$ROOT/policies/snapkv.lua" --data "$TMP/chunks.txt" \
    --stories 0:3 --ratios 0.5 --param window=16 --csv "$TMP/ch2.csv" > /dev/null 2>&1
"$PY" "$ORACLE/eval_ref.py" --data "$TMP/chunks.txt" --policy snapkv --ratios 0.5 --stories 0:3 \
    --param window=16 > "$TMP/ch.ref" 2>&1
detail=$(awk -F'[ ,]' 'NR==FNR { if ($1 == "snapkv") ref = $6; next }
         $1 == "snapkv" { got = $6; n = $4 }
         END { d = got - ref; if (d < 0) d = -d;
               printf "snapkv 0.5 on Alice chunks: kvcc %s, oracle %s%s", got, ref,
                      (got == "" || n != 3 || d > 1e-3) ? " BAD" : "" }' "$TMP/ch.ref" "$TMP/ch.csv")
cmp -s "$TMP/ch.csv" "$TMP/ch2.csv" && bad "$detail"
check "--from 'CHAPTER I.' --chunk-chars 1500 == the same chunks as a stories file == oracle" "$detail" $?

# ---- --plot: a PNG from gnuplot ---------------------------------------------------------------
EV "$ROOT/policies/knorm.lua" --data "$STORIES" --stories 0:2 --ratios 0,0.5 --plot "$TMP/p.png" \
    > /dev/null 2> "$TMP/plot.err"
rc=$?
magic=$(od -An -c -N4 "$TMP/p.png" 2>/dev/null | tr -d ' ')
[ $rc -eq 0 ] && [ "$magic" = '211PNG' ]
check "--plot writes a PNG (gnuplot)" "rc $rc $(head -c 200 "$TMP/plot.err")" $?

# ---- bad arguments: a clear message, exit status 2 (usage) or 1 (a file or policy) -----------
printf 'local kv = require "kvcc"\nreturn kv.policy "x" { score = function(x) return x.K:norm("chan") + end }\n' \
    > "$TMP/broken.lua"
printf 'a' > "$TMP/one.txt"      # one story of [BOS] + 1 token: no prediction (was a table of nan)
for c in "2|unknown option|$ROOT/policies/knorm.lua --data $STORIES --bogus" \
         "2|no policy given|--data $STORIES" \
         "2|needs --model|NOMODEL $ROOT/policies/knorm.lua --data $STORIES" \
         "2|--ratios wants|$ROOT/policies/knorm.lua --data $STORIES --ratios 0,1" \
         "2|--ratios wants|$ROOT/policies/knorm.lua --data $STORIES --ratios 0,,0.5" \
         "2|lists a ratio twice|$ROOT/policies/knorm.lua --data $STORIES --ratios 0.5,0.5" \
         "2|has no param 'window'|$ROOT/policies/knorm.lua --data $STORIES --param window=8" \
         "2|--param wants|$ROOT/policies/snapkv.lua --data $STORIES --param window=abc" \
         "2|no policy of that name|$ROOT/policies/snapkv.lua --data $STORIES --param tova.window=8" \
         "2|observation count must be|$ROOT/policies/snapkv.lua --data $STORIES --param window=2.5" \
         "2|bad --stories|$ROOT/policies/knorm.lua --data $STORIES --stories 5:2" \
         "2|--chunk-chars wants|$ROOT/policies/knorm.lua --data $ALICE --chunk-chars 0" \
         "2|ending in .png|$ROOT/policies/knorm.lua --data $STORIES --plot $TMP/x.txt" \
         "2|compiles the policy itself|$B/snapkv.so --data $STORIES" \
         "1|cannot open|$ROOT/policies/knorm.lua --data $TMP/nonexistent.txt" \
         "1|nothing to predict|$ROOT/policies/knorm.lua --data $TMP/one.txt" \
         "1|no line begins with|$ROOT/policies/knorm.lua --data $ALICE --from NOWHERE" \
         "1|broken.lua:2:.*error|$TMP/broken.lua --data $STORIES" \
         "1|nope.lua|$TMP/nope.lua --data $STORIES"; do
    want=${c%%|*}; rest=${c#*|}; msg=${rest%%|*}; cmdargs=${rest#*|}
    case $cmdargs in
    NOMODEL*) # shellcheck disable=SC2086
              "$KVCC" eval ${cmdargs#NOMODEL } > "$TMP/out" 2> "$TMP/err" ;;
    *) # shellcheck disable=SC2086
       EV $cmdargs > "$TMP/out" 2> "$TMP/err" ;;
    esac
    rc=$?
    [ $rc -eq "$want" ] && grep -q -- "$msg" "$TMP/err"
    check "kvcc eval error: $msg (exit $want)" "rc $rc: $(head -n 1 "$TMP/err")" $?
done

# ---- generation with a compressed cache (llama generate --policy) -----------------------------
PROMPT="Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high."
"$KVCC" compile "$ROOT/policies/snapkv.lua" -o "$TMP/snapkv.so" --dtype f32 --head-dim 8 --group 2 \
    > /dev/null 2>&1
L generate --steps 40 --prompt "$PROMPT" --policy "$TMP/snapkv.so" --ratio 0.75 --param window=8 \
    > "$TMP/gen.out" 2> "$TMP/gen.err"
rc=$?
detail=$(grep -o 'compressed from [0-9]* to [0-9]* rows.*' "$TMP/gen.err" | head -c 200)
ok_bytes=$(sed -n 's/.* \([0-9]*\) bytes allocated before, \([0-9]*\) after.*/\1 \2/p' "$TMP/gen.err" |
           awk '{ print ($2 < $1) ? 0 : 1 }')
[ $rc -eq 0 ] && grep -q 'compressed from 62 to 15 rows per head' "$TMP/gen.err" &&
    [ "$ok_bytes" = 0 ] && [ "$(wc -c < "$TMP/gen.out")" -gt 200 ]
check "generate --policy snapkv.so (kvcc compile) --ratio 0.75: 62 -> 15 rows, fewer bytes" "$detail" $?
# policies that read no queries (knorm) or every position (observed_attention, obs = kvcc.all):
# the observation count comes from kvcc_policy_obs, not from a `window` param
for pol in knorm observed_attention; do
    L generate --steps 10 --prompt "$PROMPT" --policy "$ROOT/policies/$pol.lua" --ratio 0.5 \
        > /dev/null 2> "$TMP/gen.err"
    rc=$?
    detail=$(grep -o 'compressed from [0-9]* to [0-9]* rows' "$TMP/gen.err" | head -c 200)
    [ $rc -eq 0 ] && [ "$detail" = "compressed from 62 to 31 rows" ]
    check "generate --policy $pol.lua --ratio 0.5: 62 -> floor(62 * 0.5) = 31 rows" "rc $rc: $detail" $?
done
L generate --steps 120 --policy "$ROOT/policies/h2o.lua" --ratio 0.75 > "$TMP/h2o.gen" 2> "$TMP/h2o.err"
rc=$?
detail=$(sed -n 's/.*budget \([0-9]*\) rows per head.*holds \([0-9]*\) rows now.*/budget \1, holds \2/p' "$TMP/h2o.err")
[ $rc -eq 0 ] && echo "$detail" | awk -F'[ ,]+' '{ exit !($2 == 30 && $4 <= 30) }'
check "generate --policy h2o.lua --ratio 0.75 (decode): cache within floor(121 * 0.25) = 30 rows" "$detail" $?
"$KVCC" compile "$ROOT/policies/knorm.lua" -o "$TMP/knorm128.so" --dtype f32 --head-dim 128 --group 2 \
    > /dev/null 2>&1
L generate --steps 5 --policy "$TMP/knorm128.so" --ratio 0.5 > /dev/null 2> "$TMP/err"
rc=$?
[ $rc -eq 1 ] && grep -q 'head_dim 128.*head_dim 8' "$TMP/err"
check "generate with a .so compiled for head_dim 128: clean error" "$(head -n 1 "$TMP/err")" $?

echo "$pass passed, $fail failed ($(( $(date +%s) - t0 )) s)"
[ $fail -eq 0 ]
