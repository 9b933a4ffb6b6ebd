#!/usr/bin/env python3
"""Independent numpy reference of the stories260K llama model and its tokenizer.

Written from ../shared/data/README.md (sections 1-3) only; it shares no code with
examples/llama/ (the C program it checks).  Everything is computed in float64 from the
float32 weights.

Library use:
    tok = Tokenizer(path); ids = tok.encode(text, bos=True); text = tok.decode(ids)
    m = Model(path)
    r = m.prefill(ids)         # dict: logits [T,V], q [L,Hq,T,hd], k/v [L,Hkv,T,hd] (post-RoPE)
    c = m.new_cache(); m.step(c, tok, pos) -> logits [V]   (incremental, KV cache)
    m.nll(ids) -> (sum_nll, n_predictions)
    load_stories(path) -> list of story strings

Command line:
    llama_ref.py selfcheck            reproduce every reference number of data/README.md
    llama_ref.py nll [--stories a:b] [--per-story]
    llama_ref.py greedy [--steps N]   token ids of greedy generation from BOS
    llama_ref.py logits               top-5 logits at position 0 after BOS
    llama_ref.py encode TEXT | --file FILE
"""
import argparse
import os
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.environ.get("KVCC_DATA") or os.path.normpath(
    os.path.join(HERE, "..", "..", "..", "shared", "data"))
MODEL_PATH = os.path.join(DATA, "stories260K.bin")
TOK_PATH = os.path.join(DATA, "tok512.bin")
STORIES_PATH = os.path.join(DATA, "tinystories_valid_70.txt")

BOS = 1
EOS = 2
MAX_TOKENS = 512  # README §3: each story truncated to 512 tokens

# ---- reference values, copied from data/README.md -------------------------------------
README_GREEDY40 = [403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317,
                   426, 338, 401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282,
                   295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352]
README_TOP5 = [(403, 17.0235), (385, 15.4062), (410, 13.1083), (317, 12.7692), (407, 12.4181)]
README_TEXT = ("Once upon a time, there was a little girl named Lily. She loved to play outside "
               "in the park. One day, she saw a big, red ball. She wanted to play with it, but "
               "it was too high")
README_NLL = 1.2894
README_STORY_NLL = [(1.2977, 171), (1.3210, 512), (1.2383, 236), (1.1112, 391),
                    (1.2210, 248), (1.1974, 378)]  # (mean nll, tokens incl. BOS)
README_TOKENS = 22691
README_PREDICTIONS = 22510
README_N_STORIES = 70


# ---- tokenizer ----------------------------------------------------------------------------
class Tokenizer:
    def __init__(self, path=TOK_PATH):
        with open(path, "rb") as f:
            raw = f.read()
        (self.max_token_length,) = struct.unpack_from("<i", raw, 0)
        off = 4
        pieces, scores = [], []
        while off < len(raw):
            score, n = struct.unpack_from("<fi", raw, off)
            off += 8
            pieces.append(raw[off:off + n])
            scores.append(score)
            off += n
        self.pieces = pieces          # bytes
        self.scores = scores
        self.lookup = {}
        for i, p in enumerate(pieces):
            self.lookup.setdefault(p, i)  # first id wins for duplicate pieces

    @property
    def vocab_size(self):
        return len(self.pieces)

    def encode(self, text, bos=True):
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        ids = []
        if data:
            ids.append(self.lookup[b" "])
        # split into UTF-8 code points (a lead byte plus its continuation bytes, at most 4)
        i = 0
        while i < len(data):
            j = i + 1
            while j < len(data) and (data[j] & 0xC0) == 0x80 and j - i < 4:
                j += 1
            cp = data[i:j]
            if cp in self.lookup:
                ids.append(self.lookup[cp])
            else:
                ids.extend(b + 3 for b in cp)  # byte fallback: <0xNN> is id NN+3
            i = j
        # greedy merges: always the adjacent pair with the highest score (leftmost on ties)
        def pair(a, b):
            m = self.lookup.get(self.pieces[a] + self.pieces[b])
            return (-np.inf, -1) if m is None else (self.scores[m], m)
        pr = [pair(ids[k], ids[k + 1]) for k in range(len(ids) - 1)]
        sc = np.array([p[0] for p in pr], dtype=np.float64)
        mid = [p[1] for p in pr]
        while len(sc) and sc.max() > -np.inf:
            k = int(np.argmax(sc))               # first maximum = leftmost pair
            ids[k:k + 2] = [mid[k]]
            sc = np.delete(sc, k)
            del mid[k]
            for j in (k - 1, k):                 # the pairs touching the merged token changed
                if 0 <= j < len(ids) - 1:
                    sc[j], mid[j] = pair(ids[j], ids[j + 1])
        return ([BOS] if bos else []) + ids

    def piece_bytes(self, prev, tok):
        p = self.pieces[tok]
        if prev == BOS and p.startswith(b" "):
            p = p[1:]
        if len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):
            try:
                return bytes([int(p[3:5], 16)])
            except ValueError:
                pass
        return p

    def decode(self, ids):
        out = b""
        prev = None
        for t in ids:
            if t == BOS:
                prev = t
                continue
            out += self.piece_bytes(prev, t)
            prev = t
        return out.decode("utf-8", errors="replace")


# ---- model --------------------------------------------------------------------------------
class Model:
    def __init__(self, path=MODEL_PATH):
        raw = open(path, "rb").read()
        if len(raw) < 28:
            raise ValueError("%s: too short for a header" % path)
        hdr = struct.unpack_from("<7i", raw, 0)
        (self.dim, self.hidden_dim, self.n_layers, self.n_heads, self.n_kv_heads,
         vocab, self.seq_len) = hdr
        self.shared = vocab > 0
        self.vocab_size = abs(vocab)
        D, F, L, V = self.dim, self.hidden_dim, self.n_layers, self.vocab_size
        self.hd = D // self.n_heads
        KV = self.n_kv_heads * self.hd
        self.G = self.n_heads // self.n_kv_heads
        w = np.frombuffer(raw, dtype="<f4", offset=28).astype(np.float64)
        shapes = [("emb", (V, D)), ("rms_att", (L, D)), ("wq", (L, D, D)), ("wk", (L, KV, D)),
                  ("wv", (L, KV, D)), ("wo", (L, D, D)), ("rms_ffn", (L, D)),
                  ("w1", (L, F, D)), ("w2", (L, D, F)), ("w3", (L, F, D)), ("rms_final", (D,)),
                  ("freq_real", (self.seq_len, self.hd // 2)),
                  ("freq_imag", (self.seq_len, self.hd // 2))]
        if not self.shared:
            shapes.append(("wcls", (V, D)))
        need = sum(int(np.prod(s)) for _, s in shapes)
        if w.size != need:
            raise ValueError("%s: %d floats after the header, expected %d"
                             % (path, w.size, need))
        off = 0
        for name, s in shapes:
            n = int(np.prod(s))
            setattr(self, name, w[off:off + n].reshape(s))
            off += n
        if self.shared:
            self.wcls = self.emb
        # RoPE: pair (i, i+1) inside a head, freq = 10000^-(i/hd) for even i
        self.inv_freq = 10000.0 ** (-(np.arange(0, self.hd, 2, dtype=np.float64) / self.hd))

    # -- pieces
    @staticmethod
    def rmsnorm(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-5) * w

    def rope(self, x, pos):
        """x [..., T, heads, hd], pos [T]: rotate adjacent pairs."""
        ang = np.asarray(pos, dtype=np.float64)[:, None] * self.inv_freq[None, :]  # [T, hd/2]
        c = np.cos(ang)[:, None, :]
        s = np.sin(ang)[:, None, :]
        x0 = x[..., 0::2]
        x1 = x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def ffn(self, l, x):
        h = self.rmsnorm(x, self.rms_ffn[l])
        a = h @ self.w1[l].T
        b = h @ self.w3[l].T
        return (a / (1.0 + np.exp(-a)) * b) @ self.w2[l].T

    def qkv(self, l, x, pos):
        """x [T, D] -> q [T, Hq, hd], k, v [T, Hkv, hd] (q, k post-RoPE)."""
        T = x.shape[0]
        h = self.rmsnorm(x, self.rms_att[l])
        q = (h @ self.wq[l].T).reshape(T, self.n_heads, self.hd)
        k = (h @ self.wk[l].T).reshape(T, self.n_kv_heads, self.hd)
        v = (h @ self.wv[l].T).reshape(T, self.n_kv_heads, self.hd)
        return self.rope(q, pos), self.rope(k, pos), v

    def logits_of(self, x):
        return self.rmsnorm(x, self.rms_final) @ self.wcls.T

    # -- full causal prefill
    def prefill(self, tokens, pos0=0):
        tokens = np.asarray(tokens)
        T = len(tokens)
        pos = np.arange(pos0, pos0 + T)
        x = self.emb[tokens].copy()
        Qs, Ks, Vs = [], [], []
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for l in range(self.n_layers):
            q, k, v = self.qkv(l, x, pos)
            qh = q.transpose(1, 0, 2).reshape(self.n_kv_heads, self.G, T, self.hd)
            kh = k.transpose(1, 0, 2)  # [Hkv, T, hd]
            vh = v.transpose(1, 0, 2)
            s = qh @ kh[:, None].transpose(0, 1, 3, 2)         # [Hkv, G, T, T]
            s *= 1.0 / np.sqrt(self.hd)
            s += mask
            s -= s.max(-1, keepdims=True)
            np.exp(s, out=s)
            o = (s @ vh[:, None]) / s.sum(-1, keepdims=True)   # [Hkv, G, T, hd]
            o = o.reshape(self.n_heads, T, self.hd).transpose(1, 0, 2).reshape(T, self.dim)
            x = x + o @ self.wo[l].T
            x = x + self.ffn(l, x)
            Qs.append(q.transpose(1, 0, 2))
            Ks.append(kh)
            Vs.append(vh)
        return {"logits": self.logits_of(x), "q": np.stack(Qs), "k": np.stack(Ks),
                "v": np.stack(Vs), "pos": pos}

    # -- incremental decoding with a KV cache
    def new_cache(self):
        """Per (layer) lists of K, V arrays [Hkv, n, hd]; positions are implicit."""
        z = np.zeros((self.n_kv_heads, 0, self.hd))
        return {"k": [z.copy() for _ in range(self.n_layers)],
                "v": [z.copy() for _ in range(self.n_layers)]}

    def step(self, cache, token, pos):
        x = self.emb[token][None, :].copy()
        for l in range(self.n_layers):
            q, k, v = self.qkv(l, x, [pos])
            cache["k"][l] = np.concatenate([cache["k"][l], k.transpose(1, 0, 2)], axis=1)
            cache["v"][l] = np.concatenate([cache["v"][l], v.transpose(1, 0, 2)], axis=1)
            K, V = cache["k"][l], cache["v"][l]
            qh = q[0].reshape(self.n_kv_heads, self.G, self.hd)
            s = np.einsum("hgd,hsd->hgs", qh, K) / np.sqrt(self.hd)
            s -= s.max(-1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(-1, keepdims=True)
            o = np.einsum("hgs,hsd->hgd", p, V).reshape(1, self.dim)
            x = x + o @ self.wo[l].T
            x = x + self.ffn(l, x)
        return self.logits_of(x)[0]

    # -- scoring
    @staticmethod
    def token_nll(logits, targets):
        """-log softmax(logits)[target] for each row."""
        m = logits.max(-1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(-1))
        return lse - logits[np.arange(len(targets)), targets]

    def nll(self, tokens):
        """(sum of next-token NLL, number of predictions) over a full sequence."""
        r = self.prefill(tokens)
        t = np.asarray(tokens)
        nl = self.token_nll(r["logits"][:-1], t[1:])
        return float(nl.sum()), len(nl)


# ---- data -----------------------------------------------------------------------------------
def load_stories(path=STORIES_PATH):
    """Stories are terminated by a line that is exactly '<|endoftext|>'.  Each story is the
    text between separators with its surrounding newlines stripped; empty pieces are dropped."""
    text = open(path, "rb").read().decode("utf-8")
    stories, cur = [], []
    for line in text.split("\n"):
        if line == "<|endoftext|>":
            stories.append("\n".join(cur).strip("\n"))
            cur = []
        else:
            cur.append(line)
    tail = "\n".join(cur).strip("\n")
    if tail:
        stories.append(tail)
    return [s for s in stories if s]


def story_tokens(tok, story, max_tokens=MAX_TOKENS):
    return tok.encode(story, bos=True)[:max_tokens]


def parse_range(s, n):
    if not s:
        return 0, n
    a, _, b = s.partition(":")
    a = int(a) if a else 0
    b = int(b) if b else n
    return max(0, a), min(n, b)


# ---- commands --------------------------------------------------------------------------------
def greedy(m, steps, prompt_ids=(BOS,)):
    cache = m.new_cache()
    ids = list(prompt_ids)
    out = []
    for p in range(len(ids) + steps - 1):
        logits = m.step(cache, ids[p] if p < len(ids) else out[-1], p)
        if p >= len(ids) - 1:
            out.append(int(np.argmax(logits)))
    return out


def top5(m):
    lg = m.step(m.new_cache(), BOS, 0)
    order = np.argsort(-lg, kind="stable")[:5]
    return [(int(i), float(lg[i])) for i in order]


def selfcheck():
    results = []

    def check(name, ok, detail=""):
        results.append(ok)
        print("%s %s%s" % ("PASS" if ok else "FAIL", name, (": " + detail) if detail else ""))

    t0 = time.time()
    tok = Tokenizer()
    m = Model()
    ids = tok.encode("Once upon a time")
    check("oracle encode 'Once upon a time'", ids == [1, 403, 407, 261, 378], str(ids))
    check("oracle decode round trip", tok.decode(ids) == "Once upon a time", repr(tok.decode(ids)))
    ids = tok.encode("caf\u00e9 \u00f9 \u201cx\u201d")
    check("oracle encode/decode non-ASCII", tok.decode(ids) == "caf\u00e9 \u00f9 \u201cx\u201d",
          repr(tok.decode(ids)))

    g = greedy(m, 40)
    check("oracle greedy 40 ids (incremental)", g == README_GREEDY40, " ".join(map(str, g)))
    txt = tok.decode([BOS] + g)
    check("oracle greedy text is a prefix of README text", README_TEXT.startswith(txt), repr(txt))
    r = m.prefill([BOS] + g[:-1])
    check("oracle greedy ids from prefill argmax",
          [int(i) for i in r["logits"].argmax(-1)] == g)

    t5 = top5(m)
    err = max(abs(a[1] - b[1]) for a, b in zip(t5, README_TOP5))
    check("oracle top-5 logits at pos 0", [a[0] for a in t5] == [b[0] for b in README_TOP5]
          and err < 1e-3, "max err %.2e" % err)

    stories = load_stories()
    check("oracle story count", len(stories) == README_N_STORIES, str(len(stories)))
    toks = [story_tokens(tok, s) for s in stories]
    ntok = sum(len(t) for t in toks)
    npred = sum(len(t) - 1 for t in toks)
    nfull = sum(len(tok.encode(s)) for s in stories)
    check("oracle token counts", nfull == README_TOKENS and npred == README_PREDICTIONS,
          "%d tokens before truncation, %d after, %d predictions" % (nfull, ntok, npred))

    # prefill vs incremental KV-cache decoding on story 0
    t = toks[0][:64]
    r = m.prefill(t)
    c = m.new_cache()
    d = max(float(np.abs(m.step(c, tk, p) - r["logits"][p]).max()) for p, tk in enumerate(t))
    dk = float(np.abs(np.stack(c["k"]) - r["k"]).max())
    check("oracle prefill == incremental decoding", d < 1e-9 and dk < 1e-9,
          "logits %.1e, K %.1e" % (d, dk))

    tot, n = 0.0, 0
    per = []
    for t in toks:
        s, k = m.nll(t)
        per.append((s / k, len(t)))
        tot += s
        n += k
    mean = tot / n
    check("oracle mean NLL over 70 stories", abs(mean - README_NLL) < 5e-4 and n == README_PREDICTIONS,
          "%.5f (README %.4f), %d predictions, ppl %.3f" % (mean, README_NLL, n, np.exp(mean)))
    for i, (ref, ntk) in enumerate(README_STORY_NLL):
        got, gtk = per[i]
        check("oracle story %d NLL" % i, abs(got - ref) <= 6e-5 and gtk == ntk,
              "%.5f (README %.4f), %d tokens" % (got, ref, gtk))
    nf = sum(1 for x in results if not x)
    print("oracle self-check: %d passed, %d failed (%.1f s)" % (len(results) - nf, nf,
                                                                time.time() - t0))
    return 1 if nf else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cmd", choices=["selfcheck", "nll", "greedy", "logits", "encode"])
    ap.add_argument("text", nargs="?", default="")
    ap.add_argument("--stories", default="")
    ap.add_argument("--per-story", action="store_true")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--data", default=STORIES_PATH)
    ap.add_argument("--file", help="encode: the bytes of this file instead of TEXT")
    a = ap.parse_args(argv)
    if a.cmd == "selfcheck":
        return selfcheck()
    tok = Tokenizer()
    if a.cmd == "encode":
        text = open(a.file, "rb").read() if a.file else a.text
        print(" ".join(map(str, tok.encode(text))))
        return 0
    m = Model()
    if a.cmd == "greedy":
        print(" ".join(map(str, greedy(m, a.steps))))
    elif a.cmd == "logits":
        for i, v in top5(m):
            print("%d %.6f" % (i, v))
    elif a.cmd == "nll":
        stories = load_stories(a.data)
        lo, hi = parse_range(a.stories, len(stories))
        tot, n, ntok, nfull = 0.0, 0, 0, 0
        for i in range(lo, hi):
            full = tok.encode(stories[i])
            t = full[:MAX_TOKENS]
            s, k = m.nll(t)
            tot += s
            n += k
            ntok += len(t)
            nfull += len(full)
            if a.per_story:
                print("story %d tokens %d predictions %d nll %.6f" % (i, len(t), k, s / k))
        print("stories %d tokens %d truncated_tokens %d predictions %d nll %.6f ppl %.4f"
              % (hi - lo, nfull, ntok, n, tot / max(n, 1), np.exp(tot / max(n, 1))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
