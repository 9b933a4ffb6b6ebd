#!/usr/bin/env python3
"""gen_golden.py OUTDIR -- write kvcc's golden cases (one uncompressed .npz per case) and
OUTDIR/cases.txt ("<policy> <file>" per line, file relative to OUTDIR).

The selection-rule policies of issue 13 (manifest oracle `selref`) come from gen_select.py.

The policies are those of the manifest tests/policies.tsv whose matrices include golden and
whose oracle is kvref: the cases listed in CASES, or the STANDARD shapes for a policy CASES
does not list; the manifest's obs column gives each case's observation count. The merge
policies (oracle mergeref) get merge_golden.py's cases.

Deterministic: fixed seed per case; when the boundary margin of a draw is below MIN_MARGIN
the inputs are re-drawn with the next seed.  The npz archives are written with fixed
timestamps, so two runs produce byte-identical files.
"""

import io
import os
import sys
import time
import zipfile
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kvref  # noqa: E402
import merge_golden  # noqa: E402
import gen_select  # noqa: E402

MIN_MARGIN = 1e-4
MAX_REDRAWS = 50

# (policy, case name, L, H, G, n, d, runtime, params, dtype, pos kind)
#   runtime: ("ratio", r) or ("budget", B);  pos kind: "default" | "offset" | "gapped", then
#   options joined by "+": "noqpos" (the case has no qpos: kvcc must default to the positions
#   of the last O held tokens, DESIGN section 3), "obsN" (Q holds N rows, more than the policy
#   declares: kvcc must use the last ones), "zerokey" (one all-zero key per head)
CASES = [
    # ---- streaming_llm ----------------------------------------------------------------
    ("streaming_llm", "d8_g1_n37_r25", 2, 2, 1, 37, 8, ("ratio", 0.25), {}, "f32", "default"),
    ("streaming_llm", "d64_g2_n61_r50", 2, 2, 2, 61, 64, ("ratio", 0.5), {}, "f32", "default"),
    ("streaming_llm", "d128_g4_n129_r75", 2, 2, 4, 129, 128, ("ratio", 0.75), {}, "f32", "default"),
    ("streaming_llm", "d64_g1_n257_r50", 2, 2, 1, 257, 64, ("ratio", 0.5), {}, "f32", "default"),
    ("streaming_llm", "d8_g2_n61_b20", 2, 2, 2, 61, 8, ("budget", 20), {}, "f32", "default"),
    ("streaming_llm", "d64_g4_n129_b40_sinks2", 2, 2, 4, 129, 64, ("budget", 40), {"sinks": 2}, "f32", "default"),
    ("streaming_llm", "d8_g1_n37_b100", 2, 2, 1, 37, 8, ("budget", 100), {}, "f32", "default"),
    ("streaming_llm", "d128_g2_n61_r25_f16", 2, 2, 2, 61, 128, ("ratio", 0.25), {}, "f16", "default"),
    ("streaming_llm", "d64_g1_n129_r50_bf16_sinks8", 2, 2, 1, 129, 64, ("ratio", 0.5), {"sinks": 8}, "bf16", "default"),
    ("streaming_llm", "d8_g1_n37_b3", 2, 2, 1, 37, 8, ("budget", 3), {}, "f32", "default"),      # budget < sinks: the first 3
    # ---- knorm --------------------------------------------------------------------------
    ("knorm", "d8_g1_n37_r25", 2, 2, 1, 37, 8, ("ratio", 0.25), {}, "f32", "default"),
    ("knorm", "d64_g2_n61_r50", 2, 2, 2, 61, 64, ("ratio", 0.5), {}, "f32", "default"),
    ("knorm", "d128_g4_n129_r75", 2, 2, 4, 129, 128, ("ratio", 0.75), {}, "f32", "default"),
    ("knorm", "d64_g1_n257_r50", 2, 2, 1, 257, 64, ("ratio", 0.5), {}, "f32", "default"),
    ("knorm", "d8_g2_n61_b20", 2, 2, 2, 61, 8, ("budget", 20), {}, "f32", "default"),
    ("knorm", "d128_g1_n129_b77", 2, 2, 1, 129, 128, ("budget", 77), {}, "f32", "gapped"),
    ("knorm", "d64_g4_n37_b500", 2, 2, 4, 37, 64, ("budget", 500), {}, "f32", "default"),
    ("knorm", "d64_g2_n129_r25_f16", 2, 2, 2, 129, 64, ("ratio", 0.25), {}, "f16", "default"),
    ("knorm", "d128_g1_n61_r50_bf16", 2, 2, 1, 61, 128, ("ratio", 0.5), {}, "bf16", "default"),
    # ---- snapkv -------------------------------------------------------------------------
    ("snapkv", "d8_g1_n37_w8_r25", 2, 2, 1, 37, 8, ("ratio", 0.25), {"window": 8, "kernel": 5}, "f32", "default"),
    ("snapkv", "d64_g2_n61_w16_r50", 2, 2, 2, 61, 64, ("ratio", 0.5), {"window": 16, "kernel": 5}, "f32", "default"),
    ("snapkv", "d128_g4_n129_w16_r75", 2, 2, 4, 129, 128, ("ratio", 0.75), {"window": 16, "kernel": 5}, "f32", "default"),
    ("snapkv", "d64_g4_n257_default_r50", 2, 2, 4, 257, 64, ("ratio", 0.5), {}, "f32", "default"),
    ("snapkv", "d8_g2_n61_w8_b20", 2, 2, 2, 61, 8, ("budget", 20), {"window": 8, "kernel": 5}, "f32", "default"),
    ("snapkv", "d128_g1_n129_w8_b50_f16", 2, 2, 1, 129, 128, ("budget", 50), {"window": 8, "kernel": 5}, "f16", "default"),
    ("snapkv", "d64_g4_n129_w16_r25_bf16", 2, 2, 4, 129, 64, ("ratio", 0.25), {"window": 16, "kernel": 5}, "bf16", "default"),
    ("snapkv", "d8_g2_n61_w8_r50_pos1000", 2, 2, 2, 61, 8, ("ratio", 0.5), {"window": 8, "kernel": 5}, "f32", "offset"),
    ("snapkv", "d64_g2_n37_w8_k3_r50", 2, 2, 2, 37, 64, ("ratio", 0.5), {"window": 8, "kernel": 3}, "f32", "default"),
    ("snapkv", "d128_g2_n257_w16_r50", 2, 2, 2, 257, 128, ("ratio", 0.5), {"window": 16, "kernel": 5}, "f32", "default"),
    ("snapkv", "d8_g2_n61_w8_r50_pos1000_noqpos", 2, 2, 2, 61, 8, ("ratio", 0.5), {"window": 8, "kernel": 5}, "f32", "offset+noqpos"),
    ("snapkv", "d64_g2_n61_w8_r50_gapped_noqpos", 2, 2, 2, 61, 64, ("ratio", 0.5), {"window": 8, "kernel": 5}, "f32", "gapped+noqpos"),
    ("snapkv", "d8_g2_n61_w8_b5", 2, 2, 2, 61, 8, ("budget", 5), {"window": 8, "kernel": 5}, "f32", "default"),   # budget < window: newest 5
    # ---- pyramidkv (L = 4) ----------------------------------------------------------------
    # budgets (kvpress get_layer_budget) noted per case
    ("pyramidkv", "d8_g1_n37_w8_r25", 4, 2, 1, 37, 8, ("ratio", 0.25), {"window": 8, "kernel": 5}, "f32", "default"),          # 29 28 27 26 (26.5 -> 26, half-even)
    ("pyramidkv", "d64_g2_n61_w16_r25", 4, 2, 2, 61, 64, ("ratio", 0.25), {"window": 16, "kernel": 5}, "f32", "default"),      # fallback round(45.75) = 46
    ("pyramidkv", "d64_g2_n61_w16_r50", 4, 2, 2, 61, 64, ("ratio", 0.5), {"window": 16, "kernel": 5}, "f32", "default"),       # 45 35 26 16
    ("pyramidkv", "d128_g4_n129_w8_r75", 4, 2, 4, 129, 128, ("ratio", 0.75), {"window": 8, "kernel": 5}, "f32", "default"),    # fallback 32
    ("pyramidkv", "d128_g4_n129_w8_r25", 4, 2, 4, 129, 128, ("ratio", 0.25), {"window": 8, "kernel": 5}, "f32", "default"),    # 121 105 89 72
    ("pyramidkv", "d64_g4_n257_default_r50", 4, 2, 4, 257, 64, ("ratio", 0.5), {}, "f32", "default"),                        # 193 150 107 64
    ("pyramidkv", "d8_g2_n257_w8_r50", 4, 2, 2, 257, 8, ("ratio", 0.5), {"window": 8, "kernel": 5}, "f32", "default"),         # 249 169 88 8
    ("pyramidkv", "d64_g2_n129_w16_b80", 4, 2, 2, 129, 64, ("budget", 80), {"window": 16, "kernel": 5}, "f32", "default"),     # 113 91 69 47
    ("pyramidkv", "d64_g1_n129_w16_b64", 4, 2, 1, 129, 64, ("budget", 64), {"window": 16, "kernel": 5}, "f32", "default"),     # fallback 64
    ("pyramidkv", "d64_g1_n129_w16_r50_f16", 4, 2, 1, 129, 64, ("ratio", 0.5), {"window": 16, "kernel": 5}, "f16", "default"),
    ("pyramidkv", "d8_g4_n61_w8_r50_bf16", 4, 2, 4, 61, 8, ("ratio", 0.5), {"window": 8, "kernel": 5}, "bf16", "default"),
    # ---- tova ---------------------------------------------------------------------------
    ("tova", "d8_g1_n37_r25", 2, 2, 1, 37, 8, ("ratio", 0.25), {}, "f32", "default"),
    ("tova", "d64_g2_n61_r50", 2, 2, 2, 61, 64, ("ratio", 0.5), {}, "f32", "default"),
    ("tova", "d128_g4_n129_r75", 2, 2, 4, 129, 128, ("ratio", 0.75), {}, "f32", "default"),
    ("tova", "d64_g4_n257_r50", 2, 2, 4, 257, 64, ("ratio", 0.5), {}, "f32", "default"),
    ("tova", "d8_g2_n61_b16", 2, 2, 2, 61, 8, ("budget", 16), {}, "f32", "default"),
    ("tova", "d128_g1_n129_b100_f16", 2, 2, 1, 129, 128, ("budget", 100), {}, "f16", "default"),
    ("tova", "d64_g2_n37_r75_bf16", 2, 2, 2, 37, 64, ("ratio", 0.75), {}, "bf16", "default"),
    ("tova", "d8_g4_n129_r25_gapped", 2, 2, 4, 129, 8, ("ratio", 0.25), {}, "f32", "gapped"),
    ("tova", "d8_g2_n61_r50_obs8", 2, 2, 2, 61, 8, ("ratio", 0.5), {}, "f32", "default+obs8"),
    ("tova", "d8_g2_n61_r50_pos1000_noqpos_obs8", 2, 2, 2, 61, 8, ("ratio", 0.5), {}, "f32", "offset+noqpos+obs8"),
    # ---- observed_attention ---------------------------------------------------------------
    ("observed_attention", "d8_g1_n37_r25", 2, 2, 1, 37, 8, ("ratio", 0.25), {}, "f32", "default"),
    ("observed_attention", "d64_g2_n61_r50", 2, 2, 2, 61, 64, ("ratio", 0.5), {}, "f32", "default"),
    ("observed_attention", "d128_g4_n129_r75", 2, 2, 4, 129, 128, ("ratio", 0.75), {}, "f32", "default"),
    ("observed_attention", "d64_g2_n257_r50", 2, 2, 2, 257, 64, ("ratio", 0.5), {}, "f32", "default"),
    ("observed_attention", "d8_g2_n61_b24", 2, 2, 2, 61, 8, ("budget", 24), {}, "f32", "default"),
    ("observed_attention", "d128_g1_n129_b64_f16", 2, 2, 1, 129, 128, ("budget", 64), {}, "f16", "default"),
    ("observed_attention", "d64_g4_n37_r50_bf16", 2, 2, 4, 37, 64, ("ratio", 0.5), {}, "bf16", "default"),
    ("observed_attention", "d8_g4_n129_r25_gapped", 2, 2, 4, 129, 8, ("ratio", 0.25), {}, "f32", "gapped"),
    ("observed_attention", "d8_g2_n37_r50_gapped_noqpos", 2, 2, 2, 37, 8, ("ratio", 0.5), {}, "f32", "gapped+noqpos"),
    # ---- keydiff ------------------------------------------------------------------------
    ("keydiff", "d8_g1_n37_r25", 2, 2, 1, 37, 8, ("ratio", 0.25), {}, "f32", "default"),
    ("keydiff", "d64_g2_n61_r50", 2, 2, 2, 61, 64, ("ratio", 0.5), {}, "f32", "default"),
    ("keydiff", "d128_g4_n129_r75", 2, 2, 4, 129, 128, ("ratio", 0.75), {}, "f32", "default"),
    ("keydiff", "d64_g1_n257_r50", 2, 2, 1, 257, 64, ("ratio", 0.5), {}, "f32", "default"),
    ("keydiff", "d8_g2_n61_b20", 2, 2, 2, 61, 8, ("budget", 20), {}, "f32", "default"),
    ("keydiff", "d128_g1_n129_b90", 2, 2, 1, 129, 128, ("budget", 90), {}, "f32", "default"),
    ("keydiff", "d64_g2_n129_r25_f16", 2, 2, 2, 129, 64, ("ratio", 0.25), {}, "f16", "default"),
    ("keydiff", "d8_g4_n61_r50_bf16", 2, 2, 4, 61, 8, ("ratio", 0.5), {}, "bf16", "default"),
    ("keydiff", "d8_g1_n37_r50_zerokey", 2, 2, 1, 37, 8, ("ratio", 0.5), {}, "f32", "default+zerokey"),
    ("keydiff", "d64_g2_n61_b20_zerokey", 2, 2, 2, 61, 64, ("budget", 20), {}, "f32", "default+zerokey"),
    # ---- random -------------------------------------------------------------------------
    ("random", "d8_g1_n37_r25", 2, 2, 1, 37, 8, ("ratio", 0.25), {}, "f32", "default"),
    ("random", "d64_g2_n61_r50", 2, 2, 2, 61, 64, ("ratio", 0.5), {}, "f32", "default"),
    ("random", "d128_g4_n129_r75", 2, 2, 4, 129, 128, ("ratio", 0.75), {}, "f32", "default"),
    ("random", "d64_g1_n257_r50_seed12345", 2, 2, 1, 257, 64, ("ratio", 0.5), {"seed": 12345}, "f32", "default"),
    ("random", "d8_g2_n61_b20_seed1", 2, 2, 2, 61, 8, ("budget", 20), {"seed": 1}, "f32", "default"),
    ("random", "d64_g1_n129_r50_gapped", 2, 2, 1, 129, 64, ("ratio", 0.5), {"seed": 7}, "f32", "gapped"),
    ("random", "d128_g2_n61_r25_f16", 2, 2, 2, 61, 128, ("ratio", 0.25), {}, "f16", "default"),
    ("random", "d8_g4_n129_b64_bf16_seed987654321", 2, 2, 4, 129, 8, ("budget", 64), {"seed": 987654321}, "bf16", "default"),
    # kv.random's seed rule: truncated toward zero; |seed| >= 2^63 counts as 0
    ("random", "d8_g1_n61_r50_seed-5.7", 2, 2, 1, 61, 8, ("ratio", 0.5), {"seed": -5.7}, "f32", "default"),
    ("random", "d8_g1_n61_r50_seed1e30", 2, 2, 1, 61, 8, ("ratio", 0.5), {"seed": 1e30}, "f32", "default"),
]

# Chunked selection and scopes layer/model (kvref.TOPK_POLICIES: the test policies of
# tests/policies/chunk_*.lua and scope_*.lua).  Same tuple layout as CASES; L >= 2.
# Every case keeps at least what it protects (whole protected chunks) in every group, so no
# case depends on the protected order; partial last chunks: n % chunk != 0 in most cases.
TOPK_CASES = [
    # ---- chunk_head (scope head): -|k|, sinks 2, window 5 -----------------------------------
    ("chunk_head", "d8_g1_n37_c3_r25", 2, 2, 1, 37, 8, ("ratio", 0.25), {}, "f32", "default"),
    ("chunk_head", "d64_g2_n61_c2_r50", 2, 2, 2, 61, 64, ("ratio", 0.5), {"chunk": 2}, "f32", "default"),
    ("chunk_head", "d128_g4_n129_c8_r50", 2, 2, 4, 129, 128, ("ratio", 0.5), {"chunk": 8}, "f32", "default"),
    ("chunk_head", "d64_g1_n64_c8_b30", 2, 2, 1, 64, 64, ("budget", 30), {"chunk": 8}, "f32", "default"),
    ("chunk_head", "d8_g2_n61_c3_b25_f16", 2, 2, 2, 61, 8, ("budget", 25), {}, "f16", "default"),
    ("chunk_head", "d64_g1_n129_c5_r75_bf16", 2, 2, 1, 129, 64, ("ratio", 0.75), {"chunk": 5}, "bf16", "default"),
    # ---- chunk_layer (scope layer): attention of the observation queries, sinks 1, window 4 -
    ("chunk_layer", "d8_g1_n37_c3_r25", 2, 2, 1, 37, 8, ("ratio", 0.25), {}, "f32", "default"),
    ("chunk_layer", "d64_g2_n61_c2_r50", 2, 4, 2, 61, 64, ("ratio", 0.5), {"chunk": 2}, "f32", "default"),
    ("chunk_layer", "d128_g4_n129_c8_r50", 2, 2, 4, 129, 128, ("ratio", 0.5), {"chunk": 8}, "f32", "default"),
    ("chunk_layer", "d64_g2_n64_c3_b24", 2, 3, 2, 64, 64, ("budget", 24), {}, "f32", "default"),
    ("chunk_layer", "d8_g4_n61_c3_r50_gapped", 2, 2, 4, 61, 8, ("ratio", 0.5), {}, "f32", "gapped"),
    ("chunk_layer", "d64_g1_n129_c4_r75_f16", 2, 2, 1, 129, 64, ("ratio", 0.75), {"chunk": 4}, "f16", "default"),
    ("chunk_layer", "d64_g2_n37_c1_r50_bf16", 2, 2, 2, 37, 64, ("ratio", 0.5), {"chunk": 1}, "bf16", "default"),
    # ---- chunk_model (scope model): sum of k, sinks 3, no window -----------------------------
    ("chunk_model", "d8_g1_n37_c3_r25", 2, 2, 1, 37, 8, ("ratio", 0.25), {}, "f32", "default"),
    ("chunk_model", "d64_g2_n61_c2_r50", 3, 2, 2, 61, 64, ("ratio", 0.5), {"chunk": 2}, "f32", "default"),
    ("chunk_model", "d128_g4_n129_c8_r75", 2, 2, 4, 129, 128, ("ratio", 0.75), {"chunk": 8}, "f32", "default"),
    ("chunk_model", "d64_g1_n64_c3_b20", 2, 2, 1, 64, 64, ("budget", 20), {}, "f32", "default"),
    ("chunk_model", "d8_g2_n61_c3_w2_r50_f16", 2, 2, 2, 61, 8, ("ratio", 0.5), {"window": 2}, "f16", "default"),
    ("chunk_model", "d64_g1_n129_c5_r50_bf16", 2, 2, 1, 129, 64, ("ratio", 0.5), {"chunk": 5}, "bf16", "default"),
    # ---- scope_layer (scope layer, PyramidKV beta 2, w = recent): -sum of k, sinks 2 ---------
    ("scope_layer", "d8_g1_n37_r25", 4, 2, 1, 37, 8, ("ratio", 0.25), {}, "f32", "default"),
    ("scope_layer", "d64_g2_n61_r50", 4, 2, 2, 61, 64, ("ratio", 0.5), {}, "f32", "default"),
    ("scope_layer", "d128_g4_n129_c3_r50", 4, 2, 4, 129, 128, ("ratio", 0.5), {"chunk": 3}, "f32", "default"),
    ("scope_layer", "d64_g1_n129_b40", 4, 3, 1, 129, 64, ("budget", 40), {}, "f32", "default"),
    ("scope_layer", "d8_g2_n61_c2_r75_f16", 4, 2, 2, 61, 8, ("ratio", 0.75), {"chunk": 2}, "f16", "default"),
    ("scope_layer", "d64_g2_n129_w6_r50", 4, 2, 2, 129, 64, ("ratio", 0.5), {"recent": 6}, "f32", "default"),
    ("scope_layer", "d64_g1_n64_r50_bf16", 3, 2, 1, 64, 64, ("ratio", 0.5), {}, "bf16", "default"),
    # ---- scope_model (scope model): sum of k, sink 1, recent 3 ---------------------------------
    ("scope_model", "d8_g1_n37_c3_r25", 2, 2, 1, 37, 8, ("ratio", 0.25), {}, "f32", "default"),
    ("scope_model", "d64_g2_n61_c1_r50", 2, 3, 2, 61, 64, ("ratio", 0.5), {"chunk": 1}, "f32", "default"),
    ("scope_model", "d128_g4_n129_c8_r50", 2, 2, 4, 129, 128, ("ratio", 0.5), {"chunk": 8}, "f32", "default"),
    ("scope_model", "d64_g2_n64_c3_b16", 3, 2, 2, 64, 64, ("budget", 16), {}, "f32", "default"),
    ("scope_model", "d8_g1_n61_c2_r75_f16", 2, 2, 1, 61, 8, ("ratio", 0.75), {"chunk": 2}, "f16", "default"),
    ("scope_model", "d64_g1_n129_c3_r50_bf16", 2, 2, 1, 129, 64, ("ratio", 0.5), {}, "bf16", "default"),
]


# Policies with oracle kvref in the manifest's golden matrix and no cases above get these
# (policy-independent shapes; params: the oracle's defaults).
STANDARD = [
    ("d8_g1_n37_r25", 2, 2, 1, 37, 8, ("ratio", 0.25), {}, "f32", "default"),
    ("d64_g2_n61_r50", 2, 2, 2, 61, 64, ("ratio", 0.5), {}, "f32", "default"),
    ("d128_g4_n129_r75", 2, 2, 4, 129, 128, ("ratio", 0.75), {}, "f32", "default"),
    ("d64_g1_n257_r50", 2, 2, 1, 257, 64, ("ratio", 0.5), {}, "f32", "default"),
    ("d8_g2_n61_b20", 2, 2, 2, 61, 8, ("budget", 20), {}, "f32", "default"),
    ("d64_g2_n129_r25_f16", 2, 2, 2, 129, 64, ("ratio", 0.25), {}, "f16", "default"),
    ("d8_g4_n61_r50_bf16", 2, 2, 4, 61, 8, ("ratio", 0.5), {}, "bf16", "default"),
    ("d8_g4_n129_r25_gapped", 2, 2, 4, 129, 8, ("ratio", 0.25), {}, "f32", "gapped"),
]

MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "policies.tsv")


def read_manifest(path=MANIFEST):
    """tests/policies.tsv as {name: {"file", "oracle", "obs", "matrices": set, "params"}}, in order."""
    out = {}
    with open(path) as f:
        for ln, line in enumerate(f, 1):
            if line.startswith("#") or not line.strip():
                continue
            cols = line.split()
            if len(cols) != 6:
                raise RuntimeError("%s:%d: expected name file oracle obs matrices params" % (path, ln))
            name, file, oracle, obs, matrices, params = cols
            out[name] = {"file": file, "oracle": oracle, "obs": obs,
                         "matrices": set(matrices.split(",")), "params": params}
    return out


def n_obs(policy, n, params, manifest):
    """The observation count of a case: the manifest's obs column (a param, all or 0)."""
    obs = manifest[policy]["obs"]
    if obs == "all":
        return n
    if obs == "0":
        return 0
    return int(dict(kvref.DEFAULTS[policy], **params)[obs])


def golden_cases(manifest):
    """CASES, plus STANDARD for the manifest's kvref golden policies that CASES lacks."""
    golden = [name for name, m in manifest.items() if "golden" in m["matrices"] and m["oracle"] == "kvref"]
    for case in CASES:
        if case[0] not in golden:
            raise RuntimeError("case %s__%s: %s has no kvref golden line in %s"
                               % (case[0], case[1], case[0], MANIFEST))
    have = {case[0] for case in CASES}
    return CASES + [(name,) + std for name in golden if name not in have for std in STANDARD]


def make_inputs(seed, L, H, G, n, d, O, pos_kind):
    """Gaussian keys/values/queries with a per-head key bias, a spread of key norms and a few
    large-norm 'heavy' tokens (token 0 among them); queries lean towards the heavy keys."""
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((L, H, n, d)) * rng.uniform(0.6, 1.4, size=(L, H, n, 1))
    K += 0.6 * rng.standard_normal((L, H, 1, d))
    n_heavy = max(2, n // 16)
    heavy_dir = np.zeros((L, H, d))
    for l in range(L):
        for h in range(H):
            heavy = np.concatenate(([0], rng.choice(np.arange(1, n), n_heavy - 1, replace=False)))
            K[l, h, heavy] *= rng.uniform(2.0, 3.5, size=(n_heavy, 1))
            heavy_dir[l, h] = K[l, h, heavy].mean(axis=0) / np.sqrt(d)
    V = rng.standard_normal((L, H, n, d))
    Q = rng.standard_normal((L, H, G, O, d)) + 2.0 * heavy_dir[:, :, None, None, :] \
        * rng.uniform(0.0, 1.0, size=(L, H, G, O, 1))
    if pos_kind == "default":
        pos = np.arange(n)
    elif pos_kind == "offset":
        pos = 1000 + np.arange(n)
    elif pos_kind == "gapped":
        pos = np.sort(rng.choice(np.arange(4 * n), n, replace=False))
    else:
        raise ValueError(pos_kind)
    return K, V, Q, pos.astype(np.int64)


def write_npz(path, arrays):
    """Uncompressed .npz (ZIP_STORED, no zip64, fixed timestamps): np.load reads it."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, val in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(val), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def build_case(case, manifest=None):
    policy, name, L, H, G, n, d, (kind, amount), params, dtype, kinds = case
    pos_kind, *opts = kinds.split("+")
    O = n_obs(policy, n, params, manifest or read_manifest())
    rows = O                                   # rows of Q in the case file
    for o in opts:
        if o.startswith("obs"):
            rows = int(o[3:])
            if rows < O:
                raise ValueError("%s: obs%d is fewer rows than the policy declares" % (name, rows))
    base = (zlib.crc32(("%s__%s" % (policy, name)).encode()) & 0xFFFFFF) * 64   # stable per case
    for seed in range(base, base + MAX_REDRAWS):
        K, V, Qall, pos = make_inputs(seed, L, H, G, n, d, rows, pos_kind)
        if "zerokey" in opts:
            K[:, :, seed % n] = 0.0
        K, V, Qall = (kvref.round_storage(x, dtype) for x in (K, V, Qall))
        qall = pos[n - rows:] if rows else np.zeros(0, dtype=np.int64)
        Q, qpos = Qall[:, :, :, rows - O:], qall[rows - O:]     # the declared (last) O rows
        rt = {"ratio": amount} if kind == "ratio" else {"budget": amount}
        res = kvref.compress(policy, K, V, Q, params=params, qpos=qpos, pos=pos, dtype=dtype, **rt)
        if res["margin"] >= MIN_MARGIN:
            break
    else:
        # (random: scores depend only on seed/layer/head/pos, so re-draws cannot help unless
        # pos is drawn; pick another param.seed for such a case)
        raise RuntimeError("%s__%s: boundary margin < %g in %d draws"
                           % (policy, name, MIN_MARGIN, MAX_REDRAWS))

    arrays = {
        "K": K.astype(np.float32), "V": V.astype(np.float32), "Q": Qall.astype(np.float32),
        "qpos": qall.astype(np.int32), "pos": pos.astype(np.int32),
    }
    if "noqpos" in opts:
        del arrays["qpos"]
    if kind == "ratio":
        arrays["ratio"] = np.array(amount, dtype=np.float64)
    else:
        arrays["budget"] = np.array(amount, dtype=np.int64)
    for key in sorted(params):
        arrays["param." + key] = np.array(params[key], dtype=np.float64)
    arrays["dtype"] = np.array(dtype)
    arrays["expect.scores"] = res["scores"].astype(np.float64)
    if policy == "pyramidkv":
        for l in range(L):
            arrays["expect.kept.%d" % l] = res["kept"][l].astype(np.int32)
        for l in range(L):
            arrays["expect.K.%d" % l] = res["K_out"][l].astype(np.float32)
        for l in range(L):
            arrays["expect.V.%d" % l] = res["V_out"][l].astype(np.float32)
    else:
        arrays["expect.kept"] = res["kept"].astype(np.int32)
        arrays["expect.K"] = res["K_out"].astype(np.float32)
        arrays["expect.V"] = res["V_out"].astype(np.float32)
    return "%s__%s.npz" % (policy, name), arrays, res, seed


def protected_fits(res, L, H, n):
    """Every group keeps at least its protected chunks (no case depends on the protected order)."""
    sel = res["sel"]
    prot = np.zeros(n, dtype=bool)
    for t0 in range(0, n, sel["chunk"]):
        t1 = min(t0 + sel["chunk"], n)
        if t0 < sel["sinks"] or t1 > n - sel["recent"]:
            prot[t0:t1] = True
    per_head = int(prot.sum())
    groups = {"head": 1, "layer": H, "model": L * H}[sel["scope"]]
    counts = res["n_keep"]
    if sel["scope"] == "model":
        return per_head * L * H <= H * sum(counts)
    return all(per_head * groups <= groups * c for c in counts)


def build_topk_case(case):
    policy, name, L, H, G, n, d, (kind, amount), params, dtype, pos_kind = case
    # the policy's declared observation count (its obs column; kvcc run uses that many rows)
    O = 0
    if kvref.TOPK_POLICIES[policy][1] == "attn_mean":
        O = int(dict(kvref.TOPK_POLICIES[policy][2], **params)[read_manifest()[policy]["obs"]])
    base = (zlib.crc32(("%s__%s" % (policy, name)).encode()) & 0xFFFFFF) * 64
    rt = {"ratio": amount} if kind == "ratio" else {"budget": amount}
    for seed in range(base, base + MAX_REDRAWS):
        K, V, Q, pos = make_inputs(seed, L, H, G, n, d, O, pos_kind)
        K, V, Q = (kvref.round_storage(x, dtype) for x in (K, V, Q))
        qpos = pos[n - O:] if O else np.zeros(0, dtype=np.int64)
        res = kvref.compress_topk(policy, K, V, Q, params=params, qpos=qpos, pos=pos, dtype=dtype, **rt)
        if res["margin"] >= MIN_MARGIN:
            break
    else:
        raise RuntimeError("%s__%s: margin < %g in %d draws" % (policy, name, MIN_MARGIN, MAX_REDRAWS))
    if not protected_fits(res, L, H, n):
        raise RuntimeError("%s__%s: the budget is below the protected set" % (policy, name))
    arrays = {
        "K": K.astype(np.float32), "V": V.astype(np.float32), "Q": Q.astype(np.float32),
        "qpos": qpos.astype(np.int32), "pos": pos.astype(np.int32),
    }
    if kind == "ratio":
        arrays["ratio"] = np.array(amount, dtype=np.float64)
    else:
        arrays["budget"] = np.array(amount, dtype=np.int64)
    for key in sorted(params):
        arrays["param." + key] = np.array(params[key], dtype=np.float64)
    arrays["dtype"] = np.array(dtype)
    arrays["expect.scores"] = res["scores"].astype(np.float64)
    for l in range(L):
        for h in range(H):
            arrays["expect.kept.%d.%d" % (l, h)] = res["kept"][l][h].astype(np.int32)
            arrays["expect.K.%d.%d" % (l, h)] = res["K_out"][l][h].astype(np.float32)
            arrays["expect.V.%d.%d" % (l, h)] = res["V_out"][l][h].astype(np.float32)
    return "%s__%s.npz" % (policy, name), arrays, res, seed


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: gen_golden.py OUTDIR\n")
        return 2
    out = argv[1]
    os.makedirs(out, exist_ok=True)
    verbose = os.environ.get("KVREF_VERBOSE")
    t0 = time.time()
    lines = []
    seen = set()
    manifest = read_manifest()
    for case in golden_cases(manifest):
        fname, arrays, res, seed = build_case(case, manifest)
        if fname in seen:
            raise RuntimeError("duplicate case " + fname)
        seen.add(fname)
        write_npz(os.path.join(out, fname), arrays)
        lines.append("%s %s" % (case[0], fname))
        if verbose:
            print("%-48s seed=%d n_keep=%s margin=%.3g" % (fname, seed, res["n_keep"], res["margin"]))
    for case in TOPK_CASES:
        if "golden" not in manifest.get(case[0], {}).get("matrices", ()):
            raise RuntimeError("topk case %s__%s: %s has no golden line in %s" % (case[0], case[1], case[0], MANIFEST))
        fname, arrays, res, seed = build_topk_case(case)
        if fname in seen:
            raise RuntimeError("duplicate case " + fname)
        seen.add(fname)
        write_npz(os.path.join(out, fname), arrays)
        lines.append("%s %s" % (case[0], fname))
        if verbose:
            print("%-48s seed=%d n_keep=%s margin=%.3g" % (fname, seed, res["n_keep"], res["margin"]))
    for policy, fname, arrays, seed, margin in merge_golden.cases(manifest, make_inputs):
        if fname in seen:
            raise RuntimeError("duplicate case " + fname)
        seen.add(fname)
        write_npz(os.path.join(out, fname), arrays)
        lines.append("%s %s" % (policy, fname))
        if verbose:
            print("%-48s seed=%d margin=%.3g" % (fname, seed, margin))
    for case in gen_select.CASES:
        m = manifest.get(case[0], {})
        if "golden" not in m.get("matrices", ()) or m.get("oracle") != "selref":
            raise RuntimeError("selref case %s__%s: %s has no selref golden line in %s"
                               % (case[0], case[1], case[0], MANIFEST))
        fname, arrays, margin, seed = gen_select.build(case, make_inputs, kvref.round_storage)
        if fname in seen:
            raise RuntimeError("duplicate case " + fname)
        seen.add(fname)
        write_npz(os.path.join(out, fname), arrays)
        lines.append("%s %s" % (case[0], fname))
        if verbose:
            print("%-48s seed=%d margin=%.3g" % (fname, seed, margin))
    with open(os.path.join(out, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("gen_golden: %d cases in %s (%.1f s)" % (len(lines), out, time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
