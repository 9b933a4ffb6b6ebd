"""selref -- independent numpy reference of kvcc's selection rules beyond per-head top-k (issue 13;
DESIGN.md section 3 "Selection rules (binding)" and "Weights, tables and scans") and of the
published methods that need them: AdaKV, PrefixKV, DynamicKV, CriticalKV, Expected Attention,
LagKV, ChunkKV, DuoAttention / RazorAttention head classes, the seed's gated rolling window and
a KVzap/DMS-style threshold.

Written from the DESIGN text, the `[C]` code column of shared/reference/kv-policies.md and the
reference code it names (read, not copied): kvpress 0.5.5 (`adakv_press.py`, `criticalkv_press.py`,
`expected_attention_press.py`, `lagkv_press.py`, `chunkkv_press.py`, `duo_attention_press.py`,
`dms_press.py`), THU-MIG/PrefixKV `prefixkv.py`, DreamMr/DynamicKV `methods/dynamic_v11.py`.
Nothing here reads kvcc's code.  Python 3 + numpy; float64 unless a function says it follows a
reference's float32 step.

Conventions: scores [n] or [H, n] (higher = keep), token index = position order; "protected" =
the first `sinks` and the last `recent` tokens of a head.  Functions return kept index arrays,
ascending.

Semantic choices the DESIGN text leaves open, made here (also in tests/oracle/README.md):
  S1 threshold: the candidates are the protected tokens and the unprotected ones with score >= tau
     (NaN never); with n_keep as well, the first n_keep candidates in the top-k order (protected
     first: sinks by lower position, then the newest recent tokens; then score; ties -> lower
     position).
  S2 mass: unprotected scores normalized by their sum (accumulated in position order); a negative
     or NaN score is an error; order: score descending, ties lower position; running sum in that
     order; the kept prefix is the shortest whose running sum is >= p (p <= 0: none; never
     reached: all).  A zero sum keeps no unprotected token.  Protected tokens are always kept
     (with n_keep as well: S1's cap).
  S2' mass at scope layer / model and over chunks (mass_group): the candidates are chunks (a chunk
     with a protected token is protected; key: the mean), the total and the prefix are the scope
     group's (ties: lower layer, head, position), the cap the group's budget filled greedily
     (a chunk that does not fit is skipped, a shorter one after it may fit), as top-k's chunks.
  S3 floor (AdaKV) within layer scope: floor_h = floor(alpha * n_keep) (kvpress: max(1, .) when
     alpha > 0 and n_keep > 0 -- the `kvpress_min1` switch), chosen per head in the top-k order;
     the rest of the layer budget from one ranking of the remaining (head, token) pairs:
     protected first, then score, ties lower position, then lower head.
  S4 PrefixKV's bisection follows the code: tolerance 5 tokens, the code's scaling and int()
     truncation of the per-layer counts; the oracle stops after 200 halvings (the code can loop
     forever when no p is within tolerance).  Evicted: the lowest scores of [start, n - protect),
     ties -> the higher position goes first.
  S5 DynamicKV: kv-head granularity (scores averaged over the group: the Factory's
     `--kv_cache_granularity kv_head`); when a later round gives a layer more than an earlier
     round left it, the oracle keeps what is left (the code slices past its candidates into the
     window and appends the window again, duplicating tokens).
  S6 gated window: gate_t = sigmoid(w . k_t + b + u * h_{t-1}), h_t = gate_t, h_{-1} = h0; a token
     is evicted once it is outside the last `window` tokens and its gate < tau (decided when it
     arrives, executed when it leaves the window: DMS's delayed eviction); decoding continues the
     recurrence from the last token's h, evicted or not.
  S7 keep count (`keep = function(x) ... end`, doc/dsl.md): a number per (layer, head) evaluated
     in double; not a number (NaN, +-inf) is an error; floored, then clamped to 0..n; it replaces
     that head's n_keep wherever n_keep is the cap (top-k's count, threshold's / mass's cap); a
     scope group's budget is the sum of its heads' counts.  x.ratio is the run-time ratio, with a
     budget B: 1 - min(B, n) / n; x.nkeep is the head's n_keep under the ratio / budget.
"""

import math

import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)


# --------------------------------------------------------------------------- order helpers

def topk_order(scores, sinks=0, recent=0):
    """Token indices of one head in the top-k order of DESIGN 'Budget semantics': sinks (lower
    position first), then the recent window (newest first), then score descending, NaN last,
    ties -> lower position."""
    n = len(scores)

    def key(t):
        if t < sinks:
            return (0, t)
        if t >= n - recent:
            return (1, -t)
        s = float(scores[t])
        return (2, 1, 0.0, t) if math.isnan(s) else (2, 0, -s, t)
    return sorted(range(n), key=key)


def protected_mask(n, sinks=0, recent=0):
    t = np.arange(n)
    return (t < sinks) | (t >= n - recent)


def keep_count(v, n):
    """S7: the count a keep value gives a head of n tokens (ValueError when not a number)."""
    v = float(v)
    if not math.isfinite(v):
        raise ValueError("keep count: not a number (%r)" % v)
    return int(min(max(math.floor(v), 0), n))


def keep_ratio(n, ratio=None, budget=None):
    """S7's x.ratio: the run-time ratio, or 1 - min(B, n) / n under a budget B."""
    return float(ratio) if budget is None else 1.0 - min(int(budget), n) / n


def group_budget(n_keep, grp):
    """A scope group's budget: the sum of its heads' counts (n_keep a number per head, or an
    [L, H] array of S7 counts); None: no cap."""
    if n_keep is None:
        return None
    if np.ndim(n_keep) == 0:
        return len(grp) * int(n_keep)
    return int(sum(int(n_keep[l][h]) for (l, h) in grp))


def topk(scores, n_keep, sinks=0, recent=0):
    return np.sort(np.array(topk_order(scores, sinks, recent)[:max(0, n_keep)], dtype=np.int64))


# --------------------------------------------------------------------------- threshold, mass

def threshold_select(scores, tau, n_keep=None, sinks=0, recent=0):
    """DESIGN 'threshold tau' (S1): keep every token with score >= tau (NaN never) and the
    protected ones; with n_keep, at most n_keep of them, best first."""
    n = len(scores)
    prot = protected_mask(n, sinks, recent)
    s = np.asarray(scores, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        cand = prot | (s >= tau)
    order = [t for t in topk_order(s, sinks, recent) if cand[t]]
    if n_keep is not None:
        order = order[:max(0, n_keep)]
    return np.sort(np.array(order, dtype=np.int64))


def threshold_group(scores, tau, n_keep=None, sinks=0, recent=0, scope="layer"):
    """DESIGN 'threshold tau' at scope layer or model: scores [L, H, n].  The candidates of a
    scope group (its protected tokens and the others with score >= tau; NaN never) share the
    group's budget (the sum of its heads' n_keep, or of their S7 counts given as an [L, H] array; None: no cap) in one ranking: sinks by
    position, then the recent window newest first, then score; ties: lower layer, head,
    position.  Returns kept[l][h]."""
    L, H, n = scores.shape
    prot = protected_mask(n, sinks, recent)
    groups = [[(l, h) for h in range(H)] for l in range(L)] if scope == "layer" else \
        [[(l, h) for l in range(L) for h in range(H)]]
    kept = [[[] for _ in range(H)] for _ in range(L)]
    for grp in groups:
        cands = []
        for (l, h) in grp:
            for t in range(n):
                v = float(scores[l, h, t])
                if prot[t]:
                    key = (0, t, l, h) if t < sinks else (1, n - 1 - t, l, h)
                elif v >= tau:
                    key = (2, -v, l, h, t)
                else:
                    continue
                cands.append((key, l, h, t))
        cands.sort()
        want = len(cands) if n_keep is None else group_budget(n_keep, grp)
        for _, l, h, t in cands[:max(0, want)]:
            kept[l][h].append(t)
    return [[np.array(sorted(kept[l][h]), dtype=np.int64) for h in range(H)] for l in range(L)]


def mass_select(scores, p, sinks=0, recent=0, n_keep=None):
    """DESIGN 'mass p' (S2): unprotected scores normalized to sum 1, sorted descending (ties
    lower position), the shortest prefix whose sum reaches p; protected tokens kept.  Raises
    ValueError on a negative or NaN score."""
    n = len(scores)
    s = np.asarray(scores, dtype=np.float64)
    prot = protected_mask(n, sinks, recent)
    free = [t for t in range(n) if not prot[t]]
    if any(math.isnan(s[t]) or s[t] < 0 for t in free):
        raise ValueError("mass: negative or NaN score")
    total = 0.0
    for t in free:
        total += s[t]
    chosen = []
    if total > 0 and p > 0:
        acc = 0.0
        for t in sorted(free, key=lambda t: (-s[t], t)):
            chosen.append(t)
            acc += s[t] / total
            if acc >= p:
                break
    keep = set(chosen) | {t for t in range(n) if prot[t]}
    order = [t for t in topk_order(s, sinks, recent) if t in keep]
    if n_keep is not None:
        order = order[:max(0, n_keep)]
    return np.sort(np.array(order, dtype=np.int64))


def mass_group(scores, p, n_keep=None, sinks=0, recent=0, scope="layer", chunk=1):
    """DESIGN 'mass p' at any scope and over chunks (S2'): scores [L, H, n].  A candidate is a
    chunk of `chunk` tokens of one head (the last one may be shorter), protected when one of its
    tokens is; its key is its mean score.  In each scope group (a head, a layer, the model) the
    unprotected candidates' scores must be >= 0 (ValueError otherwise); their total is the sum of
    those scores; the unprotected candidates in descending key order (ties: lower layer, head,
    position) form the shortest prefix whose sums, each divided by the total, reach p (p <= 0 or a
    zero total: none; never reached: all).  The protected candidates and the prefix are then
    taken greedily in the top-k order (sinks by position, then the recent window newest first,
    then key), each one only when it still fits in the group's budget (the sum of its heads'
    n_keep, or of their S7 counts given as an [L, H] array; None: no cap).  Returns kept[l][h]."""
    L, H, n = scores.shape
    s = np.asarray(scores, dtype=np.float64)
    if scope == "head":
        groups = [[(l, h)] for l in range(L) for h in range(H)]
    elif scope == "layer":
        groups = [[(l, h) for h in range(H)] for l in range(L)]
    else:
        groups = [[(l, h) for l in range(L) for h in range(H)]]
    kept = [[[] for _ in range(H)] for _ in range(L)]
    for grp in groups:
        prot, free = [], []
        for (l, h) in grp:
            for t0 in range(0, n, chunk):
                t1 = min(t0 + chunk, n)
                vals = s[l, h, t0:t1]
                if t0 < sinks:
                    prot.append(((0, t0, l, h), l, h, t0, t1))
                elif t1 - 1 >= n - recent:
                    prot.append(((1, n - t1, l, h), l, h, t0, t1))
                else:
                    if any(math.isnan(v) or v < 0 for v in vals):
                        raise ValueError("mass: negative or NaN score")
                    free.append(((2, -float(vals.mean()), l, h, t0), l, h, t0, t1, float(vals.sum())))
        total = sum(c[5] for c in free)
        free.sort()
        chosen = []
        if total > 0 and p > 0:
            acc = 0.0
            for c in free:
                chosen.append(c[:5])
                acc += c[5] / total
                if acc >= p:
                    break
        order = sorted(prot + chosen)
        want = group_budget(n_keep, grp)
        want = math.inf if want is None else want
        got = 0
        for _, l, h, t0, t1 in order:
            if got + (t1 - t0) <= want:
                kept[l][h].extend(range(t0, t1))
                got += t1 - t0
    return [[np.array(sorted(kept[l][h]), dtype=np.int64) for h in range(H)] for l in range(L)]


def mass_group_margin(scores, p, n_keep=None, sinks=0, recent=0, scope="layer", chunk=1):
    """mass_group's decisions that rounding could flip (relative, inf if none): |running sum - p|
    / p at the last two prefixes (before and at the cut), the key gap between the last chosen
    candidate and the next one, and, when the budget binds, between neighbours of the chosen
    ones (chunk 1: the cap's cut; chunks: every neighbour, the greedy fill takes them in order)."""
    L, H, n = scores.shape
    s = np.asarray(scores, dtype=np.float64)
    groups = [[(l, h)] for l in range(L) for h in range(H)] if scope == "head" else \
        [[(l, h) for h in range(H)] for l in range(L)] if scope == "layer" else \
        [[(l, h) for l in range(L) for h in range(H)]]

    def gap(a, b):
        return abs(a - b) / max(abs(a), abs(b), 1e-30)
    best = math.inf
    for grp in groups:
        free, nprot = [], 0
        for (l, h) in grp:
            for t0 in range(0, n, chunk):
                t1 = min(t0 + chunk, n)
                if t0 >= sinks and t1 - 1 < n - recent:
                    free.append((float(s[l, h, t0:t1].mean()), float(s[l, h, t0:t1].sum()), t1 - t0))
                else:
                    nprot += t1 - t0
        free.sort(key=lambda c: -c[0])
        total = sum(c[1] for c in free)
        if not (total > 0 and p > 0):
            continue
        acc, prev, cut = 0.0, None, len(free)
        for i, c in enumerate(free):
            acc += c[1] / total
            if acc >= p:
                cut = i + 1
                best = min(best, (acc - p) / p)
                if prev is not None:
                    best = min(best, (p - prev) / p)
                break
            prev = acc
        if cut < len(free):
            best = min(best, gap(free[cut - 1][0], free[cut][0]))
        tokens = nprot + sum(c[2] for c in free[:cut])
        want = group_budget(n_keep, grp)
        if want is not None and tokens > want and chunk == 1 and 0 < want - nprot < cut:
            k = want - nprot                        # one token each: the cap's cut only
            best = min(best, gap(free[k - 1][0], free[k][0]))
        elif want is not None and tokens > want and chunk > 1:
            for i in range(min(cut, len(free) - 1)):
                best = min(best, gap(free[i][0], free[i + 1][0]))
    return best


def mass_margin(scores, p, sinks=0, recent=0):
    """Distance |running sum - p| at the two prefixes around the cut (relative to p): a golden
    case needs it well above rounding (the running sum may be accumulated in another order)."""
    n = len(scores)
    s = np.asarray(scores, dtype=np.float64)
    prot = protected_mask(n, sinks, recent)
    free = sorted([t for t in range(n) if not prot[t]], key=lambda t: (-s[t], t))
    total = s[free].sum()
    acc, best = 0.0, math.inf
    for t in free:
        acc += s[t] / total
        best = min(best, abs(acc - p) / max(p, 1e-300))
    return best


# --------------------------------------------------------------------------- AdaKV floor

def floor_select(scores, n_keep, alpha, sinks=0, recent=0, kvpress_min1=False):
    """DESIGN 'floor alpha with scope layer' (AdaKV; kvpress AdaKVPress) for one layer:
    scores [H, n].  Each head first keeps its own top floor = floor(alpha * n_keep) (S3;
    kvpress_min1: max(1, .) when alpha > 0 and n_keep > 0, as AdaKVPress); the rest of the layer
    budget H*n_keep - sum of floors goes to one ranking of what is left.  Returns kept[h]."""
    H, n = scores.shape
    fl = int(math.floor(alpha * n_keep))
    if kvpress_min1 and alpha > 0:
        fl = max(1, int(n_keep * alpha)) if n_keep > 0 else 0
    fl = min(fl, n_keep, n)
    kept = [set(topk_order(scores[h], sinks, recent)[:fl]) for h in range(H)]
    rest = H * n_keep - H * fl
    prot = protected_mask(n, sinks, recent)
    cands = []
    for h in range(H):
        for t in range(n):
            if t in kept[h]:
                continue
            s = float(scores[h, t])
            if prot[t]:
                key = (0, t, h) if t < sinks else (1, -t, h)
            else:                                              # ties: lower head, then position
                key = (2, 1, 0.0, h, t) if math.isnan(s) else (2, 0, -s, h, t)
            cands.append((key, h, t))
    cands.sort()
    for _, h, t in cands[:max(0, rest)]:
        kept[h].add(t)
    return [np.array(sorted(k), dtype=np.int64) for k in kept]


def kvpress_n_kept(n, ratio):
    """kvpress 0.5.5 utils.compute_n_kept: max(1, int(n * (1 - r))) for r < 1 (the floor of 1
    differs from DESIGN's n_keep = floor(n (1 - r)) only when that is 0)."""
    return 0 if ratio >= 1.0 else max(1, int(n * (1 - ratio)))


# --------------------------------------------------------------------------- PrefixKV

def prefixkv_scores(A):
    """PrefixKV (prefixkv.py): s_l(t) = sum over queries of the mean over heads of A.
    A [L, heads, O, n] (all query heads of the layer) -> [L, n], shared by the layer's heads."""
    return A.mean(axis=1).sum(axis=1)


def _prefix_counts(cdf, p, protect):
    """Per layer: n - (first index with cdf >= p) - 1 - protect, floored at 0 (searchsorted left)."""
    n = cdf.shape[1]
    idx = np.array([int(np.searchsorted(c, p, side="left")) for c in cdf])
    return np.maximum(n - (idx + 1) - protect, 0)


def prefixkv_bisect(S, target, protect, tol=5, max_halvings=200):
    """PrefixKV's shared prefix-mass threshold (prefixkv.py obtain_cdf_num, S4): per layer sort
    s descending, normalize, cumulative sum c_l; bisect p in [0, 1] until |sum_l count_l(p) -
    target| < tol (count_l = n - idx(c_l >= p) - 1 - protect, >= 0).  Returns (counts [L], p).
    target = tokens to evict in total (the code: sum(n) * ratio)."""
    S = np.asarray(S, dtype=np.float64)
    cdf = []
    for s in S:
        srt = np.sort(s)[::-1]
        cdf.append(np.cumsum(srt / srt.sum()))
    cdf = np.array(cdf)
    left, right, mid = 0.0, 1.0, 0.0
    for _ in range(max_halvings):
        if not left < right:
            break
        mid = (left + right) / 2.0
        count = int(_prefix_counts(cdf, mid, protect).sum())
        if abs(count - target) < tol:
            break
        elif count < target:
            right = mid
        else:
            left = mid
    return _prefix_counts(cdf, mid, protect), mid


def prefixkv_forget(S, ratio, start=4, protect=1):
    """The in-prompt variant (the code's profile path): per-layer counts from the bisection,
    scaled to the target and truncated: forget = int(count * target / sum(count)).
    S [L, n]; returns forget [L] (tokens evicted per layer)."""
    L, n = S.shape
    target = n * L * ratio
    counts, _ = prefixkv_bisect(S, target, start + protect)
    counts = counts.astype(np.float64)
    if counts.sum() != 0:
        counts = counts * target / counts.sum()
    return counts.astype(np.int32)


def prefixkv_fractions(samples, ratio, start=4, protect=1):
    """Offline calibration: the per-layer evict fractions forget / n of each sample (S [L, n]),
    averaged over the samples (the code writes one line per sample; PrefixKV's confs/*.json are
    their average)."""
    fr = [prefixkv_forget(S, ratio, start, protect) / S.shape[1] for S in samples]
    return np.mean(np.array(fr), axis=0)


def prefixkv_select(s, forget, start=4, protect=1):
    """Keep the first `start`, the last `protect` tokens and [start, n - protect) minus its
    `forget` lowest scores (ties: the higher position is evicted first)."""
    n = len(s)
    mid = list(range(start, n - protect))
    drop = set(sorted(mid, key=lambda t: (s[t], -t))[:max(0, forget)])
    return np.array([t for t in range(n) if t not in drop], dtype=np.int64)


def prefixkv_online(S, fractions, start=4, protect=1):
    """Online: forget_l = round(f_l * n) (numpy's half-even), then prefixkv_select per layer."""
    L, n = S.shape
    forget = np.round(np.asarray(fractions) * n).astype(np.int64)
    return [prefixkv_select(S[l], int(forget[l]), start, protect) for l in range(L)], forget


# --------------------------------------------------------------------------- DynamicKV

def dynamickv(scores, budget, window, radio_max=10, every=4):
    """DynamicKV (DreamMr/DynamicKV methods/dynamic_v11.py, [C] row of kv-policies.md) at kv-head
    granularity (S5).  scores [L, H, n - window]: per layer pool_k(sum over the window queries
    of A) over the prefix.  Each layer first keeps c = min(int(radio_max * base), n - window)
    candidates per head (base = budget - window), score-sorted; after every `every`-th layer
    the layers so far share base*H*L_seen by a global top-k over (layer, head, token):
    counts_l = (#picks in l) // L_seen (at the last layer the last count gets
    tk // L - sum), b_l = int(float32(c) * float32(counts_l / sum)), rescaled to base * L (all
    layers) by k // (sum b / (base L)), the remainder to the last layer; each layer keeps the
    first min(b_l, n - window) of its candidates (same count for every head) + the window.
    Returns (kept[l][h] ascending over 0..n-1, b [L])."""
    L, H, m = scores.shape
    n = m + window
    base = budget - window
    c = min(int(radio_max * base), m)
    cand = [[sorted(range(m), key=lambda t: (-scores[l, h, t], t))[:c] for h in range(H)]
            for l in range(L)]
    cur = [c] * L
    for l in range(L):
        if l % every != every - 1:
            continue
        seen = l + 1
        flat = scores[:seen].reshape(-1)
        tk = min(base * H * seen, flat.size)
        top = np.argsort(-flat, kind="stable")[:tk]
        counts = np.bincount(top // (H * m), minlength=seen).astype(np.int64) // seen
        if l == L - 1 and counts.sum() != H * m:
            counts[-1] += (base * H * seen) // L - counts.sum()
        tot = int(counts.sum())
        norm = [np.float32(np.float32(x) / np.float32(tot)) for x in counts]
        fix = [int(np.float32(c) * t) for t in norm]
        need = base * L
        ss = sum(fix) / need
        fix = [int(k // ss) for k in fix]
        if sum(fix) != need:
            fix[-1] += need - sum(fix)
        for i in range(seen):
            cur[i] = min(cur[i], min(fix[i], m))
    kept = [[np.array(sorted(cand[l][h][:cur[l]]) + list(range(m, n)), dtype=np.int64)
             for h in range(H)] for l in range(L)]
    return kept, cur


# --------------------------------------------------------------------------- CriticalKV

def wo_l1(V, Wo, G):
    """CriticalKV's |W_o^h v_t|_1, averaged over the G query heads of a KV head (kvpress
    CriticalKVPress.vwl1norm).  V [H, n, d]; Wo = o_proj.weight [hidden, H*G*d].  -> [H, n]."""
    H, n, d = V.shape
    hidden = Wo.shape[0]
    W = Wo.T.reshape(H * G, d, hidden)
    out = np.zeros((H, n))
    for h in range(H):
        for g in range(G):
            out[h] += np.abs(V[h] @ W[h * G + g]).sum(axis=1)
    return out / G


def criticalkv(scores, V, Wo, G, ratio, eps=1e-4, first_stage_ratio=0.5):
    """CriticalKV (kvpress CriticalKVPress): stage 1 keeps the top
    int((1 - r) * n * first_stage_ratio) (>= 1) by the inner score; stage 2 ranks the rest by
    (s + eps) * |W_o v|_1; n_keep = kvpress_n_kept.  scores [H, n] -> kept[h]."""
    H, n = scores.shape
    k1 = int((1 - ratio) * n * first_stage_ratio)
    if first_stage_ratio > 0:
        k1 = max(1, k1) if ratio < 1.0 else 0
    nk = kvpress_n_kept(n, ratio)
    s2 = (scores + eps) * wo_l1(V, Wo, G)
    kept = []
    for h in range(H):
        stage1 = topk(scores[h], k1)
        s = s2[h].copy()
        s[stage1] = math.inf
        kept.append(topk(s, nk))
    return kept


def critical_adakv(scores, V, Wo, G, ratio, alpha=0.2, eps=1e-4, first_stage_ratio=0.5):
    """CriticalAdaKV (kvpress CriticalAdaKVPress): AdaKV head budgets (a global top
    H*n_keep after each head's floor max(1, int(alpha n_keep))), then per head stage 1 = its top
    int(budget_h * first_stage_ratio) by s, stage 2 = its top budget_h by (s' + eps)|W_o v|_1
    where s' has the floors and stage-1 tokens at the float32 maximum; the final set = the
    layer's H*n_keep best of those scores.  scores [H, n] -> kept[h]."""
    H, n = scores.shape
    nk = kvpress_n_kept(n, ratio)
    ns = max(1, int(nk * alpha)) if (alpha > 0 and nk > 0) else int(nk * alpha)
    s = scores.astype(np.float64).copy()
    for h in range(H):
        s[h, topk(scores[h], ns)] = FLT_MAX
    flat = s.reshape(-1)
    top = sorted(range(H * n), key=lambda i: (-flat[i], i))[:nk * H]
    budgets = np.bincount(np.array(top) // n, minlength=H)
    for h in range(H):
        s[h, topk(s[h], int(budgets[h] * first_stage_ratio))] = FLT_MAX
    s = (s + eps) * wo_l1(V, Wo, G)
    for h in range(H):
        s[h, topk(s[h], int(budgets[h]))] = FLT_MAX
    flat = s.reshape(-1)
    pruned = set(sorted(range(H * n), key=lambda i: (flat[i], -i))[:H * (n - nk)])
    return [np.array([t for t in range(n) if h * n + t not in pruned], dtype=np.int64) for h in range(H)]


# --------------------------------------------------------------------------- Expected Attention

def ea_query_stats(Qpre, n_sink):
    """Query mean and covariance per query head from pre-RoPE queries Qpre [Hq, n, d] at
    positions >= n_sink (kvpress ExpectedAttentionPress.get_query_statistics: population
    covariance, divided by the number of queries).  -> mu [Hq, d], cov [Hq, d, d]."""
    q = np.asarray(Qpre, dtype=np.float64)[:, n_sink:]
    mu = q.mean(axis=1)
    c = q - mu[:, None]
    return mu, np.einsum("hsi,hsj->hij", c, c) / q.shape[1]


def rope_cos_sin(positions, d, theta=10000.0):
    """HF Llama default RoPE: inv_freq = 1 / theta^(2i/d), emb = [freqs, freqs]."""
    inv = 1.0 / (theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    f = np.outer(np.asarray(positions, dtype=np.float64), inv)
    emb = np.concatenate([f, f], axis=1)
    return np.cos(emb), np.sin(emb)


def ea_avg_rope(d, q_len, n_future, theta=10000.0):
    """R-bar: the mean over positions q_len .. q_len + n_future - 1 of the RoPE matrix
    R = diag(cos) + diag(sin) P, P the rotate_half matrix (kvpress apply_avg_rope)."""
    cos, sin = rope_cos_sin(np.arange(q_len, q_len + n_future), d, theta)
    P = np.zeros((d, d))
    h = d // 2
    P[h:, :h] = np.eye(h)
    P[:h, h:] = -np.eye(h)
    R = cos[:, None, :] * np.eye(d)[None] + sin[:, None, :] * P[None]
    return R.mean(axis=0)


def ea_scores(K, V, mu, cov, q_len, n_future=512, n_sink=4, theta=10000.0, use_cov=True,
              use_vnorm=True, eps=0.0):
    """Expected Attention (kvpress ExpectedAttentionPress.score): mu' = R-bar mu, cov' = R-bar cov
    R-bar^T; over the keys after the sinks z_t = mu'.k_t / sqrt(d) + k_t^T cov' k_t / (2d),
    a = softmax_t(z) per query head, mean over the group, times |v_t| (+ eps before); the sinks
    get max + 1 (the global max of the tensor, as kvpress).  K, V [H, n, d]; mu [Hq, d] ->
    scores [H, n]."""
    H, n, d = K.shape
    Hq = mu.shape[0]
    G = Hq // H
    R = ea_avg_rope(d, q_len, n_future, theta)
    mu2 = mu @ R.T
    cov2 = R[None] @ cov @ R.T[None] if use_cov else None
    out = np.zeros((H, n - n_sink))
    for h in range(H):
        Kh = K[h, n_sink:].astype(np.float64)
        acc = np.zeros(n - n_sink)
        for g in range(G):
            z = Kh @ mu2[h * G + g] / math.sqrt(d)
            if use_cov:
                z = z + np.einsum("ti,ij,tj->t", Kh, cov2[h * G + g], Kh) / d / 2
            e = np.exp(z - z.max())
            acc += e / e.sum()
        out[h] = acc / G
        if use_vnorm:
            out[h] = (out[h] + eps) * np.sqrt((V[h, n_sink:].astype(np.float64) ** 2).sum(axis=1))
    full = np.full((H, n), out.max() + 1.0)
    full[:, n_sink:] = out
    return full


# --------------------------------------------------------------------------- LagKV

def _lag_states_score(x, lag):
    """x [H, chunks, lag, d]: for chunk j the next chunk j+1 is the reference: per channel
    min / max over its tokens, x~ = (x - min)/(max - min), std over channels (Bessel's
    correction, torch default), softmax over the chunk's tokens.  -> [H, chunks-1, lag]."""
    ref, v = x[:, 1:], x[:, :-1]
    mn = ref.min(axis=2, keepdims=True)
    mx = ref.max(axis=2, keepdims=True)
    sd = ((v - mn) / (mx - mn)).std(axis=3, ddof=1)
    e = np.exp(sd - sd.max(axis=2, keepdims=True))
    return e / e.sum(axis=2, keepdims=True)


def lagkv_scores(K, V, n_sink=4, lag=128, cross_scoring=False):
    """LagKV (kvpress LagKVPress.score): K, V [H, n, d] -> [H, n].  n < n_sink + 2 lag: 1 for
    the sinks, a position ramp (t - n_sink)/(n - n_sink) after them.  Otherwise the full chunks
    after the sinks but the last are scored by the next chunk's statistics, s = (s_K + s_V)/2,
    then (without cross_scoring) replaced by its rank within the chunk / lag; sinks and the tail
    (the last full chunk and the partial one) score 1."""
    H, n, d = K.shape
    if n < n_sink + 2 * lag:
        s = np.ones((H, n))
        if n > n_sink:
            s[:, n_sink:] = np.arange(n - n_sink) / (n - n_sink)
        return s
    end = n_sink + ((n - n_sink) // lag) * lag
    tail = lag + n - end
    nch = (end - n_sink) // lag
    k = K[:, n_sink:end].astype(np.float64).reshape(H, nch, lag, d)
    v = V[:, n_sink:end].astype(np.float64).reshape(H, nch, lag, d)
    s = (_lag_states_score(k, lag) + _lag_states_score(v, lag)) / 2
    if not cross_scoring:
        s = np.argsort(np.argsort(s, axis=-1, kind="stable"), axis=-1, kind="stable") / lag
    return np.concatenate([np.ones((H, n_sink)), s.reshape(H, -1), np.ones((H, tail))], axis=1)


# --------------------------------------------------------------------------- ChunkKV

def chunkkv_kvpress(scores, ratio, chunk=20):
    """kvpress 0.5.5 ChunkKVPress: chunk score = mean over the chunk of sum over heads of s (the
    partial last chunk averages its own tokens); keep the top max(1, int(#chunks * (1 - r)))
    chunks, the same tokens for every head.  No complete chunk: the inner press's per-head
    top-k (returned per head).  scores [H, n] -> kept (one array, or a list per head)."""
    H, n = scores.shape
    full, rem = n // chunk, n % chunk
    if full == 0:
        return [topk(scores[h], kvpress_n_kept(n, ratio)) for h in range(H)]
    s = scores.sum(axis=0)
    cs = [s[i * chunk:(i + 1) * chunk].mean() for i in range(full)]
    if rem:
        cs.append(s[n - rem:].mean())
    nck = max(1, int((full + (rem > 0)) * (1 - ratio)))
    top = sorted(range(len(cs)), key=lambda i: (-cs[i], i))[:nck]
    idx = []
    for i in top:
        idx.extend(range(i * chunk, min((i + 1) * chunk, n)))
    return np.array(sorted(idx), dtype=np.int64)


def chunkkv_fill(scores, n_keep, chunk=20):
    """ChunkKV under kvcc's chunk rule (doc/dsl.md): one score per token shared by the heads
    (sum over heads), chunks from token 0, mean per chunk, whole chunks best first while they fit
    in n_keep, a shorter (last) chunk ranked below may still fit.  -> kept (same for all heads)."""
    s = scores.sum(axis=0)
    n = s.shape[0]
    ch = [(t0, min(t0 + chunk, n)) for t0 in range(0, n, chunk)]
    order = sorted(ch, key=lambda c: (-s[c[0]:c[1]].mean(), c[0]))
    got, idx = 0, []
    for a, b in order:
        if got + (b - a) <= n_keep:
            idx.extend(range(a, b))
            got += b - a
    return np.array(sorted(idx), dtype=np.int64)


# --------------------------------------------------------------------------- head classes

def duo_classes(head_scores, head_compression_ratio):
    """DuoAttention (kvpress DuoAttentionPress.post_init_from_model): the round(L*H*ratio)
    heads with the lowest scores (Python round; ties -> lower flat index) are streaming heads.
    head_scores [L, H] -> bool [L, H]."""
    hs = np.asarray(head_scores, dtype=np.float64)
    k = round(hs.size * head_compression_ratio)
    mask = np.zeros(hs.size, dtype=bool)
    if k > 0:
        mask[np.argsort(hs, axis=None, kind="stable")[:k]] = True
    return mask.reshape(hs.shape)


def duo_keep(n, streaming, sink, recent):
    """Streaming heads keep [0, sink) and [n - recent, n); retrieval heads keep all (kvpress
    DuoAttentionPress.compress masks [sink, n - recent) of the streaming heads)."""
    L, H = streaming.shape
    full = np.arange(n)
    short = np.array(sorted(set(range(min(sink, n))) | set(range(max(n - recent, 0), n))), dtype=np.int64)
    if n - recent <= sink:
        short = full
    return [[short if streaming[l, h] else full for h in range(H)] for l in range(L)]


def razor_classes(induction, echo, p_induction=0.15, p_echo=0.01):
    """RazorAttention ([P]): retrieval heads = the top round(p * L * H) heads by induction
    score and by echo score (ties -> lower flat index), the union.  -> bool [L, H]."""
    def top(x, p):
        x = np.asarray(x, dtype=np.float64)
        k = round(x.size * p)
        m = np.zeros(x.size, dtype=bool)
        if k > 0:
            m[np.argsort(-x, axis=None, kind="stable")[:k]] = True
        return m.reshape(x.shape)
    return top(induction, p_induction) | top(echo, p_echo)


def razor_recent(n, S0, C):
    """RazorAttention's recent window of a non-retrieval head: max(S0, n // C) ([P])."""
    return max(S0, n // C)


# --------------------------------------------------------------------------- gated window (scan)

def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def gated_scan(X, w, b, u, h0=0.0):
    """The seed's gate as a scan (DESIGN 'scan'; S6): gate_t = sigmoid(w . x_t + b + u h_{t-1}),
    h_t = gate_t.  X [n, d] (the keys of one head), w [d].  -> (gates [n], h_last)."""
    h = h0
    g = np.empty(len(X))
    for t, x in enumerate(np.asarray(X, dtype=np.float64)):
        h = sigmoid(float(np.dot(w, x)) + b + u * h)
        g[t] = h
    return g, h


def gated_window_keep(gates, window, tau):
    """Prefill (S6): keep the last `window` tokens and every older token with gate >= tau."""
    n = len(gates)
    return np.array([t for t in range(n) if t >= n - window or gates[t] >= tau], dtype=np.int64)


class GatedWindowDecoder:
    """Prefill then decode steps of the gated rolling window, one (layer, head): kept positions
    and their gates; the recurrence continues from the last token's h."""

    def __init__(self, X, w, b, u, window, tau, h0=0.0):
        self.w, self.b, self.u, self.window, self.tau = np.asarray(w, dtype=np.float64), b, u, window, tau
        g, self.h = gated_scan(X, self.w, b, u, h0)
        self.n = len(X)
        keep = gated_window_keep(g, window, tau)
        self.kept = keep.tolist()
        self.gate = {int(t): float(g[t]) for t in keep}

    def step(self, x):
        self.h = sigmoid(float(np.dot(self.w, x)) + self.b + self.u * self.h)
        t = self.n
        self.n += 1
        self.kept.append(t)
        self.gate[t] = self.h
        self.kept = [s for s in self.kept if s >= self.n - self.window or self.gate[s] >= self.tau]
        return list(self.kept)


def dms_threshold_keep(scores, tau, window):
    """KVzap / DMS style (kvpress DMSPress at prefill): tokens outside the last `window` with
    score < tau are evicted; the window is always kept (= threshold_select with recent=window)."""
    return threshold_select(scores, tau, recent=window)
