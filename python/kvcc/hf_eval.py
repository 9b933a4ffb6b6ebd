"""``kvcc eval``'s protocol through Hugging Face transformers and KvccPress (doc/eval.md).

The same prefill-compress-continue measurement as ``kvcc eval``, on the shipped checkpoint
converted to a ``LlamaForCausalLM`` (:mod:`kvcc.models.llama2c`), with the compression done by
:class:`kvcc.press.KvccPress` inside the model's forward — or by any kvpress press:

1. tokens = ``[BOS] + encode(story)`` truncated to 512; ``C = len // 2``;
2. ``with press(model): model(tokens[:C], past_key_values=cache)`` — the prefill, compressed by
   the press at the end of each layer's attention (ratio 0: no press);
3. ``model(tokens[C:len-1], past_key_values=cache, position_ids=C … len-2)`` — the continuation,
   teacher-forced at its own RoPE positions over the compressed cache;
4. the NLL of each next token, summed in double, pooled over the stories.

A story whose context is not longer than the policy's observation window is skipped for that
policy (every ratio), as ``kvcc eval`` does. Decode-time policies (H2O) are not supported by
KvccPress and are refused.

    python -m kvcc.hf_eval policies/snapkv.lua policies/knorm.lua --ratios 0,0.25,0.5 \\
        --param window=16 --stories 0:6 [--csv OUT] [--data … --model … --tokenizer …]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any, Optional, Sequence

import torch

from . import core
from .models.llama2c import load_llama2c
from .tokenizer import Tokenizer, load_stories, story_tokens

DATA = os.environ.get("KVCC_DATA") or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data"))


def story_nll(model: Any, ids: Sequence[int], press: Any = None) -> tuple[float, int]:
    """(sum of NLL, predictions) of one story under the protocol above."""
    from transformers import DynamicCache
    C = len(ids) // 2
    T = len(ids) - 1 - C
    if T <= 0:
        return 0.0, 0
    x = torch.tensor([list(ids)])
    cache = DynamicCache()
    with torch.no_grad():
        with press(model) if press is not None else contextlib.nullcontext():
            model(x[:, :C], past_key_values=cache)
        lg = model(x[:, C:-1], past_key_values=cache, position_ids=torch.arange(C, C + T)[None]).logits[0]
    lp = torch.log_softmax(lg.double(), -1)
    return float(-lp.gather(1, x[0, C + 1:, None]).sum()), T


def window_label(obs: int) -> str:
    return "all" if obs < 0 else (str(obs) if obs > 0 else "-")


def evaluate(policies: Sequence[str], ratios: Sequence[float], stories: Sequence[Sequence[int]],
             params: Optional[dict] = None, model: Any = None, first: int = 0,
             log: Any = None) -> tuple[list, list]:
    """Rows (policy, ratio, window, stories used, predictions, mean NLL) and skip notes.
    ``params``: {name: value} for every policy that has the param, {"policy.name": value} for
    one (``--param`` of kvcc eval)."""
    from .press import KvccPress
    params = params or {}
    rows, notes = [], []
    base = {}                                     # ratio 0: the uncompressed model, per story
    for path in policies:
        probe = core.compile(path, dtype="f32", head_dim=model.config.head_dim,
                             group=model.config.num_attention_heads // model.config.num_key_value_heads)
        if probe.when != "prefill":
            raise ValueError("%s: policy %s runs during decoding; KvccPress runs prefill policies" % (path, probe.name))
        par = {}
        for k, v in params.items():
            pn, _, n = k.rpartition(".")
            if (not pn or pn == probe.name) and n in probe.params:
                par[n] = v
        O = probe.obs(par)
        skipped = [first + i for i, ids in enumerate(stories) if O > 0 and len(ids) // 2 <= O]
        if skipped:
            notes.append("note: %s skipped %d of %d stories whose context is not longer than its observation "
                         "window (C <= %d): %s" % (probe.name, len(skipped), len(stories), O,
                                                  " ".join(map(str, skipped))))
        for r in ratios:
            tot, n, used = 0.0, 0, 0
            press = None if r == 0 else KvccPress(probe, ratio=r, params=par)
            for i, ids in enumerate(stories):
                if first + i in skipped:
                    continue
                if press is None:
                    if i not in base:
                        base[i] = story_nll(model, ids)
                    s, k = base[i]
                else:
                    s, k = story_nll(model, ids, press)
                tot, n, used = tot + s, n + k, used + 1
            rows.append((probe.name, r, window_label(O), used, n, tot / max(n, 1)))
            if log:
                log("%s %g: %.6f (%d predictions)" % (probe.name, r, tot / max(n, 1), n))
    return rows, notes


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kvcc.hf_eval", description=__doc__.split("\n")[0])
    ap.add_argument("policies", nargs="+")
    ap.add_argument("--model", default=os.path.join(DATA, "stories260K.bin"))
    ap.add_argument("--tokenizer", default=os.path.join(DATA, "tok512.bin"))
    ap.add_argument("--data", default=os.path.join(DATA, "tinystories_valid_70.txt"))
    ap.add_argument("--ratios", default="0,0.25,0.5,0.75")
    ap.add_argument("--param", action="append", default=[])
    ap.add_argument("--stories", default="")
    ap.add_argument("--csv")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    params = {}
    for p in a.param:
        k, eq, v = p.partition("=")
        if not eq:
            ap.error("--param wants [policy.]name=number, got %r" % p)
        params[k] = float(v)
    ratios = [float(x) for x in a.ratios.split(",") if x]
    tok = Tokenizer(a.tokenizer)
    texts = load_stories(a.data)
    lo, hi = 0, len(texts)
    if a.stories:
        s, _, e = a.stories.partition(":")
        lo, hi = int(s or 0), int(e or len(texts))
    stories = [story_tokens(tok, t) for t in texts[lo:hi]]
    model = load_llama2c(a.model)
    rows, notes = evaluate(a.policies, ratios, stories, params, model, first=lo)
    print("%-20s %6s %7s %8s %12s %10s" % ("policy", "ratio", "window", "stories", "predictions", "nll"))
    for name, r, w, used, n, nll in rows:
        print("%-20s %6.3g %7s %8d %12d %10.6f" % (name, r, w, used, n, nll))
    for n in notes:
        print(n)
    if a.csv:
        with open(a.csv, "w") as f:
            f.write("policy,ratio,window,stories,predictions,nll\n")
            for name, r, w, used, n, nll in rows:
                f.write("%s,%g,%s,%d,%d,%.6f\n" % (name, r, w, used, n, nll))
    return 0


if __name__ == "__main__":
    sys.exit(main())
