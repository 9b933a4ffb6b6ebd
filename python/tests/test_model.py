#!/usr/bin/env python3
"""The shipped checkpoint as a Hugging Face LlamaForCausalLM (kvcc.models.llama2c) and kvcc's
tokenizer (kvcc.tokenizer, and its Hugging Face wrapper) against the reference numbers of
shared/data/README.md: the 40 greedy ids after BOS, the top-5 logits at position 0, the mean
NLL 1.2894 ± 0.0005 over tinystories_valid_70 (22,510 predictions), the per-story NLL of
stories 0-5, the token counts; then KvccPress inside kvpress's text-generation pipeline and
around model.generate."""
import os
import sys

import numpy as np
import torch

from harness import DATA, POLICIES, Suite

from kvcc.models.llama2c import Tok512Tokenizer, load_llama2c, permute_rotary
from kvcc.tokenizer import Tokenizer, load_stories, story_tokens

S = Suite("test_model")

# data/README.md
GREEDY40 = [403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267,
            337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370,
            432, 352]
TOP5 = [(403, 17.0235), (385, 15.4062), (410, 13.1083), (317, 12.7692), (407, 12.4181)]
STORY_NLL = [(1.2977, 171), (1.3210, 512), (1.2383, 236), (1.1112, 391), (1.2210, 248), (1.1974, 378)]


def tokenizer(tok, stories):
    S.check("encode 'Once upon a time'", tok.encode("Once upon a time") == [1, 403, 407, 261, 378],
            str(tok.encode("Once upon a time")))
    total = sum(len(tok.encode(s)) for s in stories)
    S.check("70 stories, 22,691 tokens with BOS", len(stories) == 70 and total == 22691, "%d stories, %d tokens"
            % (len(stories), total))
    bad = [i for i, s in enumerate(stories) if tok.decode(tok.encode(s)) != s]
    S.check("decode(encode(story)) == story", not bad, "differs for %s" % bad[:5])
    hf = Tok512Tokenizer(os.path.join(DATA, "tok512.bin"))
    bad = [i for i, s in enumerate(stories)
           if hf.encode(hf.bos_token + s, add_special_tokens=False) != tok.encode(s, bos=True)]
    S.check("Hugging Face wrapper: encode(bos + story) == [BOS] + encode(story)", not bad, "differs for %s" % bad[:5])
    ids = tok.encode(stories[3], bos=False)
    S.check("Hugging Face wrapper: decode", hf.decode(ids).lstrip(" ") == stories[3])


def model_numbers(model, tok, stories):
    w = np.arange(2 * 4 * 3).reshape(8, 3).astype(np.float32)         # 2 heads of d = 4
    S.check("rotary permutation: rows 0,2,1,3 per head", permute_rotary(w, 2)[:, 0].tolist() ==
            [0, 6, 3, 9, 12, 18, 15, 21])
    with torch.no_grad():
        g = model.generate(torch.tensor([[1]]), max_new_tokens=40, do_sample=False,
                           attention_mask=torch.ones(1, 1, dtype=torch.long))[0, 1:].tolist()
        lg = model(torch.tensor([[1]])).logits[0, -1]
    S.check("greedy: the README's 40 ids", g == GREEDY40, str(g))
    v, i = lg.topk(5)
    top = list(zip(i.tolist(), v.tolist()))
    S.check("top-5 logits at pos 0 (±1e-4)", [a for a, _ in top] == [a for a, _ in TOP5] and
            all(abs(x - y) <= 1e-4 for (_, x), (_, y) in zip(top, TOP5)),
            " ".join("(%d, %.4f)" % t for t in top))
    tot, n, per = 0.0, 0, []
    with torch.no_grad():
        for k, s in enumerate(stories):
            ids = story_tokens(tok, s)
            x = torch.tensor([ids])
            lp = torch.log_softmax(model(x).logits[0].double(), -1)
            nl = float(-lp[:-1].gather(1, x[0, 1:, None]).sum())
            tot, n = tot + nl, n + len(ids) - 1
            if k < 6:
                per.append((nl / (len(ids) - 1), len(ids)))
    S.check("mean NLL 1.2894 ± 0.0005 over 22,510 predictions", n == 22510 and abs(tot / n - 1.2894) <= 5e-4,
            "%.6f over %d predictions" % (tot / n, n))
    S.check("per-story NLL of stories 0-5 (±5e-4)", all(abs(a - b) <= 5e-4 and la == lb for (a, la), (b, lb)
                                                       in zip(per, STORY_NLL)),
            " ".join("%.4f(%d)" % p for p in per))


def pipeline_and_generate(model, tok, stories):
    from transformers import DynamicCache, pipeline
    import kvpress  # noqa: F401  (registers the pipeline)
    from kvcc.press import KvccPress
    hf = Tok512Tokenizer(os.path.join(DATA, "tok512.bin"))
    pipe = pipeline("kv-press-text-generation", model=model, tokenizer=hf, device="cpu")
    context = stories[0]
    n_ctx = len(hf.encode(hf.bos_token + context, add_special_tokens=False))
    press = KvccPress(os.path.join(POLICIES, "snapkv.lua"), ratio=0.5, window=16)
    cache = DynamicCache()
    out = pipe(context, question="What did Spot see?", press=press, cache=cache, max_new_tokens=12)
    kept = cache.get_seq_length()
    S.check("kvpress pipeline with KvccPress: an answer, the context's cache halved",
            isinstance(out.get("answer"), str) and kept == n_ctx // 2 and
            all(cache.layers[l].keys.shape[2] == n_ctx // 2 for l in range(len(cache.layers))),
            "context %d tokens → %d rows; answer %r" % (n_ctx, kept, out.get("answer")))
    ids = torch.tensor([tok.encode(stories[2])[:120]])
    cache = DynamicCache()
    with torch.no_grad(), KvccPress(os.path.join(POLICIES, "tova.lua"), ratio=0.75)(model):
        g = model.generate(ids, past_key_values=cache, max_new_tokens=8, do_sample=False,
                           attention_mask=torch.ones_like(ids))
    S.check("model.generate inside the press: the prompt's cache is a quarter",
            g.shape[1] == 128 and cache.get_seq_length() == 30 + 8 - 1,
            "%d rows after 8 new tokens (120 → 30 + 7)" % cache.get_seq_length())


def main():
    torch.set_num_threads(int(os.environ.get("KVCC_TORCH_THREADS", "1")))
    os.environ.setdefault("KVCC_CACHE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                         "..", "..", "build", "py-cache"))
    tok = Tokenizer(os.path.join(DATA, "tok512.bin"))
    stories = load_stories(os.path.join(DATA, "tinystories_valid_70.txt"))
    model = load_llama2c(os.path.join(DATA, "stories260K.bin"))
    S.run("tokenizer", tokenizer, tok, stories)
    S.run("model", model_numbers, model, tok, stories)
    S.run("pipeline", pipeline_and_generate, model, tok, stories)
    return S.done()


if __name__ == "__main__":
    sys.exit(main())
