"""kvref -- independent reference implementation of kvcc's built-in KV-cache policies.

Written from the published formulas (NVIDIA/kvpress, kvpress/presses/*.py, snapshot 8bb29b9)
plus kvcc's budget rules (shared/DESIGN.md section 3).  Python 3 + numpy only; all
arithmetic is float64 after the inputs are rounded to their storage type.

Entry point: compress(policy, K, V, Q, ...).  See tests/oracle/README.md for the formulas.
"""

import math

import numpy as np

__all__ = ["POLICIES", "DEFAULTS", "compress", "round_storage", "n_keep_uniform",
           "pyramid_budgets", "random_u", "causal_softmax", "select", "boundary_margin",
           "TOPK_POLICIES", "select_topk", "topk_margin", "compress_topk"]

DEFAULTS = {
    "streaming_llm": {"sinks": 4},
    "knorm": {},
    "snapkv": {"window": 64, "kernel": 5},
    "pyramidkv": {"window": 64, "kernel": 5, "beta": 20},
    "tova": {"window": 1},
    "observed_attention": {},
    "keydiff": {},
    "random": {"seed": 0},
}
POLICIES = tuple(DEFAULTS)

_M64 = (1 << 64) - 1


# --------------------------------------------------------------------------- storage types

def round_storage(x, dtype="f32"):
    """Round x to the storage type and return it as float32 (exactly representable).

    f32: round-to-nearest-even to float32.  f16: via float16 (RNE).  bf16: RNE on the
    float32 bit pattern, keeping the upper 16 bits."""
    x32 = np.asarray(x, dtype=np.float32)
    if dtype == "f32":
        return x32.copy()
    if dtype == "f16":
        return x32.astype(np.float16).astype(np.float32)
    if dtype == "bf16":
        b = x32.view(np.uint32).astype(np.uint64)
        b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
        return b.astype(np.uint32).view(np.float32).copy()
    raise ValueError("unknown dtype %r (f32, f16, bf16)" % (dtype,))


# --------------------------------------------------------------------------- budgets

def n_keep_uniform(n, ratio=None, budget=None):
    """Tokens kept per head.  ratio r (fraction removed): int(n * (1.0 - r)) evaluated in
    float64, exactly as kvpress ScorerPress.compress; budget B: min(B, n)."""
    if (ratio is None) == (budget is None):
        raise ValueError("give exactly one of ratio / budget")
    if ratio is not None:
        r = float(ratio)
        if not 0.0 <= r < 1.0:
            raise ValueError("ratio must be in [0, 1)")
        return int(n * (1.0 - r))
    b = int(budget)
    if b < 0:
        raise ValueError("budget must be >= 0")
    return min(b, n)


def pyramid_budgets(n, L, window, beta, ratio=None, budget=None):
    """Per-layer kept-token counts of kvpress PyramidKVPress.get_layer_budget (float64, the
    same operation order; round() is Python's round-half-to-even).  With a budget B the
    real-valued n*(1-r) is replaced by min(B, n)."""
    if (ratio is None) == (budget is None):
        raise ValueError("give exactly one of ratio / budget")
    if beta < 1:
        raise ValueError("beta must be >= 1")
    if ratio is not None:
        r = float(ratio)
        if not 0.0 <= r < 1.0:
            raise ValueError("ratio must be in [0, 1)")
        kept = n * (1.0 - r)
    else:
        if int(budget) < 0:
            raise ValueError("budget must be >= 0")
        kept = float(min(int(budget), n))
    w = window
    max_capacity_prompt = w + kept
    min_num = (max_capacity_prompt - w) / beta
    max_num = (max_capacity_prompt - w) * 2 - min_num
    if max_num >= n - w:
        max_num = n - w
        min_num = (max_capacity_prompt - w) * 2 - max_num
    if not (n >= max_num >= min_num >= w):
        return [round(kept)] * L                      # fallback: uniform (SnapKV)
    if L < 2:
        raise ValueError("pyramidkv needs at least 2 layers (steps divide by L-1)")
    steps = (max_num - min_num) / (L - 1)
    return [round(max_num - l * steps) for l in range(L)]


# --------------------------------------------------------------------------- helpers

def causal_softmax(Q, K, qpos, pos):
    """A[l,h,g,o,t] = softmax_t(Q[l,h,g,o].K[l,h,t] / sqrt(d)), token t visible to query o
    iff pos[t] <= qpos[o]."""
    d = K.shape[-1]
    logits = np.einsum("lhgod,lhtd->lhgot", Q, K) / math.sqrt(d)
    visible = pos[None, :] <= qpos[:, None]                      # [O, n]
    if not visible.any(axis=1).all():
        raise ValueError("an observation query sees no token")
    logits = np.where(visible, logits, -np.inf)
    m = logits.max(axis=-1, keepdims=True)
    e = np.exp(logits - m)
    return e / e.sum(axis=-1, keepdims=True)


def _avgpool_include_pad(x, k):
    """torch avg_pool1d(x, k, stride=1, padding=k//2), count_include_pad=True, last axis."""
    if k < 1 or k % 2 == 0:
        raise ValueError("kernel must be odd and >= 1")
    p = k // 2
    m = x.shape[-1]
    padded = np.zeros(x.shape[:-1] + (m + 2 * p,), dtype=np.float64)
    padded[..., p:p + m] = x
    out = np.zeros_like(x, dtype=np.float64)
    for j in range(k):
        out += padded[..., j:j + m]
    return out / k


def seed_int(seed):
    """kv.random's seed as an integer (DESIGN: truncated toward zero; 0 when NaN or
    |seed| >= 2**63, where converting is undefined in C)."""
    s = float(seed)
    return int(s) if abs(s) < 2.0 ** 63 else 0


def random_u(seed, layer, head, pos):
    """Counter-based uniform in [0,1): splitmix64 finaliser of seed + c*golden, top 24 bits.
    seed a number (seed_int applies); layer, head, pos broadcast (integers >= 0)."""
    seed = seed_int(seed)
    l = np.asarray(layer, dtype=np.uint64)
    h = np.asarray(head, dtype=np.uint64)
    p = np.asarray(pos, dtype=np.int64).astype(np.uint64)
    s = np.uint64(int(seed) & _M64)
    with np.errstate(over="ignore"):
        c = (l << np.uint64(40)) ^ (h << np.uint64(24)) ^ p
        z = s + c * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) * 2.0 ** -24


def select(scores, protected, n_keep, sinks=None):
    """Indices kept for one (l, h), returned ascending.  Rank (DESIGN section 3): the sinks
    (lower position first), then the other protected tokens, the recent window, newest
    first -- so that a budget below the protected count keeps the sinks and the newest
    tokens -- then higher score, ties -> lower position."""
    n = scores.shape[0]
    t = np.arange(n)
    sinks = np.zeros(n, dtype=bool) if sinks is None else np.asarray(sinks, dtype=bool)
    recent = protected & ~sinks
    cls = np.where(sinks, 0, np.where(recent, 1, 2))
    key = np.where(sinks, t, np.where(recent, -t, -np.nan_to_num(scores, nan=0.0)))
    order = np.lexsort((t, key, cls))                # last key is the primary one
    return np.sort(order[:n_keep]).astype(np.int64)


def boundary_margin(scores, protected, kept):
    """Relative gap between the lowest kept and the highest dropped unprotected score of one
    (l, h); inf when one side is empty."""
    n = scores.shape[0]
    kmask = np.zeros(n, dtype=bool)
    kmask[kept] = True
    a = scores[kmask & ~protected]
    b = scores[~kmask & ~protected]
    if a.size == 0 or b.size == 0:
        return math.inf
    sa, sb = a.min(), b.max()
    return abs(sa - sb) / max(abs(sa), abs(sb), 1e-30)


# --------------------------------------------------------------------------- policies

def _scores_snapkv(K, Q, qpos, pos, p):
    L, H, n, d = K.shape
    w, k = int(p["window"]), int(p["kernel"])
    if not n > w:
        raise ValueError("snapkv/pyramidkv need n > window (n=%d, window=%d)" % (n, w))
    if Q.shape[3] != w:
        raise ValueError("snapkv/pyramidkv need O == window observation queries")
    A = causal_softmax(Q, K, qpos, pos)                     # [L,H,G,w,n]
    pre = n - w
    a = A[..., :pre].mean(axis=3)                           # mean over obs -> [L,H,G,pre]
    a = _avgpool_include_pad(a, k)                          # pool per query head
    s = np.full((L, H, n), np.nan)
    s[..., :pre] = a.mean(axis=2)                           # mean over group
    prot = np.zeros(n, dtype=bool)
    prot[pre:] = True
    return s, prot


def _scores(policy, K, Q, qpos, pos, p):
    L, H, n, d = K.shape
    t = np.arange(n)
    if policy == "streaming_llm":
        return np.full((L, H, n), np.nan), None               # selection is positional
    if policy == "knorm":
        return -np.sqrt(np.einsum("lhtd,lhtd->lht", K, K)), np.zeros(n, dtype=bool)
    if policy == "keydiff":
        norm = np.sqrt(np.einsum("lhtd,lhtd->lht", K, K))
        unit = K / np.maximum(norm, 1e-12)[..., None]
        anchor = unit.mean(axis=2)                          # [L,H,d]
        dot = np.einsum("lhtd,lhd->lht", K, anchor)
        an = np.sqrt(np.einsum("lhd,lhd->lh", anchor, anchor))
        cos = dot / np.maximum(norm * an[..., None], 1e-8)
        return -cos, np.zeros(n, dtype=bool)
    if policy in ("snapkv", "pyramidkv"):
        return _scores_snapkv(K, Q, qpos, pos, p)
    if policy == "tova":
        w = int(p["window"])
        if Q.shape[3] != w or not n > w:
            raise ValueError("tova needs O == window observation queries and n > window")
        A = causal_softmax(Q, K, qpos, pos)                 # [L,H,G,w,n]
        s_layer = A[..., : n - w].mean(axis=(1, 2, 3))      # all H*G heads (and obs)
        s = np.full((L, H, n), np.nan)
        s[..., : n - w] = s_layer[:, None, :]
        return s, t >= n - w
    if policy == "observed_attention":
        if Q.shape[3] != n:
            raise ValueError("observed_attention needs O == n queries")
        A = causal_softmax(Q, K, qpos, pos)                 # [L,H,G,n,n]
        s = (A.sum(axis=3) / (n - t)).mean(axis=2)          # sum over queries / (n-t), mean g
        return s, np.zeros(n, dtype=bool)
    if policy == "random":
        lay = np.arange(L)[:, None, None]
        head = np.arange(H)[None, :, None]
        return random_u(p["seed"], lay, head, pos[None, None, :]), np.zeros(n, dtype=bool)
    raise ValueError("unknown policy %r" % (policy,))


def compress(policy, K, V, Q, params=None, ratio=None, budget=None, qpos=None, pos=None,
             dtype="f32"):
    """K, V: float arrays [L, H, n, d] (keys post-RoPE). Q: [L, H, G, O, d] observation
    queries (query head index = h*G + g; O may be 0 for policies that need no queries).
    qpos: int [O] absolute positions of the observation queries (default pos[n-O:], which is
    n-O .. n-1 for the default pos).  pos: int [n] absolute token positions (default 0..n-1).
    params: dict overriding defaults.  Exactly one of ratio (fraction removed) / budget
    (tokens kept per head, incl. protected).  dtype: 'f32' | 'f16' | 'bf16'.

    Returns dict: scores [L,H,n] float64 (NaN where no score is defined), kept [L,H,n_keep]
    int64 ascending (pyramidkv: a list of per-layer arrays [H, n_keep_l]), K_out, V_out
    (float32 storage values of the kept rows, same layout), margin, n_keep (int, or list per
    layer for pyramidkv), protected [n] bool (None for streaming_llm)."""
    if policy not in DEFAULTS:
        raise ValueError("unknown policy %r" % (policy,))
    p = dict(DEFAULTS[policy])
    for key, val in (params or {}).items():
        if key not in p:
            raise ValueError("policy %s has no parameter %r" % (policy, key))
        p[key] = val

    Ks = round_storage(K, dtype)
    Vs = round_storage(V, dtype)
    Qs = round_storage(Q, dtype)
    if Ks.ndim != 4 or Vs.shape != Ks.shape:
        raise ValueError("K, V must be [L, H, n, d] of the same shape")
    L, H, n, d = Ks.shape
    if Qs.ndim != 5 or Qs.shape[:2] != (L, H) or Qs.shape[4] != d:
        raise ValueError("Q must be [L, H, G, O, d]")
    O = Qs.shape[3]
    pos = np.arange(n, dtype=np.int64) if pos is None else np.asarray(pos, dtype=np.int64)
    if pos.shape != (n,):
        raise ValueError("pos must have shape [n]")
    if qpos is None:
        qpos = pos[n - O:] if O <= n else None
        if qpos is None:
            raise ValueError("O > n needs explicit qpos")
    qpos = np.asarray(qpos, dtype=np.int64)
    if qpos.shape != (O,):
        raise ValueError("qpos must have shape [O]")

    K64, Q64 = Ks.astype(np.float64), Qs.astype(np.float64)
    scores, prot = _scores(policy, K64, Q64, qpos, pos, p)

    if policy == "pyramidkv":
        counts = pyramid_budgets(n, L, int(p["window"]), p["beta"], ratio=ratio, budget=budget)
    else:
        counts = [n_keep_uniform(n, ratio=ratio, budget=budget)] * L

    kept = []
    margin = math.inf
    for l in range(L):
        nk = counts[l]
        rows = []
        for h in range(H):
            if policy == "streaming_llm":
                sinks = int(p["sinks"])
                if not n > sinks:
                    raise ValueError("streaming_llm needs n > sinks")
                head = list(range(min(sinks, nk)))
                tail = list(range(n - max(0, nk - sinks), n))
                idx = np.array(sorted(set(head) | set(tail)), dtype=np.int64)
            else:
                idx = select(scores[l, h], prot, nk)
                margin = min(margin, boundary_margin(scores[l, h], prot, idx))
            rows.append(idx)
        kept.append(np.stack(rows) if rows else np.zeros((0, nk), dtype=np.int64))

    K_out = [np.stack([Ks[l, h, kept[l][h]] for h in range(H)]) for l in range(L)]
    V_out = [np.stack([Vs[l, h, kept[l][h]] for h in range(H)]) for l in range(L)]
    if policy != "pyramidkv":
        kept, K_out, V_out = np.stack(kept), np.stack(K_out), np.stack(V_out)
        counts = counts[0]

    return {"scores": scores, "kept": kept, "K_out": K_out, "V_out": V_out,
            "margin": margin, "n_keep": counts, "protected": prot}


# --------------------------------------------------------------------------- chunks and scopes
#
# kv.topk with chunk > 1 and scope "layer" / "model" (doc/dsl.md "Selection"; DESIGN.md §3
# "Budget semantics").  Written from the definition, not from compiler/interp.c:
#
#   * Candidates.  Each (l, h) is cut into chunks of c consecutive tokens starting at token 0;
#     the last chunk may be shorter.  A chunk's score is the mean of its tokens' scores (over
#     its own length); one NaN token makes it NaN.  A chunk holding a protected token (one of
#     the first `sinks` or the last `recent` tokens of its head) is protected.  c = 1 is the
#     ordinary per-token top-k.
#   * Groups.  scope "head": each (l, h) alone with budget n_keep(l, h); "layer": the heads of
#     a layer in one ranking with budget sum_h n_keep(l, h); "model": every (l, h) in one
#     ranking with budget sum_{l,h} n_keep(l, h).  n_keep(l, h) is the uniform rule or the
#     PyramidKV schedule of layer l (counts the head's protected tokens).
#   * Order.  Protected first: chunks holding a sink, lower position first; then the other
#     protected chunks (recent window), newest first (DESIGN: "sinks are kept first (lower
#     position first), then the newest tokens of the recent window").  Then unprotected by
#     score, higher first, NaN last; ties -> lower position, then lower head, then lower layer
#     (doc/dsl.md).
#   * Fill.  Walk the order once; keep a chunk when it fits in what is left of the group's
#     budget, else skip it (a shorter chunk ranked below may still fit).  Kept tokens keep
#     their order.

TOPK_POLICIES = {
    # name: lua path (without .lua), score kind, param defaults, selection from params
    "chunk_head": ("tests/policies/chunk_head", "neg_knorm", {"chunk": 3, "sinks": 2, "window": 5},
                   lambda p: dict(sinks=p["sinks"], recent=p["window"], chunk=p["chunk"],
                                  scope="head")),
    "chunk_layer": ("tests/policies/chunk_layer", "attn_mean", {"chunk": 3, "sinks": 1, "window": 4},
                    lambda p: dict(sinks=p["sinks"], recent=p["window"], chunk=p["chunk"],
                                   scope="layer")),
    "chunk_model": ("tests/policies/chunk_model", "ksum", {"chunk": 3, "sinks": 3, "window": 0},
                    lambda p: dict(sinks=p["sinks"], recent=p["window"], chunk=p["chunk"],
                                   scope="model")),
    "scope_layer": ("tests/policies/scope_layer", "neg_ksum", {"recent": 4, "chunk": 1},
                    lambda p: dict(sinks=2, recent=p["recent"], chunk=p["chunk"], scope="layer",
                                   pyramid_beta=2)),
    "scope_model": ("tests/policies/scope_model", "ksum", {"recent": 3, "chunk": 3},
                    lambda p: dict(sinks=1, recent=p["recent"], chunk=p["chunk"], scope="model")),
}

_SINK, _RECENT, _FREE = 0, 1, 2


def _chunks(s, sinks, recent, chunk):
    """Candidates of one (l, h): (start, length, mean score, protection class)."""
    n = s.shape[0]
    out = []
    for t0 in range(0, n, chunk):
        t1 = min(t0 + chunk, n)
        seg = s[t0:t1]
        score = math.nan if np.isnan(seg).any() else float(seg.sum()) / (t1 - t0)
        if t0 < sinks:
            cls = _SINK
        elif t1 > n - recent:
            cls = _RECENT
        else:
            cls = _FREE
        out.append((t0, t1 - t0, score, cls))
    return out


def _rank_key(c):
    """c = (l, h, t0, len, score, cls): the order of doc/dsl.md + DESIGN's protected order."""
    l, h, t0, _, score, cls = c
    if cls == _SINK:
        return (0, t0, l, h)
    if cls == _RECENT:
        return (1, -t0, l, h)
    nan = math.isnan(score)
    return (2, nan, 0.0 if nan else -score, l, h, t0)


def _fill(order, want):
    """Greedy fill: indices into order that are kept."""
    got, taken = 0, []
    for i, c in enumerate(order):
        if got + c[3] <= want:
            taken.append(i)
            got += c[3]
    return taken


def _groups(L, H, scope):
    if scope == "head":
        return [[(l, h)] for l in range(L) for h in range(H)]
    if scope == "layer":
        return [[(l, h) for h in range(H)] for l in range(L)]
    if scope == "model":
        return [[(l, h) for l in range(L) for h in range(H)]]
    raise ValueError("scope must be head, layer or model")


def _ordered_groups(scores, counts, sinks, recent, chunk, scope):
    L, H, _ = scores.shape
    counts = np.broadcast_to(np.asarray(counts, dtype=np.int64).reshape(L, -1), (L, H))
    if chunk < 1 or sinks < 0 or recent < 0:
        raise ValueError("chunk must be >= 1, sinks and recent >= 0")
    for grp in _groups(L, H, scope):
        cands = []
        for (l, h) in grp:
            for (t0, ln, sc, cls) in _chunks(scores[l, h], sinks, recent, chunk):
                cands.append((l, h, t0, ln, sc, cls))
        want = int(sum(counts[l, h] for (l, h) in grp))
        yield grp, sorted(cands, key=_rank_key), want


def select_topk(scores, counts, sinks=0, recent=0, chunk=1, scope="head"):
    """kv.topk with chunks and scopes (rules above).  scores [L,H,n] float64; counts: n_keep
    per head, [L] (per layer) or [L,H].  Returns kept[l][h]: ascending int64 token indices."""
    L, H, n = scores.shape
    kept = [[[] for _ in range(H)] for _ in range(L)]
    for _, order, want in _ordered_groups(scores, counts, sinks, recent, chunk, scope):
        for i in _fill(order, want):
            l, h, t0, ln, _, _ = order[i]
            kept[l][h].extend(range(t0, t0 + ln))
    return [[np.array(sorted(kept[l][h]), dtype=np.int64) for h in range(H)] for l in range(L)]


def topk_margin(scores, counts, sinks=0, recent=0, chunk=1, scope="head"):
    """Smallest relative score gap between two neighbours of the order whose swap would change
    the kept set (inf if none): a golden case with a margin >= 1e-4 does not depend on rounding.
    Only unprotected, non-NaN neighbours can swap (the other keys are exact)."""
    margin = math.inf
    for _, order, want in _ordered_groups(scores, counts, sinks, recent, chunk, scope):
        got = 0
        for i, c in enumerate(order):
            if i + 1 < len(order):
                a, b = c, order[i + 1]
                if a[5] == _FREE and b[5] == _FREE and not math.isnan(a[4]) and not math.isnan(b[4]):
                    fa = got + a[3] <= want
                    fab = fa and got + a[3] + b[3] <= want
                    fb0 = (not fa) and got + b[3] <= want
                    fb = got + b[3] <= want
                    fba = fb and got + b[3] + a[3] <= want
                    fa1 = (not fb) and got + a[3] <= want
                    orig = (fa, fab or fb0)
                    swap = (fba or fa1, fb)
                    if orig != swap:
                        gap = abs(a[4] - b[4]) / max(abs(a[4]), abs(b[4]), 1e-30)
                        margin = min(margin, gap)
            if got + c[3] <= want:
                got += c[3]
    return margin


def _topk_scores(kind, K, Q, qpos, pos):
    """Per-token scores of the test policies of tests/diff and tests/gpu."""
    if kind == "neg_knorm":
        return -np.sqrt(np.einsum("lhtd,lhtd->lht", K, K))
    if kind == "ksum":
        return K.sum(axis=3)
    if kind == "neg_ksum":
        return -K.sum(axis=3)
    if kind == "attn_mean":
        return causal_softmax(Q, K, qpos, pos).mean(axis=3).mean(axis=2)
    raise ValueError(kind)


def compress_topk(policy, K, V, Q, params=None, ratio=None, budget=None, qpos=None, pos=None,
                  dtype="f32"):
    """compress() for TOPK_POLICIES (chunks, scopes, PyramidKV schedule).  Same inputs as
    compress(); returns dict scores [L,H,n], kept[l][h], K_out[l][h], V_out[l][h] (per head,
    lengths differ under scopes layer/model), n_keep [L] (per head of each layer), margin,
    sel (the selection arguments)."""
    path, kind, defaults, selfn = TOPK_POLICIES[policy]
    p = dict(defaults)
    for key, val in (params or {}).items():
        if key not in p:
            raise ValueError("policy %s has no parameter %r" % (policy, key))
        p[key] = val
    sel = selfn({k: int(v) for k, v in p.items()})
    Ks, Vs, Qs = (round_storage(x, dtype) for x in (K, V, Q))
    L, H, n, d = Ks.shape
    O = Qs.shape[3]
    pos = np.arange(n, dtype=np.int64) if pos is None else np.asarray(pos, dtype=np.int64)
    qpos = pos[n - O:] if qpos is None else np.asarray(qpos, dtype=np.int64)
    scores = _topk_scores(kind, Ks.astype(np.float64), Qs.astype(np.float64), qpos, pos)
    beta = sel.pop("pyramid_beta", None)
    if beta is not None and (budget is not None or ratio > 0):
        counts = pyramid_budgets(n, L, sel["recent"], beta, ratio=ratio, budget=budget)
    else:
        counts = [n_keep_uniform(n, ratio=ratio, budget=budget)] * L
    kept = select_topk(scores, counts, **sel)
    margin = topk_margin(scores, counts, **sel)
    K_out = [[Ks[l, h, kept[l][h]] for h in range(H)] for l in range(L)]
    V_out = [[Vs[l, h, kept[l][h]] for h in range(H)] for l in range(L)]
    return {"scores": scores, "kept": kept, "K_out": K_out, "V_out": V_out, "n_keep": counts,
            "margin": margin, "sel": sel, "path": path}
