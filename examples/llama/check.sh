#!/bin/sh
# examples/llama/check.sh - checks of the llama program (make check-llama).
#
# Every expected value comes from ../shared/data/README.md (copied below, with the section
# it is from) or from the independent numpy oracle tests/oracle/llama_ref.py /
# eval_ref.py - never from the C program itself.  The program attends through libkvcc
# (kvcc_append + kvcc_decode_layer on its kvcc_cache) when libkvcc has decode attention,
# which is what these checks then exercise; tests/e2e/run.sh repeats the README numbers
# with --attn kvcc and --attn ref explicitly.  Prints one line per check and a final
# "N passed, N failed" line; exits 1 when a check failed.
#
# Environment: LLAMA (the binary, default build/llama), KVCC (default: kvcc beside LLAMA), DATA (the shared data directory,
# default ../shared/data), PYTHON (a python3 with numpy).

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LLAMA=${LLAMA:-build/llama}
DATA=${DATA:-$ROOT/../shared/data}
PYTHON=${PYTHON:-/usr/bin/python3}
ORACLE=$ROOT/tests/oracle
MODEL=$DATA/stories260K.bin
TOKZ=$DATA/tok512.bin
STORIES=$DATA/tinystories_valid_70.txt
KVCC_DATA=$DATA
export KVCC_DATA

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS $1${2:+: $2}"; }
ko() { fail=$((fail + 1)); echo "FAIL $1${2:+: $2}"; }
# check NAME DETAIL CONDITION-STATUS
check() { if [ "$3" -eq 0 ]; then ok "$1" "$2"; else ko "$1" "$2"; fi; }

L() { "$LLAMA" --model "$MODEL" --tokenizer "$TOKZ" "$@"; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kvcc-llama.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT INT TERM
# a compile cache of this run's own (the program compiles a policy to plan its attention)
KVCC_CACHE_DIR=$TMP/cache
export KVCC_CACHE_DIR

for f in "$LLAMA" "$MODEL" "$TOKZ" "$STORIES"; do
    [ -e "$f" ] || { echo "FAIL missing $f"; echo "0 passed, 1 failed"; exit 1; }
done
if ! "$PYTHON" -c 'import numpy' 2>/dev/null; then
    echo "FAIL PYTHON='$PYTHON' has no numpy (the oracle needs it)"
    echo "0 passed, 1 failed"
    exit 1
fi

# ---- values from data/README.md ------------------------------------------------------------
README_ENCODE="1 403 407 261 378"                                       # section 2
README_IDS="403 407 261 378 432 383 286 261 376 298 315 421 395 317 426 338 401 396 267 337 410 408 419 292 411 322 265 282 295 433 426 385 328 432 358 394 261 370 432 352"  # section 1
README_TEXT="Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high"  # section 1
README_TOP5="403 17.0235
385 15.4062
410 13.1083
317 12.7692
407 12.4181"                                                            # section 1
README_STORY_NLL="0 1.2977 171
1 1.3210 512
2 1.2383 236
3 1.1112 391
4 1.2210 248
5 1.1974 378"                                                           # section 3
README_NLL=1.2894; README_TOKENS=22691; README_PREDICTIONS=22510; README_STORIES=70

# ---- tokenizer -------------------------------------------------------------------------------
got=$(L encode --prompt "Once upon a time" 2>&1)
[ "$got" = "$README_ENCODE" ]; check "encode 'Once upon a time' (README)" "$got" $?

# non-ASCII text (curly quotes, an em dash, u-grave with byte fallback) against the oracle
head -n 420 "$DATA/alice_in_wonderland_pg11.txt" > "$TMP/alice.txt"
L encode --data "$TMP/alice.txt" > "$TMP/alice.c" 2>&1
"$PYTHON" "$ORACLE/llama_ref.py" encode --file "$TMP/alice.txt" > "$TMP/alice.py" 2>&1
cmp -s "$TMP/alice.c" "$TMP/alice.py"
check "encode Alice lines 1-420 == oracle" "$(wc -w < "$TMP/alice.py") ids" $?

# ---- greedy generation and logits -------------------------------------------------------------
got=$(L generate --steps 40 --ids 2>&1)
[ "$got" = "$README_IDS" ]; check "greedy 40 token ids after BOS (README)" "" $?
got=$(L generate --steps 40 2>&1)
case "$README_TEXT" in
"$got"*) r=0 ;;
*) r=1 ;;
esac
[ -n "$got" ] && [ $r -eq 0 ]; check "greedy text is a prefix of the README text" "$got" $?

# at a budget with a merge policy (snapkv_merge: the evicted rows folded into their nearest kept
# row, x86 merge kernels): the prompt's 21 rows per head compressed to 12, the cache moved to a
# smaller allocation; greedy text still starts like the README's
L generate --steps 40 --prompt "Once upon a time, there was a little girl named Lily. She loved to play" \
    --policy policies/snapkv_merge.lua --budget 12 --param window=4 > "$TMP/gm.out" 2> "$TMP/gm.err"
rc=$?
grep -q "snapkv_merge budget 12: the prompt's cache compressed from 21 to 12 rows per head" "$TMP/gm.err" &&
    grep -q "^Once upon a time, there was a little girl named Lily. She loved to play" "$TMP/gm.out"
r=$?
[ $rc -eq 0 ] && [ $r -eq 0 ]
check "generate --policy snapkv_merge --budget 12 (a merge at prefill, memory at the budget)" "$(head -c 90 "$TMP/gm.err")" $?

# decode-time merges (issue 12): d2o (nearest, the EMA threshold) and nearest_bias (member
# counts, count-biased decode attention) over 150 generated tokens at ratio 0.75: the budget is
# floor(S * (1 - 0.75)) rows per head (doc/eval.md, S = prompt + steps), no compression leaves
# more than it and the cache's capacity stays at budget + 1 (every = 1) from the second on
for pol in policies/d2o.lua tests/policies/nearest_bias.lua; do
    L generate --steps 150 --ratio 0.75 --policy "$ROOT/$pol" \
        --prompt "Once upon a time, there was a little girl named Lily. She loved to play outside." \
        > "$TMP/gd.out" 2> "$TMP/gd.err"
    rc=$?
    detail=$(sed -n 's/.*budget \([0-9]*\) rows per head (of \([0-9]*\)), \([0-9]*\) compressions.*after every compression at most \([0-9]*\) rows per head, capacity at most \([0-9]*\) rows.*/\1 \2 \3 \4 \5/p' "$TMP/gd.err" |
             awk '{ b = int($2 * 0.25); printf "budget %d (S %d: %d), %d compressions, at most %d rows, capacity %d%s",
                    $1, $2, b, $3, $4, $5, ($1 == b && $3 >= 100 && $4 <= b && $5 == b + 1) ? "" : " BAD" }')
    case "$detail" in ""|*BAD*) r=1 ;; *) r=$rc ;; esac
    check "generate $(basename "$pol" .lua) --ratio 0.75, 150 steps: memory at the budget while decoding" "$detail" $r
done

L logits > "$TMP/top5" 2>&1
echo "$README_TOP5" > "$TMP/top5.ref"
detail=$(awk 'NR==FNR { id[FNR] = $1; v[FNR] = $2; next }
              { if ($1 != id[FNR]) bad = 1; d = $2 - v[FNR]; if (d < 0) d = -d;
                if (d > m) m = d; n++ }
              END { printf "max |diff| %.2e%s", m, (bad || n != 5 || m >= 1e-3) ? " BAD" : "" }' \
         "$TMP/top5.ref" "$TMP/top5")
case "$detail" in *BAD*) r=1 ;; *) r=0 ;; esac
check "top-5 logits at pos 0 within 1e-3 (README)" "$detail" $r

# a checkpoint with a separate classifier (negative vocab_size, wcls appended): wcls = 2 x the
# embedding must give the README's top-5 logits doubled
"$PYTHON" - "$MODEL" "$TMP/wcls.bin" <<'PYEOF'
import struct, sys
import numpy as np
raw = bytearray(open(sys.argv[1], "rb").read())
dim, vocab = struct.unpack_from("<i", raw, 0)[0], struct.unpack_from("<i", raw, 20)[0]
emb = np.frombuffer(bytes(raw[28:28 + 4 * vocab * dim]), dtype="<f4")
struct.pack_into("<i", raw, 20, -vocab)
open(sys.argv[2], "wb").write(bytes(raw) + (emb * 2).astype("<f4").tobytes())
PYEOF
"$LLAMA" --model "$TMP/wcls.bin" --tokenizer "$TOKZ" logits > "$TMP/top5w" 2>&1
detail=$(awk 'NR==FNR { id[FNR] = $1; v[FNR] = 2 * $2; next }
              { if ($1 != id[FNR]) bad = 1; d = $2 - v[FNR]; if (d < 0) d = -d;
                if (d > m) m = d; n++ }
              END { printf "max |diff| %.2e%s", m, (bad || n != 5 || m >= 2e-3) ? " BAD" : "" }' \
         "$TMP/top5.ref" "$TMP/top5w")
case "$detail" in *BAD*) r=1 ;; *) r=0 ;; esac
check "separate classifier (vocab_size < 0, wcls = 2 emb): 2 x README top-5" "$detail" $r

# ---- NLL ------------------------------------------------------------------------------------
L nll --data "$STORIES" --stories 0:6 --per-story > "$TMP/nll06" 2>&1
echo "$README_STORY_NLL" > "$TMP/nll06.ref"
detail=$(awk 'NR==FNR { v[$1] = $2; t[$1] = $3; next }
              $1 == "story" { d = $8 - v[$2]; if (d < 0) d = -d; if (d > m) m = d;
                              if ($4 != t[$2]) bad = 1; n++ }
              END { printf "max |diff| %.1e over %d stories%s", m, n,
                           (bad || n != 6 || m > 1e-4) ? " BAD" : "" }' "$TMP/nll06.ref" "$TMP/nll06")
case "$detail" in *BAD*) r=1 ;; *) r=0 ;; esac
check "per-story NLL, stories 0-5 (README, 4 decimals)" "$detail" $r

L nll --data "$STORIES" --stories 6:20 --per-story > "$TMP/nll.c" 2>&1
"$PYTHON" "$ORACLE/llama_ref.py" nll --data "$STORIES" --stories 6:20 --per-story > "$TMP/nll.py" 2>&1
detail=$(awk 'NR==FNR { if ($1 == "story") { v[$2] = $8; t[$2] = $4 } else if ($1 == "stories") mean = $10; next }
              $1 == "story" { d = $8 - v[$2]; if (d < 0) d = -d; if (d > m) m = d;
                              if ($4 != t[$2]) bad = 1; n++ }
              $1 == "stories" { dm = $10 - mean; if (dm < 0) dm = -dm }
              END { printf "max |diff| %.1e over %d stories, mean |diff| %.1e%s", m, n, dm,
                           (bad || n != 14 || m > 5e-5 || dm > 2e-5) ? " BAD" : "" }' \
         "$TMP/nll.py" "$TMP/nll.c")
case "$detail" in *BAD*) r=1 ;; *) r=0 ;; esac
check "per-story NLL, stories 6-19 == oracle" "$detail" $r

line=$(L nll --data "$STORIES" 2>&1 | tail -n 1)
detail=$(echo "$line" | awk -v ref=$README_NLL -v tok=$README_TOKENS -v pred=$README_PREDICTIONS \
                            -v ns=$README_STORIES \
    '{ d = $10 - ref; if (d < 0) d = -d;
       printf "%d stories, %d tokens, %d predictions, nll %s, %s s%s", $2, $4, $8, $10, $14,
              ($2 != ns || $4 != tok || $8 != pred || d > 5e-4 || $10 == "") ? " BAD" : "" }')
case "$detail" in *BAD*) r=1 ;; *) r=0 ;; esac
check "mean NLL over all stories = 1.2894 +- 5e-4 (README)" "$detail" $r

# ---- internal consistency of the cache, attend, hooks (C only) -------------------------------
L selftest > "$TMP/self" 2>&1
rc=$?
while IFS= read -r line; do
    case "$line" in
    "PASS "*) ok "selftest: ${line#PASS }" ;;
    "FAIL "*) ko "selftest: ${line#FAIL }" ;;
    esac
done < "$TMP/self"
[ $rc -eq 0 ] || ko "selftest" "exit status $rc: $(tail -n 1 "$TMP/self")"

# ---- bad input files: a clear error, exit status 1, never a crash ---------------------------
head -c 500000 "$MODEL" > "$TMP/trunc.bin"
head -c 10 "$MODEL" > "$TMP/short.bin"
{ printf 'garbage header!!12345678901234'; tail -c +29 "$MODEL"; } > "$TMP/garbled.bin"
head -c 3000 "$TOKZ" > "$TMP/trunc_tok.bin"
for c in "truncated model|$TMP/trunc.bin|$TOKZ|truncated" \
         "10-byte model|$TMP/short.bin|$TOKZ|too short" \
         "garbled model header|$TMP/garbled.bin|$TOKZ|header" \
         "missing model|$TMP/none.bin|$TOKZ|cannot open" \
         "truncated tokenizer|$MODEL|$TMP/trunc_tok.bin|truncated"; do
    name=${c%%|*}; rest=${c#*|}; m=${rest%%|*}; rest=${rest#*|}; t=${rest%%|*}; want=${rest#*|}
    "$LLAMA" --model "$m" --tokenizer "$t" logits > "$TMP/out" 2> "$TMP/err"
    rc=$?
    msg=$(head -n 1 "$TMP/err")
    [ $rc -eq 1 ] && grep -q "error:.*$want" "$TMP/err"
    check "$name: clean error" "rc $rc, $msg" $?
done

# (prefill-compress-continue against eval_ref.py: tests/e2e/run.sh, through `kvcc eval`)

# ---- llama batch: many stories over one page pool == kvcc eval, one story at a time ----------
# The expected numbers come from `kvcc eval` (tools/eval.c: one contiguous kvcc_cache per story,
# kvcc_compress / kvcc_decode_layer), the independent single-sequence path; llama batch runs the
# same protocol on a paged pool (kvcc_*_batch) with sequences admitted, compressed and ended in
# between.  Tolerance 0 on the printed 6 decimals: the model code is the same (llama_layer_*),
# paged decode attention reads the same rows in the same tile order as the contiguous cache
# (whole-tile pages page by page, other page sizes staged), and compression keeps the same rows
# (tests/paged), so the sums are the same bits; any difference is a bug.  Page sizes 16
# (vLLM's default), 7 (pages that are not whole kernel tiles), 256; 3, 4 and 10 slots (10: two
# decode pool runs per layer, libkvcc runs up to 8 sequences in one); 1 and 2
# threads; a prefill policy, a decode policy (H2O: observe hook and state through the batch)
# and no policy; a merge policy (snapkv_merge: merges on paged caches, runtime/merge.c).
# --per-head-tables: a page table per (sequence, layer, head) (issue 14): snapkv and H2O give the
# same numbers as the shared table (and kvcc eval); each head's freed pages go back on their own.
KVCC=${KVCC:-$(dirname "$LLAMA")/kvcc}
if [ -x "$KVCC" ]; then
    "$KVCC" eval policies/snapkv.lua policies/h2o.lua policies/streaming_llm.lua policies/snapkv_merge.lua --model "$MODEL" \
        --tokenizer "$TOKZ" --data "$STORIES" --ratios 0,0.5 --param window=16 --threads 2 \
        --csv "$TMP/eval.csv" > "$TMP/eval.out" 2>&1
    check "kvcc eval (the expected numbers of llama batch)" "$(head -n 1 "$TMP/eval.out" | cut -c1-90)" $?
    for c in "snapkv|0.5|--param window=16 --page-size 16 --pages 64 --max-seqs 4" \
             "snapkv|0|--param window=16 --page-size 16 --pages 64 --max-seqs 4" \
             "h2o|0.5|--page-size 7 --pages 400 --max-seqs 10 --threads 2" \
             "streaming_llm|0.5|--page-size 256 --pages 6 --max-seqs 3" \
             "snapkv_merge|0.5|--param window=16 --page-size 7 --pages 400 --max-seqs 5 --threads 2" \
             "-|0|--page-size 16 --pages 48 --max-seqs 4" \
             "snapkv|0.5|--param window=16 --page-size 16 --pages 1280 --max-seqs 4 --per-head-tables" \
             "h2o|0.5|--page-size 7 --pages 8000 --max-seqs 10 --threads 2 --per-head-tables"; do
        pol=${c%%|*}; rest=${c#*|}; r=${rest%%|*}; opts=${rest#*|}
        if [ "$pol" = - ]; then
            want=$(awk -F, '$1 == "snapkv" && $2 == 0 { print $5, $6 }' "$TMP/eval.csv")
            set -- $opts
        else
            want=$(awk -F, -v p="$pol" -v r="$r" '$1 == p && $2 == r { print $5, $6 }' "$TMP/eval.csv")
            set -- --policy "policies/$pol.lua" --ratio "$r" $opts
        fi
        L batch --data "$STORIES" --quiet "$@" > "$TMP/batch.out" 2>&1
        got=$(awk '$1 == "batch:" { for (i = 1; i < NF; i++) { if ($i == "predictions") p = $(i + 1);
                                                          if ($i == "nll") n = $(i + 1) } print p, n }' \
                  "$TMP/batch.out")
        [ -n "$want" ] && [ "$got" = "$want" ]
        check "batch $pol ratio $r ($opts) == kvcc eval" "predictions nll: batch $got, eval $want" $?
        if [ "$pol" = snapkv ] && [ "$r" = 0.5 ]; then
            # more stories than fit at once: pages come back and are handed out again; the
            # compression frees pages; the pool never holds more than it has
            detail=$(awk '$1 == "pool:" { printf "peak %s of %s, %s handed out, %s reused, %s freed by compression%s",
                                                  $5, $7, $11, $15, $25,
                                                  ($5 + 0 > $7 + 0 || $15 + 0 < 1 || $25 + 0 < 1) ? " BAD" : "" }' "$TMP/batch.out")
            case "$detail" in *BAD*|"") r=1 ;; *) r=0 ;; esac
            check "batch: pages reused across sequences and freed by compression" "$detail" $r
        fi
    done
    L batch --data "$STORIES" --stories 1:2 --pages 8 > "$TMP/out" 2> "$TMP/err"
    rc=$?
    [ $rc -eq 1 ] && grep -q "error: story 1 needs [0-9]* pages of 16 tokens at its peak, the pool has 8" "$TMP/err"
    check "batch: a pool too small for a story is a clean error" "rc $rc, $(head -n 1 "$TMP/err")" $?
    # weighted policies (issue 13): --weights W.npz from `kvcc calibrate` on the shipped model
    # (Alice in Wonderland, not the evaluation stories): criticalkv (W_o from the checkpoint)
    # and expected_attention (query mean / covariance) on a paged pool == kvcc eval with the
    # same file (its x86 kernels: the loops over the out axis); without the file, an error
    ALICE=$(dirname "$STORIES")/alice_in_wonderland_pg11.txt
    "$KVCC" calibrate --model "$MODEL" --tokenizer "$TOKZ" --data "$ALICE" --chunk-chars 2000 --from "CHAPTER I." \
        --stories 0:20 --out "$TMP/calib.npz" > "$TMP/calib.out" 2>&1
    check "kvcc calibrate (weights of criticalkv, expected_attention)" "$(tail -n 1 "$TMP/calib.out" | cut -c1-80)" $?
    "$KVCC" eval policies/criticalkv.lua policies/expected_attention.lua --model "$MODEL" --tokenizer "$TOKZ" \
        --data "$STORIES" --ratios 0.5 --param criticalkv.window=16 --param expected_attention.adjacent=1 \
        --weights "$TMP/calib.npz" --threads 2 --csv "$TMP/evalw.csv" > "$TMP/evalw.out" 2>&1
    check "kvcc eval --weights (the expected numbers)" "$(head -n 1 "$TMP/evalw.out" | cut -c1-90)" $?
    for c in "criticalkv|--param window=16 --page-size 16 --pages 400 --max-seqs 4 --threads 2" \
             "expected_attention|--param adjacent=1 --page-size 7 --pages 400 --max-seqs 4"; do
        pol=${c%%|*}; opts=${c#*|}
        want=$(awk -F, -v p="$pol" '$1 == p && $2 == 0.5 { print $5, $6 }' "$TMP/evalw.csv")
        L batch --data "$STORIES" --quiet --policy "policies/$pol.lua" --ratio 0.5 --weights "$TMP/calib.npz" $opts \
            > "$TMP/batch.out" 2>&1
        got=$(awk '$1 == "batch:" { for (i = 1; i < NF; i++) { if ($i == "predictions") p = $(i + 1);
                                                          if ($i == "nll") n = $(i + 1) } print p, n }' \
                  "$TMP/batch.out")
        [ -n "$want" ] && [ "$got" = "$want" ]
        check "batch $pol ratio 0.5 --weights == kvcc eval" "predictions nll: batch $got, eval $want" $?
    done
    L generate --steps 8 --prompt "Once upon a time, there was a little girl named Lily. She loved to play." \
        --policy policies/criticalkv.lua --ratio 0.5 --param window=8 --weights "$TMP/calib.npz" > "$TMP/out" 2> "$TMP/err"
    rc=$?
    [ $rc -eq 0 ] && grep -q "criticalkv ratio 0.5: the prompt's cache compressed from" "$TMP/err"
    check "generate criticalkv --weights (the prompt compressed)" "$(head -n 1 "$TMP/err" | cut -c1-90)" $?
    L generate --steps 8 --policy policies/criticalkv.lua --ratio 0.5 > "$TMP/out" 2> "$TMP/err"
    rc=$?
    [ $rc -eq 1 ] && grep -q "error: policy criticalkv declares weight 'wo': give it with --weights" "$TMP/err"
    check "generate: a missing weight is a clean error" "rc $rc, $(head -n 1 "$TMP/err")" $?
else
    ko "llama batch == kvcc eval" "KVCC=$KVCC is not an executable (make $KVCC)"
fi

# ---- the oracles' own self-checks (each of their lines is a check) --------------------------
for s in "llama_ref.py selfcheck" "eval_ref.py selfcheck"; do
    "$PYTHON" "$ORACLE/${s% *}" selfcheck > "$TMP/self" 2>&1
    rc=$?
    while IFS= read -r line; do
        case "$line" in
        "PASS "*) ok "${line#PASS }" ;;
        "FAIL "*) ko "${line#FAIL }" ;;
        esac
    done < "$TMP/self"
    if [ $rc -ne 0 ] || ! grep -q ' 0 failed' "$TMP/self"; then
        ko "$s" "exit status $rc: $(tail -n 1 "$TMP/self")"
    fi
done

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
