#!/usr/bin/env python3
"""KvccPress against kvpress's own presses, and against `kvcc eval`, on the shipped model
converted to a Hugging Face LlamaForCausalLM (f32, eager attention).

1. kvpress agreement, the prefill-compress-continue protocol of `kvcc eval` (kvcc.hf_eval):
   KvccPress(snapkv, knorm, streaming_llm, tova, observed_attention, keydiff, pyramidkv) vs
   SnapKVPress, KnormPress, StreamingLLMPress, TOVAPress, ObservedAttentionPress, KeyDiffPress,
   PyramidKVPress at ratios 0.25 and 0.5 on stories 0-3 (window 16 for the window policies).
   kvpress's kept set of each (layer, head) is read off its output rows (matched to its input
   rows), KvccPress's from the positions kvcc compacts. A (layer, head) is well defined when
   kvpress's own scores separate the last kept token from the first evicted one by more than
   1e-5 (relative) — closer than that, f32 rounding decides, and torch.topk's order is
   implementation-defined. Every well-defined (layer, head) must keep the identical set, and
   the continuation's mean NLL must agree within 1e-4 where every head of the story is well
   defined.
2. The `kvcc eval` table through transformers + KvccPress: `kvcc eval` (C) and kvcc.hf_eval on
   the same stories, every prefill policy, ratios 0 … 0.75, window 16: the same prediction
   counts, NLL within 1e-3 (stories 0-5 here; all 70 with KVCC_PY_FULL=1, `make
   check-python-full`). Two test policies exercise the cache-consistency paths: per-head budgets
   (scope = layer: padded, masked heads) and a model-wide ranking (scope = model: every layer in
   one call, per-layer and per-head lengths).
"""
import csv
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

from harness import DATA, KVCC, POLICIES, ROOT, Suite

import kvpress
from kvcc import hf_eval
from kvcc.models.llama2c import load_llama2c
from kvcc.press import KvccPress
from kvcc.tokenizer import Tokenizer, load_stories, story_tokens

S = Suite("test_press")
PAIRS = [("snapkv", kvpress.SnapKVPress, {"window_size": 16}, {"window": 16}),
         ("knorm", kvpress.KnormPress, {}, {}),
         ("streaming_llm", kvpress.StreamingLLMPress, {}, {}),
         ("tova", kvpress.TOVAPress, {}, {}),
         ("observed_attention", kvpress.ObservedAttentionPress, {}, {}),
         ("keydiff", kvpress.KeyDiffPress, {}, {}),
         ("pyramidkv", kvpress.PyramidKVPress, {"window_size": 16}, {"window": 16})]


def record_kvpress(press):
    """Wraps the kvpress press instance: per layer, the kept token indices (matched rows) and
    the boundary margin of its scores."""
    rec = {}
    score, compress = press.score, press.compress

    def wrap_score(module, hs, keys, values, att, kw):
        s = score(module, hs, keys, values, att, kw)
        rec.setdefault(module.layer_idx, {})["scores"] = s[0].detach().double().numpy()
        return s

    def wrap_compress(module, hs, keys, values, att, kw):
        k2, v2 = compress(module, hs, keys, values, att, kw)
        kin, kout = keys[0].detach().numpy(), k2[0].detach().numpy()
        kept = []
        for h in range(kin.shape[0]):
            where = {kin[h, t].tobytes(): t for t in range(kin.shape[1])}
            kept.append(sorted(where[kout[h, j].tobytes()] for j in range(kout.shape[1])))
        rec.setdefault(module.layer_idx, {})["kept"] = np.array(kept)
        return k2, v2

    press.score, press.compress = wrap_score, wrap_compress
    return rec


def well_defined(scores, m, rel=1e-5):
    if m >= len(scores) or m == 0:
        return True
    o = np.sort(scores)[::-1]
    return o[m - 1] - o[m] > rel * max(abs(o[m - 1]), abs(o[m]), 1e-30)


def kvpress_agreement(model, stories):
    rows = []
    for name, cls, kp_args, kc_args in PAIRS:
        for r in (0.25, 0.5):
            heads = same = ill = 0
            worst, worst_all, nll_pairs, bad = 0.0, 0.0, 0, []
            for si in range(4):
                ids = stories[si]
                theirs = cls(compression_ratio=r, **kp_args)
                rec = record_kvpress(theirs)
                ours = KvccPress(os.path.join(POLICIES, name + ".lua"), ratio=r, **kc_args)
                a = hf_eval.story_nll(model, ids, ours)
                b = hf_eval.story_nll(model, ids, theirs)
                all_def = True
                for l in sorted(rec):
                    for h in range(rec[l]["kept"].shape[0]):
                        heads += 1
                        mine = ours.kept[l][0, h]
                        mine = np.sort(mine[mine >= 0])
                        ref = rec[l]["kept"][h]
                        if not well_defined(rec[l]["scores"][h], len(ref)):
                            ill += 1
                            all_def = False
                            continue
                        if np.array_equal(mine, ref):
                            same += 1
                        else:
                            bad.append("story %d (%d,%d)" % (si, l, h))
                d = abs(a[0] / a[1] - b[0] / b[1])
                worst_all = max(worst_all, d)
                if all_def:
                    nll_pairs += 1
                    worst = max(worst, d)
            ok = not bad and worst <= 1e-4
            S.check("KvccPress(%s) vs %s r=%g" % (name, cls.__name__, r), ok,
                    "%d/%d well-defined heads identical (%d near ties), max |dNLL| %.1e over %d stories%s"
                    % (same, heads - ill, ill, worst, nll_pairs, "; differ: " + ", ".join(bad[:4]) if bad else ""))
            rows.append((name, cls.__name__, r, same, heads - ill, ill, worst, nll_pairs, worst_all))
    print("\n| kvcc policy | kvpress press | ratio | identical kept sets (well-defined heads) | near ties "
          "| max abs(dNLL), stories without a tie | max abs(dNLL), all 4 stories |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, cn, r, same, wd, ill, worst, npairs, wall in rows:
        print("| %s | %s | %g | %d / %d | %d | %s | %.1e |" % (name, cn, r, same, wd, ill, "%.1e (%d)" % (worst, npairs)
                                                              if npairs else "– (0)", wall))
    print()


def captured_vs_recomputed(model, stories):
    """The observation queries captured from the prefill's q_proj and the ones recomputed from the
    layer input (kvpress's way) give the same kept sets and NLL."""
    for name in ("snapkv", "observed_attention", "pyramidkv"):
        a = KvccPress(os.path.join(POLICIES, name + ".lua"), ratio=0.5, window=16) if name != "observed_attention" \
            else KvccPress(os.path.join(POLICIES, name + ".lua"), ratio=0.5)
        b = KvccPress(a.policy_source, ratio=0.5, params=a.params, capture_queries=False)
        na, nb = hf_eval.story_nll(model, stories[2], a), hf_eval.story_nll(model, stories[2], b)
        same = all(np.array_equal(a.kept[l], b.kept[l]) for l in a.kept) and len(a.kept) == 5
        S.check("%s: captured queries = recomputed queries" % name, same and abs(na[0] - nb[0]) < 1e-9,
                "NLL %.9f vs %.9f" % (na[0] / na[1], nb[0] / nb[1]))


def lse_from_prefill(stories):
    """On an sdpa model KvccPress takes the observation queries' log-sum-exp from the prefill's
    own attention (torch's CPU flash attention returns it) and kvcc skips its statistics pass:
    the same logits as plain sdpa (bit for bit), the same kept sets and NLL as kvcc computing the
    statistics itself (capture_lse=False), and the captured lse is really read (perturbing it
    changes the kept sets)."""
    from transformers import DynamicCache
    import kvcc.press as kp
    sdpa = load_llama2c(os.path.join(DATA, "stories260K.bin"), attn_implementation="sdpa")
    ids = torch.tensor([stories[1][:200]])
    with torch.no_grad():
        plain = sdpa(ids).logits
        p = KvccPress(os.path.join(POLICIES, "snapkv.lua"), ratio=0.0, window=16)
        with p(sdpa):
            wrapped = sdpa(ids, past_key_values=DynamicCache()).logits
    S.check("sdpa with the lse capture: the same logits as plain sdpa", torch.equal(plain, wrapped))
    seen = []
    orig = kp.KvccPress._run

    def spy(self, pol, K, V, Q, lse):
        seen.append(lse is not None)
        return orig(self, pol, K, V, Q, lse)
    kp.KvccPress._run = spy
    try:
        for name, kw in (("snapkv", {"window": 16}), ("tova", {}), ("observed_attention", {}),
                         ("pyramidkv", {"window": 16})):
            same, worst, used = True, 0.0, True
            for si in range(4):
                a = KvccPress(os.path.join(POLICIES, name + ".lua"), ratio=0.5, **kw)
                b = KvccPress(os.path.join(POLICIES, name + ".lua"), ratio=0.5, capture_lse=False, **kw)
                del seen[:]
                na = hf_eval.story_nll(sdpa, stories[si], a)
                used = used and bool(seen) and all(seen)
                nb = hf_eval.story_nll(sdpa, stories[si], b)
                same = same and len(a.kept) == 5 and all(np.array_equal(a.kept[l], b.kept[l]) for l in b.kept)
                worst = max(worst, abs(na[0] / na[1] - nb[0] / nb[1]))
            S.check("%s: the prefill's lse = kvcc's own statistics, stories 0-3" % name, same and used and worst <= 1e-6,
                    "kept sets %s, lse passed %s, max |dNLL| %.1e" % ("identical" if same else "differ", used, worst))
    finally:
        kp.KvccPress._run = orig
    orig_li = kp.KvccPress._layer_inputs

    def noisy(self, *a):
        q, lse = orig_li(self, *a)
        return q, None if lse is None else lse + torch.randn(lse.shape, generator=torch.Generator().manual_seed(3))
    kp.KvccPress._layer_inputs = noisy
    try:
        a = KvccPress(os.path.join(POLICIES, "snapkv.lua"), ratio=0.5, window=16)
        hf_eval.story_nll(sdpa, stories[1], a)
    finally:
        kp.KvccPress._layer_inputs = orig_li
    b = KvccPress(os.path.join(POLICIES, "snapkv.lua"), ratio=0.5, window=16, capture_lse=False)
    hf_eval.story_nll(sdpa, stories[1], b)
    S.check("the captured lse is read (a perturbed one changes the kept sets)",
            not all(np.array_equal(a.kept[l], b.kept[l]) for l in b.kept))


def batches_and_attention(model, stories):
    """A batch of two stories (cut to one length) keeps per element what each alone keeps; sdpa
    attention gives eager's NLL through the mask fixes (per-layer and per-head lengths); the
    pipeline with per-layer lengths; a decode policy is refused."""
    from transformers import DynamicCache
    n = 150
    a, b = stories[1][:n], stories[3][:n]
    for name in ("snapkv", "pyramidkv"):
        path = os.path.join(POLICIES, name + ".lua")
        pb = KvccPress(path, ratio=0.5, window=16)
        with torch.no_grad(), pb(model):
            model(torch.tensor([a, b]), past_key_values=DynamicCache())
        ok = True
        for k, ids in enumerate((a, b)):
            p1 = KvccPress(path, ratio=0.5, window=16)
            with torch.no_grad(), p1(model):
                model(torch.tensor([ids]), past_key_values=DynamicCache())
            ok = ok and all(np.array_equal(pb.kept[l][k], p1.kept[l][0]) for l in p1.kept)
        S.check("%s: a batch of 2 keeps what each story keeps alone" % name, ok and len(pb.kept) == 5)
    sdpa = load_llama2c(os.path.join(DATA, "stories260K.bin"), attn_implementation="sdpa")
    for pol in ("pyramidkv.lua", "../python/tests/policies/snapkv_layer.lua", "../python/tests/policies/knorm_model.lua"):
        path = os.path.normpath(os.path.join(POLICIES, pol))
        e = hf_eval.story_nll(model, stories[4], KvccPress(path, ratio=0.5, window=16) if "knorm" not in pol
                              else KvccPress(path, ratio=0.5))
        f = hf_eval.story_nll(sdpa, stories[4], KvccPress(path, ratio=0.5, window=16) if "knorm" not in pol
                              else KvccPress(path, ratio=0.5))
        S.check("sdpa = eager through the mask fix: %s" % os.path.basename(pol), abs(e[0] / e[1] - f[0] / f[1]) < 1e-5,
                "%.7f vs %.7f" % (e[0] / e[1], f[0] / f[1]))
    from transformers import pipeline
    from kvcc.models.llama2c import Tok512Tokenizer
    pipe = pipeline("kv-press-text-generation", model=model, tokenizer=Tok512Tokenizer(os.path.join(DATA, "tok512.bin")),
                    device="cpu")
    cache = DynamicCache()
    out = pipe("Tom had a red ball. He liked to throw it high in the sky. One day the ball went over the fence.",
               questions=["Where did the ball go?", "What color was the ball?"],
               press=KvccPress(os.path.join(POLICIES, "pyramidkv.lua"), ratio=0.25, window=4), cache=cache,
               max_new_tokens=8)
    lens = [cache.layers[l].keys.shape[2] for l in range(5)]
    S.check("pipeline, two questions, PyramidKV's per-layer lengths", len(out["answers"]) == 2 and len(set(lens)) > 1,
            "rows per layer %s" % lens)
    S.raises("a decode policy is refused", ValueError, r"h2o runs during decoding",
             lambda: KvccPress(os.path.join(POLICIES, "h2o.lua"), ratio=0.5).post_init_from_model(model))
    import re
    import kvcc
    lsepol = os.path.join(ROOT, "python", "tests", "policies", "snapkv_lse.lua")
    S.raises("a policy reading x.lse: kvcc.CompileError with its file:line:col", kvcc.CompileError,
             re.escape(lsepol) + r":10:\d+: error: ",
             lambda: KvccPress(lsepol, ratio=0.5).post_init_from_model(model))


def generate_padded(model, stories):
    """Greedy generation over per-head padded caches is the same with SDPA as with eager
    attention. (A policy reading x.lse, which KvccPress would compute in torch, is refused by
    the compiler today: test_binding.py checks the refusal.)"""
    from transformers import DynamicCache
    sdpa = load_llama2c(os.path.join(DATA, "stories260K.bin"), attn_implementation="sdpa")
    ids = torch.tensor([stories[3][:150]])
    outs = []
    for m in (model, sdpa):
        press = KvccPress(os.path.join(ROOT, "python", "tests", "policies", "snapkv_layer.lua"), ratio=0.5)
        with torch.no_grad(), press(m):
            outs.append(m.generate(ids, past_key_values=DynamicCache(), max_new_tokens=20, do_sample=False,
                                   attention_mask=torch.ones_like(ids))[0, 150:].tolist())
    S.check("generate over per-head padded caches: SDPA = eager", outs[0] == outs[1], "%s" % outs[0][:10])


def eval_table(model, stories, lo, hi):
    pols = [os.path.join(POLICIES, p + ".lua") for p in
            ("streaming_llm", "knorm", "snapkv", "tova", "observed_attention", "keydiff", "pyramidkv", "random")]
    pols += [os.path.join(ROOT, "python", "tests", "policies", p) for p in ("snapkv_layer.lua", "knorm_model.lua")]
    ratios = "0,0.25,0.5,0.75"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "c.csv")
        r = subprocess.run([KVCC, "eval"] + pols + [
            "--model", os.path.join(DATA, "stories260K.bin"), "--tokenizer", os.path.join(DATA, "tok512.bin"),
            "--data", os.path.join(DATA, "tinystories_valid_70.txt"), "--ratios", ratios, "--param", "window=16",
            "--stories", "%d:%d" % (lo, hi), "--csv", out], capture_output=True, text=True)
        if not S.check("kvcc eval ran", r.returncode == 0, r.stderr.strip()[-300:]):
            return
        ref = {(row["policy"], float(row["ratio"])): row for row in csv.DictReader(open(out))}
    rows, notes = hf_eval.evaluate(pols, [float(x) for x in ratios.split(",")], stories[lo:hi],
                                   {"window": 16}, model, first=lo)
    worst, worst_at, bad = 0.0, "", []
    print("\n| policy | window | " + " | ".join("r = %s" % x for x in ratios.split(",")) + " |")
    print("|---|---:|" + "---:|" * len(ratios.split(",")))
    line = {}
    for name, rr, w, used, n, nll in rows:
        c = ref.get((name, rr))
        d = abs(nll - float(c["nll"])) if c else float("inf")
        if not c or int(c["predictions"]) != n or int(c["stories"]) != used or c["window"] != w or d > 1e-3:
            bad.append("%s r=%g: %s vs kvcc eval %s" % (name, rr, (used, n, round(nll, 6)),
                                                        (c["stories"], c["predictions"], c["nll"]) if c else None))
        if d > worst:
            worst, worst_at = d, "%s r=%g" % (name, rr)
        line.setdefault((name, w), []).append("%.6f (%.0e)" % (nll, d) if d > 0 else "%.6f (=)" % nll)
    for (name, w), cells in line.items():
        print("| %s | %s | %s |" % (name, w, " | ".join(cells)))
    print()
    S.check("kvcc eval table through transformers + KvccPress, stories %d:%d (%d rows)" % (lo, hi, len(rows)),
            not bad, "max |dNLL| %.1e (%s)%s" % (worst, worst_at, "; " + "; ".join(bad[:4]) if bad else ""))
    for n in notes:
        print(n)


def main():
    torch.set_num_threads(int(os.environ.get("KVCC_TORCH_THREADS", "1")))
    os.environ.setdefault("KVCC_CACHE_DIR", os.path.join(ROOT, "build", "py-cache"))
    tok = Tokenizer(os.path.join(DATA, "tok512.bin"))
    stories = [story_tokens(tok, s) for s in load_stories(os.path.join(DATA, "tinystories_valid_70.txt"))]
    model = load_llama2c(os.path.join(DATA, "stories260K.bin"))
    S.run("kvpress agreement", kvpress_agreement, model, stories)
    S.run("captured queries", captured_vs_recomputed, model, stories)
    S.run("lse from the prefill", lse_from_prefill, stories)
    S.run("batches and attention", batches_and_attention, model, stories)
    S.run("generate", generate_padded, model, stories)
    full = os.environ.get("KVCC_PY_FULL") == "1"
    S.run("eval table", eval_table, model, stories, 0, 70 if full else 6)
    return S.done()


if __name__ == "__main__":
    sys.exit(main())
