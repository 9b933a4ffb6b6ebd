"""mergeref -- independent numpy reference of kvcc's merge stage (DESIGN.md section 3, "Merge
semantics (binding)") and of the published merging policies: LOOK-M, KVMerger, CaM, D2O, the
seed's online k-means, RazorAttention, kvpress's MergingPress, and a SnapKV-merge variant.

Written from the DESIGN text, the papers and their reference code (read, not copied):
LOOK-M `modify_llama.py` (SUSTechBruce/LOOK-M), KVCache-Factory `merge_kv`, kvpress 0.5.5
`cam_press.py` / `merging_press.py`, and the rows of shared/reference/kv-policies.md.  Nothing
here reads kvcc's code.  Python 3 + numpy, float64 throughout (inputs are the storage values).

Conventions (one (layer, head) at a time unless a function says otherwise):
  K, V [n, d] the held rows in position order (index order = position order), pos [n] int,
  kept / evicted: ascending index arrays partitioning 0..n-1, scores [n] (higher = keep).
  A "target" array has one entry per evicted token: an index into `kept` (0..|S|-1) or -1
  (absorbed by no one: dropped).

The merge model (DESIGN):
  * simultaneous: every update reads the pre-merge rows (LOOK-M's scatter-mean), so the order in
    which evicted tokens are visited does not matter;
  * X'_k = (w_k X_k + sum_{e in A(k)} w_e X_e) / (w_k + sum_{e in A(k)} w_e), X = K and/or V;
  * member counts: count'_k = count_k + sum_{e in A(k)} count_e (ordinary tokens count 1);
  * summary rows (C per head, built from E) are stored after the kept rows, take the largest
    position of their members and carry their member count; top-k keeps n_keep - C ordinary
    tokens;
  * count bias (optional): decode attention adds log(count) to a row's logit.

Semantic choices the DESIGN text leaves open, made here (each also in tests/oracle/README.md):
  M1 cosine = a.b / max(|a||b|, 1e-8) (doc/dsl.md kv.cosine); similarities of keys as stored.
  M2 nearest ties -> the kept token of lower position (= lower index).  The threshold test is
     sim >= threshold; NaN similarity never merges.
  M3 a kept token with A(k) empty is unchanged; so is one whose total weight w_k + sum w_e is
     0 or not finite (no division by zero).
  M4 next-m targets (CaM): the first m kept tokens of higher position than e; fewer near the
     end (kvpress: divides by the number of valid targets).
  M5 runs (KVMerger): tokens i and i+1 (adjacent in the held cache) belong to one run iff
     cos(k_i, k_{i+1}) >= thr; the pivot of e's run is its kept token that ranks first in the
     selection order (protected first, then score, ties lower position); no kept token in the
     run -> e dropped.  Protected tokens may be pivots.
  M6 k-means init: the evicted tokens at indices floor(i*|E|/C), i = 0..C-1, of E in position
     order; assignment by squared L2 of keys, ties -> lower centroid index; each Lloyd
     iteration = assign, then key centroid = mean of member keys and value centroid = mean of
     member values (an empty cluster keeps both); the members are those of the last
     assignment; position = largest member position (empty: the init token's), count = number
     of members (count-weighted when the rows carry counts).
  M7 summary rows are only built when something is evicted (n > n_keep); n <= n_keep keeps all.
  M8 decode step order: append the new token, attend (decode attention, count bias), observe
     (state += attention), then compress if the cache is over budget; merged rows keep their own
     state (the absorbed tokens' state is dropped), only counts add up.
  M9 online summary update (decode): newly evicted tokens are assigned to the pre-step
     centroids, then each centroid becomes the count-weighted running mean
     (count_c*c + sum count_x*x) / (count_c + sum count_x), keys and values; position = max.
  M11 summary rows under the threshold rule (scope head): the candidates are the protected
     tokens and the others with score >= tau (NaN never); a head over its budget keeps at most
     n_keep - C of them (as top-k, M7); a head under its budget that has a token below tau
     evicts it and keeps at most n - C candidates, so that the C summary rows take the place
     of evicted ones (the summary rows come out of what the head held; fewer than C rows
     held is an error); one with every token a candidate keeps all (no summary rows).
  M12 summary rows under a group budget (topk, scope layer / model; heads of unequal lengths n_h
     and counts n_keep_h <= n_h, no block yet): a group with a head over its count evicts; it
     keeps sum over its non-empty heads of (n_keep_h - C) tokens by one ranking of the group
     (protected first, then by score, ties: head order, then position), each head at most
     n_h - C of them (a candidate over its head's cap is passed over, the next one may fit), so
     every head that evicts builds its C rows out of what it held and none ends holding more
     than it held, nor the group more than its budget; a non-empty head with n_keep_h < C is an
     error, an empty head takes no part; a group with no head over its count keeps everything.
  M13 summary rows under the mass rule (scope head, DESIGN 'mass p' with the head's count as its
     cap): the candidates are the protected tokens and the shortest prefix of the others (by
     score, ties: lower position) whose scores reach p of their total; a head over its budget
     keeps at most n_keep - C of them (best first, as M7); a head under its budget whose prefix
     leaves a token out evicts and keeps at most n - C candidates (the C summary rows come out
     of what it held, as M11; fewer than C rows held is an error); a head whose prefix takes
     every token keeps all (no summary rows).
  M14 summary rows under AdaKV's floor (topk, scope layer, floor alpha; DESIGN 'floor alpha':
     each head first keeps its own top floor(alpha n_keep), the rest of the layer's budget goes
     to one ranking): in a layer that evicts (a head over its count, M12), each non-empty head's
     floor fl = min(floor(alpha n_keep_h), n_keep_h, n_h) includes its C summary rows (a floor
     at or below C, alpha 0 among them, is met by them): it first keeps its best max(fl - C, 0)
     tokens (protected first, then by score; alpha 0 is M12 itself); the rest
     of the layer's count, sum over its non-empty heads of (n_keep_h - C) less those, goes to one
     ranking of the other tokens of the layer (M12's order and per-head cap n_h - C); a layer
     with no head over its count keeps everything.
  M15 summary rows under threshold at scope layer / model (tau, the group's count): a group
     evicts when a head is over its count or holds an unprotected token below tau (NaN too);
     then M12: it keeps at most sum over its non-empty heads of (n_keep_h - C) of its candidates
     (protected, or score >= tau) by one ranking, each head at most n_h - C; else everything.
"""

import math

import numpy as np

EPS_COS = 1e-8


# --------------------------------------------------------------------------- similarity, targets

def cosine(A, B, eps=EPS_COS):
    """[m, k] cosine similarities of the rows of A [m, d] and B [k, d]:
    a.b / max(|a| |b|, eps) (doc/dsl.md kv.cosine; DESIGN 'cosine of keys by default')."""
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    na = np.sqrt((A * A).sum(axis=1))
    nb = np.sqrt((B * B).sum(axis=1))
    return (A @ B.T) / np.maximum(na[:, None] * nb[None, :], eps)


def nearest_targets(K, kept, evicted, sim=None, threshold=None):
    """DESIGN 'nearest': a(e) = argmax over k in S of sim(e, k) (default cosine of keys), ties
    -> lower position (M2); merged only when sim >= threshold (scalar, or one value per evicted
    token, e.g. D2O's EMA state; None = always).  Returns (target [|E|] into kept or -1,
    maxsim [|E|])."""
    kept = np.asarray(kept, dtype=np.int64)
    evicted = np.asarray(evicted, dtype=np.int64)
    if evicted.size == 0 or kept.size == 0:
        return np.full(evicted.size, -1, dtype=np.int64), np.full(evicted.size, np.nan)
    S = cosine(K[evicted], K[kept]) if sim is None else np.asarray(sim(evicted, kept), dtype=np.float64)
    target = np.argmax(np.where(np.isnan(S), -np.inf, S), axis=1)   # first max = lower position
    maxsim = S[np.arange(evicted.size), target]
    ok = ~np.isnan(maxsim)
    if threshold is not None:
        ok &= maxsim >= np.broadcast_to(np.asarray(threshold, dtype=np.float64), maxsim.shape)
    return np.where(ok, target, -1).astype(np.int64), maxsim


def next_kept_targets(kept, evicted, m):
    """CaM (M4): for each evicted e, the first m kept tokens of higher position (kvpress
    CAMPress: searchsorted(kept, e, right=True) + 0..m-1, only the valid ones).  Returns a
    list of index arrays into kept."""
    kept = np.asarray(kept, dtype=np.int64)
    out = []
    for e in np.asarray(evicted, dtype=np.int64):
        start = int(np.searchsorted(kept, e, side="right"))
        out.append(np.arange(start, min(start + m, kept.size), dtype=np.int64))
    return out


def run_ids(K, thr):
    """KVMerger merging sets (M5): run id per token; i and i+1 share a run iff
    cos(k_i, k_{i+1}) >= thr."""
    n = K.shape[0]
    rid = np.zeros(n, dtype=np.int64)
    for i in range(1, n):
        c = cosine(K[i - 1:i], K[i:i + 1])[0, 0]
        rid[i] = rid[i - 1] if c >= thr else rid[i - 1] + 1
    return rid


def pivot_targets(K, kept, evicted, rank, thr):
    """KVMerger (M5): target of e = the kept token of e's run with the smallest rank (rank [n]:
    position in the selection order, 0 = best); -1 when the run has no kept token."""
    rid = run_ids(K, thr)
    kept = np.asarray(kept, dtype=np.int64)
    target = np.full(len(evicted), -1, dtype=np.int64)
    for i, e in enumerate(np.asarray(evicted, dtype=np.int64)):
        cand = [j for j, k in enumerate(kept) if rid[k] == rid[e]]
        if cand:
            target[i] = min(cand, key=lambda j: rank[kept[j]])
    return target


def selection_rank(scores, sinks=0, recent=0):
    """Rank of each token in the top-k order (DESIGN 'Budget semantics'): the first `sinks`
    tokens (lower position first), then the last `recent` tokens (newest first), then higher
    score, NaN last, ties -> lower position.  0 = best."""
    n = scores.shape[0]

    def key(t):
        if t < sinks:
            return (0, t)
        if t >= n - recent:
            return (1, -t)
        s = scores[t]
        return (2, 1, 0.0, t) if math.isnan(s) else (2, 0, -s, t)
    order = sorted(range(n), key=key)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


# --------------------------------------------------------------------------- the update

def merge_update(X, kept, evicted, target, w_kept, w_evict):
    """Simultaneous weighted merge (DESIGN 'Update'), one tensor X [n, d]: returns the kept rows
    [|S|, d] with X'_k = (w_k X_k + sum_{e in A(k)} w_e X_e) / (w_k + sum w_e).  w_kept [|S|]
    and w_evict [|E|] are already evaluated (they may depend on |A(k)|, see weights()).  M3:
    rows with no absorbed token, or a zero / non-finite total weight, are unchanged."""
    X = np.asarray(X, dtype=np.float64)
    kept = np.asarray(kept, dtype=np.int64)
    evicted = np.asarray(evicted, dtype=np.int64)
    out = X[kept].copy()
    num = np.asarray(w_kept, dtype=np.float64)[:, None] * X[kept]
    den = np.asarray(w_kept, dtype=np.float64).copy()
    hit = np.zeros(kept.size, dtype=bool)
    for i, e in enumerate(evicted):
        j = target[i]
        if j >= 0:
            num[j] += w_evict[i] * X[e]
            den[j] += w_evict[i]
            hit[j] = True
    ok = hit & (den != 0) & np.isfinite(den)
    out[ok] = num[ok] / den[ok, None]
    return out


def absorbed(target, n_kept):
    """|A(k)| for every kept token."""
    a = np.zeros(n_kept, dtype=np.int64)
    for j in target:
        if j >= 0:
            a[j] += 1
    return a


def weights(rule, K, V, kept, evicted, target, maxsim=None, scores=None, sigma=1.0):
    """The weight choices of DESIGN 'Update' (one rule, several weights):
      average     w_k = 1, w_e = 1 (LOOK-M avg: scatter-mean including the target)
      pivot       w_k = |A(k)| + 2, w_e = 1 (LOOK-M pivot: (e + k)/2, then scatter-mean incl. k)
      similarity  w_k = 1, w_e = cos(e, a(e)) (LOOK-M weighted, normalized; see README)
      factory     w_k = 1, w_e = max((cos + 1)/2, 1e-6) (KVCache-Factory merge='weighted')
      gaussian    w_k = 1, w_e = exp(-|k_e - k_a(e)|^2 / (2 sigma^2)) (KVMerger: the pivot's own
                  kernel value is exp(0) = 1)
      score       w_k = s_k, w_e = s_e
      d2o         w_k = exp(1), w_e = exp(cos) (D2O: softmax over {self-similarity 1} + sims)
      mergingpress w_k = 1, w_e = max(cos, 0) |v_e| / (|v_e| + |v_k| + 1e-6) (kvpress 0.5.5)
    Returns (w_kept [|S|], w_evict [|E|])."""
    kept = np.asarray(kept, dtype=np.int64)
    evicted = np.asarray(evicted, dtype=np.int64)
    nS, nE = kept.size, evicted.size
    tgt = np.where(target >= 0, target, 0)
    if rule == "average":
        return np.ones(nS), np.ones(nE)
    if rule == "pivot":
        return absorbed(target, nS) + 2.0, np.ones(nE)
    if rule == "similarity":
        return np.ones(nS), np.asarray(maxsim, dtype=np.float64)
    if rule == "factory":
        return np.ones(nS), np.maximum((np.asarray(maxsim) + 1.0) / 2.0, 1e-6)
    if rule == "gaussian":
        diff = K[evicted] - K[kept[tgt]]
        return np.ones(nS), np.exp(-(diff * diff).sum(axis=1) / (2.0 * sigma * sigma))
    if rule == "score":
        return np.asarray(scores, dtype=np.float64)[kept], np.asarray(scores, dtype=np.float64)[evicted]
    if rule == "d2o":
        return np.full(nS, math.e), np.exp(np.asarray(maxsim, dtype=np.float64))
    if rule == "mergingpress":
        ve = np.sqrt((V[evicted] ** 2).sum(axis=1))
        vk = np.sqrt((V[kept[tgt]] ** 2).sum(axis=1))
        return np.ones(nS), np.maximum(np.asarray(maxsim), 0.0) * ve / (ve + vk + 1e-6)
    raise ValueError("unknown weight rule %r" % (rule,))


def merge(K, V, kept, evicted, target, w_kept, w_evict, keys=True, values=True, counts=None):
    """The whole update of one (l, h): (K_kept', V_kept', counts_kept').  keys / values select
    what is merged (DESIGN: keys only, values only, or both); counts [n] (default 1) add up."""
    kept = np.asarray(kept, dtype=np.int64)
    counts = np.ones(K.shape[0]) if counts is None else np.asarray(counts, dtype=np.float64)
    Kk = merge_update(K, kept, evicted, target, w_kept, w_evict) if keys else K[kept].astype(np.float64)
    Vk = merge_update(V, kept, evicted, target, w_kept, w_evict) if values else V[kept].astype(np.float64)
    ck = counts[kept].copy()
    for i, e in enumerate(np.asarray(evicted, dtype=np.int64)):
        if target[i] >= 0:
            ck[target[i]] += counts[e]
    return Kk, Vk, ck


# --------------------------------------------------------------------------- summary rows

def mean_summary(K, V, pos, evicted, counts=None):
    """C = 1 (RazorAttention's compensation token): count-weighted mean of the evicted keys and
    values, position = largest evicted position, count = sum of their counts (M6, M7).
    Returns (k [d], v [d], pos, count) or None when nothing is evicted."""
    evicted = np.asarray(evicted, dtype=np.int64)
    if evicted.size == 0:
        return None
    c = np.ones(K.shape[0]) if counts is None else np.asarray(counts, dtype=np.float64)
    w = c[evicted]
    k = (w[:, None] * K[evicted]).sum(axis=0) / w.sum()
    v = (w[:, None] * V[evicted]).sum(axis=0) / w.sum()
    return k, v, int(np.max(pos[evicted])), float(w.sum())


def kmeans_init(evicted, C):
    """M6: C evicted tokens evenly spaced in position order: E[floor(i*|E|/C)]."""
    E = np.asarray(evicted, dtype=np.int64)
    return E[[(i * E.size) // C for i in range(C)]]


def assign(Kx, centroids):
    """Nearest centroid by squared L2, ties -> lower centroid index."""
    d2 = ((Kx[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return np.argmin(d2, axis=1)


def kmeans_summary(K, V, pos, evicted, C, iters, counts=None):
    """C > 1 summary rows: Lloyd k-means of the evicted keys (M6).  Returns (Kc [C,d], Vc [C,d],
    pos [C], count [C], members: list of evicted-index arrays)."""
    if iters < 1:
        raise ValueError("k-means needs at least one Lloyd iteration")
    E = np.asarray(evicted, dtype=np.int64)
    if E.size < 1:
        raise ValueError("no evicted token to summarize")
    # fewer evicted tokens than centroids (M6'): the init repeats tokens; the repeats lose
    # every assignment tie to the lower centroid and stay empty (count 0)
    c = np.ones(K.shape[0]) if counts is None else np.asarray(counts, dtype=np.float64)
    init = kmeans_init(E, C)
    Kc = K[init].astype(np.float64).copy()
    Vc = V[init].astype(np.float64).copy()
    for _ in range(iters):
        a = assign(K[E].astype(np.float64), Kc)
        for j in range(C):
            m = E[a == j]
            if m.size:
                w = c[m]
                Kc[j] = (w[:, None] * K[m]).sum(axis=0) / w.sum()
                Vc[j] = (w[:, None] * V[m]).sum(axis=0) / w.sum()
    members = [E[a == j] for j in range(C)]
    pc = np.array([int(pos[m].max()) if m.size else int(pos[init[j]]) for j, m in enumerate(members)])
    cnt = np.array([float(c[m].sum()) for m in members])
    return Kc, Vc, pc, cnt, members


def kmeans_margin(K, evicted, C, iters, counts=None):
    """Smallest relative gap between the nearest and the second-nearest centroid over every
    assignment of kmeans_summary's iterations (inf for C < 2): golden inputs keep it away
    from 0 so that no assignment depends on rounding."""
    E = np.asarray(evicted, dtype=np.int64)
    if E.size == 0 or C < 2:
        return math.inf
    c = np.ones(K.shape[0]) if counts is None else np.asarray(counts, dtype=np.float64)
    Kc = K[kmeans_init(E, C)].astype(np.float64).copy()
    m = math.inf
    for _ in range(iters):
        d2 = ((K[E][:, None, :] - Kc[None, :, :]) ** 2).sum(axis=2)
        for r in np.sort(d2, axis=1):
            if r[0] != r[1]:         # an exact tie: repeated init tokens, lower index either way
                m = min(m, abs(r[1] - r[0]) / max(abs(r[1]), 1e-30))
        a = np.argmin(d2, axis=1)
        for j in range(C):
            mem = E[a == j]
            if mem.size:
                w = c[mem]
                Kc[j] = (w[:, None] * K[mem]).sum(axis=0) / w.sum()
    return m


def online_update(Kc, Vc, pc, cnt, Kx, Vx, px, cx):
    """M9 (the seed's online k-means during decode): assign the newly evicted rows (Kx [m,d],
    counts cx) to the pre-step centroids, then count-weighted running means; returns new
    (Kc, Vc, pc, cnt) and the assignment."""
    Kc, Vc, pc, cnt = Kc.copy(), Vc.copy(), pc.copy(), cnt.copy()
    a = assign(np.asarray(Kx, dtype=np.float64), Kc)
    for j in range(Kc.shape[0]):
        m = a == j
        if m.any():
            w = np.asarray(cx, dtype=np.float64)[m]
            tot = cnt[j] + w.sum()
            Kc[j] = (cnt[j] * Kc[j] + (w[:, None] * Kx[m]).sum(axis=0)) / tot
            Vc[j] = (cnt[j] * Vc[j] + (w[:, None] * Vx[m]).sum(axis=0)) / tot
            pc[j] = max(int(pc[j]), int(np.max(np.asarray(px)[m])))
            cnt[j] = tot
    return Kc, Vc, pc, cnt, a


# --------------------------------------------------------------------------- decode attention

def decode_attention(q, K, V, counts=None, bias=False):
    """One decode query head q [d] over rows K, V [m, d]: softmax(q.k/sqrt(d) + b) . V with
    b = log(count) when bias (DESIGN 'Count bias'; RazorAttention, ToMe's proportional
    attention), else 0.  Returns (out [d], probs [m])."""
    d = K.shape[1]
    logits = (np.asarray(K, dtype=np.float64) @ np.asarray(q, dtype=np.float64)) / math.sqrt(d)
    if bias:
        with np.errstate(divide="ignore"):
            logits = logits + np.log(np.asarray(counts, dtype=np.float64))
    m = logits.max()
    p = np.exp(logits - m)
    p /= p.sum()
    return p @ np.asarray(V, dtype=np.float64), p


# --------------------------------------------------------------------------- selection helpers

def topk_keep(scores, n_keep, sinks=0, recent=0):
    """Kept indices (ascending) of one head under top-k with protected sinks and recent window,
    in selection_rank's order."""
    rank = selection_rank(scores, sinks, recent)
    return np.sort(np.argsort(rank, kind="stable")[:max(n_keep, 0)]).astype(np.int64)


def h2o_prefill_scores(Q, K, qpos, pos):
    """H2O / LOOK-M accumulated attention at prefill: s_t = sum over observation queries of
    mean over the group of A[g, o, t] (LOOK-M hh_score = attention summed over queries)."""
    import kvref
    return kvref.causal_softmax(Q, K, qpos, pos).sum(axis=3).mean(axis=2)


def _n_keep(n, ratio, budget):
    import kvref
    return kvref.n_keep_uniform(n, ratio=ratio, budget=budget)


# --------------------------------------------------------------------------- policies (prefill)

def _result(L, H):
    return {k: [[None] * H for _ in range(L)] for k in
            ("kept", "evicted", "target", "K", "V", "pos", "count", "summary")}


def nearest_policy(K, V, pos, scores, prot, n_keep, rule, keys=True, values=True,
                   threshold=None, sigma=1.0):
    """Select (top-k with protected tokens) then merge every evicted token into its nearest kept
    token (cosine of keys) with the given weight rule.  K, V [L,H,n,d]; scores [L,H,n];
    prot = (sinks, recent).  threshold: None, a number, or 'mean' (the mean of the head's max
    similarities: LOOK-M's filter, D2O's initial EMA)."""
    L, H, n, d = K.shape
    R = _result(L, H)
    for l in range(L):
        for h in range(H):
            kept = topk_keep(scores[l, h], n_keep, *prot)
            ev = np.setdiff1d(np.arange(n), kept)
            tgt, ms = nearest_targets(K[l, h], kept, ev)
            if isinstance(threshold, str) and ev.size:
                thr = np.nanmean(ms)
                tgt = np.where(ms >= thr, tgt, -1)
            elif threshold is not None:
                tgt = np.where(ms >= threshold, tgt, -1)
            wk, we = weights(rule, K[l, h], V[l, h], kept, ev, tgt, ms, scores[l, h], sigma)
            Kk, Vk, ck = merge(K[l, h], V[l, h], kept, ev, tgt, wk, we, keys, values)
            for key, val in (("kept", kept), ("evicted", ev), ("target", tgt), ("K", Kk),
                             ("V", Vk), ("pos", pos[kept]), ("count", ck)):
                R[key][l][h] = val
    return R


def lookm(K, V, Q, variant="average", ratio=None, budget=None, recent=8, sinks=4, qpos=None, pos=None):
    """LOOK-M (Wan et al. 2024; code: SUSTechBruce/LOOK-M modify_llama.py): H2O accumulated
    attention of the prompt queries, the first `sinks` tokens and the last `recent` protected,
    top-k to n_keep, evicted tokens merged into their nearest kept token by cosine of keys
    (kept = heavy hitters and recent window), keys and values.  variant: 'average'
    (AVGMergeKVCache), 'pivot' (PivotKVCache), 'weighted' (WeightedMergeKVCache: only evicted
    tokens whose max similarity reaches the head's mean, weights = similarity; normalized here,
    see README 'LOOK-M weighted')."""
    L, H, n, d = K.shape
    pos = np.arange(n) if pos is None else np.asarray(pos)
    qpos = pos[n - Q.shape[3]:] if qpos is None else np.asarray(qpos)
    s = h2o_prefill_scores(Q, K, qpos, pos)
    prot = (sinks, recent)
    nk = _n_keep(n, ratio, budget)
    rule = {"average": "average", "pivot": "pivot", "weighted": "similarity"}[variant]
    R = nearest_policy(K, V, pos, s, prot, nk, rule,
                       threshold="mean" if variant == "weighted" else None)
    R["scores"] = s
    return R


def snapkv_merge(K, V, Q, ratio=None, budget=None, window=64, kernel=5, qpos=None, pos=None):
    """SnapKV selection (kvref's snapkv: kvpress SnapKVPress scores, window protected), evicted
    tokens folded into their nearest kept token (protected included), average weights, keys and
    values (issue 12 'snapkv_merge')."""
    import kvref
    L, H, n, d = K.shape
    pos = np.arange(n) if pos is None else np.asarray(pos)
    qpos = pos[n - Q.shape[3]:] if qpos is None else np.asarray(qpos)
    s, _ = kvref._scores_snapkv(K, Q, qpos, pos, {"window": window, "kernel": kernel})
    R = nearest_policy(K, V, pos, s, (0, window), _n_keep(n, ratio, budget), "average")
    R["scores"] = s
    return R


def kvmerger(K, V, Q, ratio=None, budget=None, recent=8, thr=0.5, sigma=1.0, qpos=None, pos=None):
    """KVMerger (Wang et al. 2024, [P]): H2O prefill scores with a recent window, top-k; evicted
    tokens merged into the pivot of their merging set (runs of consecutive keys with cosine >=
    thr, M5), Gaussian-kernel weights exp(-|k_e - k_p|^2 / (2 sigma^2)) (pivot weight 1), keys
    and values."""
    L, H, n, d = K.shape
    pos = np.arange(n) if pos is None else np.asarray(pos)
    qpos = pos[n - Q.shape[3]:] if qpos is None else np.asarray(qpos)
    s = h2o_prefill_scores(Q, K, qpos, pos)
    nk = _n_keep(n, ratio, budget)
    R = _result(L, H)
    R["scores"] = s
    for l in range(L):
        for h in range(H):
            kept = topk_keep(s[l, h], nk, 0, recent)
            ev = np.setdiff1d(np.arange(n), kept)
            rank = selection_rank(s[l, h], 0, recent)
            tgt = pivot_targets(K[l, h], kept, ev, rank, thr)
            wk, we = weights("gaussian", K[l, h], V[l, h], kept, ev, tgt, sigma=sigma)
            Kk, Vk, ck = merge(K[l, h], V[l, h], kept, ev, tgt, wk, we)
            for key, val in (("kept", kept), ("evicted", ev), ("target", tgt), ("K", Kk),
                             ("V", Vk), ("pos", pos[kept]), ("count", ck)):
                R[key][l][h] = val
    return R


def d2o_prefill(K, V, Q, ratio=None, budget=None, recent=8, qpos=None, pos=None):
    """D2O (Wan et al. 2024, [P?]) at prefill: H2O scores, recent window, top-k; evicted e merged
    into its nearest kept token when its max similarity reaches tau_0 = the head's mean max
    similarity (the EMA's start), weights w_k = e, w_e = exp(cos) (softmax over the target's
    self-similarity 1 and the similarities), keys and values.  Returns the result with 'tau'
    [L][H] for the decode steps.  (D2O's per-layer budgets from attention variance are not
    modelled: uniform n_keep.)"""
    L, H, n, d = K.shape
    pos = np.arange(n) if pos is None else np.asarray(pos)
    qpos = pos[n - Q.shape[3]:] if qpos is None else np.asarray(qpos)
    s = h2o_prefill_scores(Q, K, qpos, pos)
    R = nearest_policy(K, V, pos, s, (0, recent), _n_keep(n, ratio, budget), "d2o",
                       threshold="mean")
    R["scores"] = s
    R["tau"] = [[float(np.nanmean(nearest_targets(K[l, h], R["kept"][l][h], R["evicted"][l][h])[1]))
                 if R["evicted"][l][h].size else math.nan for h in range(H)] for l in range(L)]
    return R


def razor(K, V, ratio=None, budget=None, sinks=4, retrieval=None, pos=None, S0=0):
    """RazorAttention (Tang et al. 2025, [P]): retrieval heads (retrieval [L,H] bool, the head
    classes; None: no retrieval head) keep everything; every other head keeps the first
    `sinks` tokens and the newest ones, the window max(S0, n_keep - sinks - 1) (the paper's
    max(S0, n / C); the compensation token counts in the budget), and one compensation token
    = mean of the evicted keys and values, position = largest evicted position, count = |E|
    (count bias log|E| in decode attention)."""
    L, H, n, d = K.shape
    pos = np.arange(n) if pos is None else np.asarray(pos)
    nk = max(_n_keep(n, ratio, budget), sinks + S0 + 1)
    R = _result(L, H)
    for l in range(L):
        for h in range(H):
            if nk >= n or (retrieval is not None and retrieval[l][h]):
                kept = np.arange(n)
            else:
                m = max(nk - 1, 0)
                head = list(range(min(sinks, m)))
                tail = list(range(n - max(0, m - sinks), n))
                kept = np.array(sorted(set(head) | set(tail)), dtype=np.int64)
            ev = np.setdiff1d(np.arange(n), kept)
            R["kept"][l][h], R["evicted"][l][h] = kept, ev
            R["target"][l][h] = np.full(ev.size, -1)
            R["K"][l][h], R["V"][l][h] = K[l, h, kept].astype(np.float64), V[l, h, kept].astype(np.float64)
            R["pos"][l][h], R["count"][l][h] = pos[kept], np.ones(kept.size)
            R["summary"][l][h] = mean_summary(K[l, h], V[l, h], pos, ev)
    return R


def kmeans_prefill(K, V, Q, C=4, iters=3, ratio=None, budget=None, recent=8, qpos=None, pos=None):
    """The seed's method (kv-policies.md section 1c 'Online k-means (seed 003)'): attention-guided
    pruning -- s_t = mean over the observation queries (the lookback) and the group of A --
    top-k of n_keep - C ordinary tokens with a recent window, then the evicted tokens summarized
    by C k-means centroids (M6, Lloyd `iters` times)."""
    import kvref
    L, H, n, d = K.shape
    pos = np.arange(n) if pos is None else np.asarray(pos)
    qpos = pos[n - Q.shape[3]:] if qpos is None else np.asarray(qpos)
    s = kvref.causal_softmax(Q, K, qpos, pos).mean(axis=3).mean(axis=2)
    nk = _n_keep(n, ratio, budget)
    R = _result(L, H)
    R["scores"] = s
    for l in range(L):
        for h in range(H):
            kept = topk_keep(s[l, h], nk - C, 0, recent) if nk < n else np.arange(n)
            ev = np.setdiff1d(np.arange(n), kept)
            R["kept"][l][h], R["evicted"][l][h] = kept, ev
            R["K"][l][h], R["V"][l][h] = K[l, h, kept].astype(np.float64), V[l, h, kept].astype(np.float64)
            R["pos"][l][h], R["count"][l][h] = pos[kept], np.ones(kept.size)
            R["summary"][l][h] = (kmeans_summary(K[l, h], V[l, h], pos, ev, C, iters)
                                  if ev.size else None)
    return R


def _summary_heads(K, V, scores, C, iters, n_keep, pos, evicts, select, why):
    """Per head (M11, M13): a head over its budget keeps at most n_keep - C of the rule's
    candidates; one under it that evicts (evicts(s): a candidate left out) at most n - C (fewer
    than C rows held: ValueError(why)); else all.  select(s, want) is the rule's kept set."""
    L, H, n, d = K.shape
    pos = np.arange(n) if pos is None else np.asarray(pos)
    R = _result(L, H)
    for l in range(L):
        for h in range(H):
            s = np.asarray(scores[l, h], dtype=np.float64)
            if n > n_keep:
                if n_keep < C:
                    raise ValueError("the budget keeps fewer rows than the summary rows")
                want = n_keep - C
            elif evicts(s):
                if n < C:
                    raise ValueError(why)
                want = n - C
            else:
                want = n
            kept = select(s, want)
            ev = np.setdiff1d(np.arange(n), kept)
            R["kept"][l][h], R["evicted"][l][h] = kept, ev
            R["target"][l][h] = np.full(ev.size, -1)
            R["K"][l][h], R["V"][l][h] = K[l, h, kept].astype(np.float64), V[l, h, kept].astype(np.float64)
            R["pos"][l][h], R["count"][l][h] = pos[kept], np.ones(kept.size)
            R["summary"][l][h] = kmeans_summary(K[l, h], V[l, h], pos, ev, C, iters) if ev.size else None
    R["scores"] = np.asarray(scores, dtype=np.float64)
    return R


def summary_threshold(K, V, scores, tau, C, iters, n_keep, sinks=0, recent=0, pos=None):
    """Threshold selection (selref.threshold_select, DESIGN 'threshold tau') with C summary rows
    from k-means of the evicted tokens (M6), their count in the budget as M11 says.  K, V
    [L,H,n,d], scores [L,H,n]; every head holds no summary row yet (prefill)."""
    import selref
    prot = selref.protected_mask(K.shape[2], sinks, recent)

    def below(s):
        with np.errstate(invalid="ignore"):
            return (~prot & ~(s >= tau)).any()
    return _summary_heads(K, V, scores, C, iters, n_keep, pos, below,
                          lambda s, want: selref.threshold_select(s, tau, want, sinks, recent),
                          "a head evicts below tau but holds fewer rows than C")


def summary_mass(K, V, scores, p, C, iters, n_keep, sinks=0, recent=0, pos=None):
    """Mass selection (selref.mass_select, DESIGN 'mass p') with C summary rows from k-means of
    the evicted tokens (M6), their count in the budget as M13 says.  K, V [L,H,n,d], scores
    [L,H,n] (>= 0 where unprotected); every head holds no summary row yet (prefill)."""
    import selref
    return _summary_heads(K, V, scores, C, iters, n_keep, pos,
                          lambda s: selref.mass_select(s, p, sinks, recent).size < s.size,   # prefix + protected, no cap
                          lambda s, want: selref.mass_select(s, p, sinks, recent, want),
                          "a head evicts past its mass prefix but holds fewer rows than C")


def summary_group(K, V, scores, lens, n_keeps, C, iters, sinks=0, recent=0, pos=None):
    """M12: one scope group of heads (a layer, or the model), head j holding lens[j] tokens of
    K[j], V[j] [n, d], scores[j] [n], count n_keeps[j] (<= lens[j]); top-k with protected sinks
    and recent window (DESIGN section 3), C k-means rows (M6) from each head's evicted tokens.
    Returns per head (kept indices, evicted indices, summary or None)."""
    Hn = len(lens)
    ev_group = any(lens[j] > n_keeps[j] for j in range(Hn))
    if not ev_group:
        return [(np.arange(lens[j]), np.zeros(0, dtype=np.int64), None) for j in range(Hn)]
    want, cap, cands = 0, [], []
    for j in range(Hn):
        n = lens[j]
        if n > 0 and n_keeps[j] < C:
            raise ValueError("the budget keeps fewer rows than the summary rows")
        want += n_keeps[j] - C if n > 0 else 0
        cap.append(n - C if n > 0 else 0)
        for t in range(n):
            v = float(scores[j][t])
            if t < sinks:                    # sinks first (lower position first)
                key = (0, t, 0, 0.0, j, t)
            elif t >= n - recent:            # then the newest of the recent window
                key = (1, n - 1 - t, 0, 0.0, j, t)
            else:                            # then by score (NaN last), head order, position
                key = (2, 0, int(math.isnan(v)), 0.0 if math.isnan(v) else -v, j, t)
            cands.append(key)
    keep = [set() for _ in range(Hn)]
    _group_pick(sorted(cands), want, keep, cap)
    return _group_rows(K, V, lens, keep, C, iters, pos)


def summary_threshold_group(K, V, scores, lens, n_keeps, tau, C, iters, sinks=0, recent=0, pos=None):
    """M15: summary_group's heads (M12) under threshold tau: only the protected tokens and those
    with score >= tau (NaN never) are candidates; a token below tau also makes the group evict."""
    Hn = len(lens)

    def key(j, t, n):
        v = float(scores[j][t])
        if t < sinks:
            return (0, t, 0, 0.0, j, t)
        if t >= n - recent:
            return (1, n - 1 - t, 0, 0.0, j, t)
        return (2, 0, int(math.isnan(v)), 0.0 if math.isnan(v) else -v, j, t)
    cands, below = [], False
    for j in range(Hn):
        for t in range(lens[j]):
            k = key(j, t, lens[j])
            if k[0] < 2 or float(scores[j][t]) >= tau:
                cands.append(k)
            else:
                below = True
    if not below and not any(lens[j] > n_keeps[j] for j in range(Hn)):
        return [(np.arange(lens[j]), np.zeros(0, dtype=np.int64), None) for j in range(Hn)]
    want, cap = 0, []
    for j in range(Hn):
        if lens[j] > 0 and n_keeps[j] < C:
            raise ValueError("the budget keeps fewer rows than the summary rows")
        want += n_keeps[j] - C if lens[j] > 0 else 0
        cap.append(lens[j] - C if lens[j] > 0 else 0)
    keep = [set() for _ in range(Hn)]
    _group_pick(sorted(cands), want, keep, cap)
    return _group_rows(K, V, lens, keep, C, iters, pos)


def _group_pick(cands, want, keep, cap):
    """M12's greedy pass: candidates in order (key[4] the head, key[5] the token), each taken
    while fewer than `want` are and its head holds fewer than its cap (keep: sets per head)."""
    got = 0
    for key in cands:
        if got >= want:
            break
        j, t = key[4], key[5]
        if len(keep[j]) + 1 > cap[j]:
            continue
        keep[j].add(t)
        got += 1


def _group_rows(K, V, lens, keep, C, iters, pos):
    """Per head of a group: (kept indices, evicted indices, k-means summary of the evicted or None)."""
    out = []
    for j in range(len(lens)):
        kept = np.array(sorted(keep[j]), dtype=np.int64)
        ev = np.setdiff1d(np.arange(lens[j]), kept)
        p = np.arange(lens[j]) if pos is None else np.asarray(pos[j])
        sm = kmeans_summary(K[j], V[j], p, ev, C, iters) if ev.size else None
        out.append((kept, ev, sm))
    return out


def summary_floor(K, V, scores, lens, n_keeps, alpha, C, iters, sinks=0, recent=0, pos=None):
    """M14: one layer of heads, head j holding lens[j] tokens of K[j], V[j] [n, d], scores[j]
    [n], count n_keeps[j] (<= lens[j]); AdaKV's floor alpha, top-k order with protected sinks and
    recent window (DESIGN section 3), C k-means rows (M6) from each head's evicted tokens.
    Returns per head (kept indices, evicted indices, summary or None)."""
    Hn = len(lens)
    if not any(lens[j] > n_keeps[j] for j in range(Hn)):
        return [(np.arange(lens[j]), np.zeros(0, dtype=np.int64), None) for j in range(Hn)]

    def key(j, t, n):
        v = float(scores[j][t])
        if t < sinks:                    # sinks first (lower position first)
            return (0, t, 0, 0.0, j, t)
        if t >= n - recent:              # then the newest of the recent window
            return (1, n - 1 - t, 0, 0.0, j, t)
        return (2, 0, int(math.isnan(v)), 0.0 if math.isnan(v) else -v, j, t)

    keep = [set() for _ in range(Hn)]
    rest, cap = 0, []
    for j in range(Hn):
        n, nk = lens[j], n_keeps[j]
        cap.append(n - C if n > 0 else 0)
        if n == 0:                       # an empty head takes no part
            continue
        if nk < C:
            raise ValueError("the budget keeps fewer rows than the summary rows")
        fl = min(math.floor(alpha * nk), nk, n)
        own = sorted(key(j, t, n) for t in range(n))[:max(fl - C, 0)]   # fl <= C: its C rows meet it
        keep[j] = {k[5] for k in own}
        rest += (nk - C) - len(keep[j])
    cands = sorted(key(j, t, lens[j]) for j in range(Hn) for t in range(lens[j]) if t not in keep[j])
    _group_pick(cands, rest, keep, cap)
    return _group_rows(K, V, lens, keep, C, iters, pos)


# --------------------------------------------------------------------------- CaM (kvpress form)

def cam_kvpress(keys, values, scores, attn, target_size, merge_budget, k_merge, draw="expect", u=None,
                form="additive"):
    """kvpress 0.5.5 CAMPress.compress, one batch element: keys, values [H, n, d]; scores
    [H, n] (the base press score; eviction by its mean over heads, the same tokens for every
    head); attn [H, n] cumulative attention.  Evict the n - target_size lowest mean scores,
    merge the k_merge highest-scoring evicted tokens (ties: later position first) into the next
    merge_budget kept tokens (M4): p = clamp(A_e / mean A over the valid targets, 0, 1) (NaN ->
    0, inf -> 1), mask ~ Bernoulli(p) -- draw='expect' uses p itself, draw='uniform' uses
    u [H, n_merge] < p --, v_t += mask v_e / #valid; keys untouched (additive: not DESIGN's
    normalized update, see README 'CaM').  form='normalized' instead applies DESIGN's update
    with w_k = 1 and w_e = mask / #valid for each of e's targets:
    v_t' = (v_t + sum c_e v_e) / (1 + sum c_e).  Returns (kept idx, K [H,T,d], V [H,T,d])."""
    H, n, d = keys.shape
    ms = scores.mean(axis=0)
    n_ev = n - target_size
    if n_ev <= 0:
        return np.arange(n), keys.copy(), values.copy()
    order = sorted(range(n), key=lambda t: (ms[t], t))          # lowest first
    ev = np.sort(np.array(order[:n_ev], dtype=np.int64))
    kept = np.sort(np.array(order[n_ev:], dtype=np.int64))
    cand = sorted(ev.tolist(), key=lambda t: (-ms[t], -t))[:k_merge]
    merge_idx = np.sort(np.array(cand, dtype=np.int64))
    tg = next_kept_targets(kept, merge_idx, merge_budget)
    V = values.astype(np.float64).copy()
    wsum = np.zeros((H, n))
    for i, e in enumerate(merge_idx):
        t = kept[tg[i]]
        nv = t.size
        if nv == 0:
            continue
        for h in range(H):
            mean_a = attn[h, t].sum() / max(nv, 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                p = attn[h, e] / mean_a
            p = 0.0 if math.isnan(p) else (1.0 if math.isinf(p) else min(max(p, 0.0), 1.0))
            mask = p if draw == "expect" else float(u[h, i] < p)
            V[h, t] += mask * values[h, e] / nv
            wsum[h, t] += mask / nv
    if form == "normalized":
        V = V / (1.0 + wsum[..., None])
    return kept, keys[:, kept].astype(np.float64), V[:, kept]


def mergingpress(K, V, scores, n_keep, threshold=0.0):
    """kvpress 0.5.5 MergingPress (merge_fraction 1), one batch element: K, V [H, n, d], scores
    [H, n]; keep the top n_keep per head, each evicted e -> kept c of max cosine (kvpress
    normalizes each key with a 1e-6 floor: cos = k_e.k_c / (max(|k_e|,1e-6) max(|k_c|,1e-6))),
    merged when cos >= threshold with w_e = max(cos, 0) |v_e| / (|v_e| + |v_c| + 1e-6), w_c = 1,
    values only.  Returns (kept [H, n_keep], V_out [H, n_keep, d])."""
    H, n, d = K.shape
    kept_all, Vout = [], []
    for h in range(H):
        kept = np.sort(np.argsort(-scores[h], kind="stable")[:n_keep])
        ev = np.setdiff1d(np.arange(n), kept)
        nk = np.maximum(np.sqrt((K[h] ** 2).sum(axis=1)), 1e-6)
        sim = lambda e, k: (K[h, e] / nk[e, None]) @ (K[h, k] / nk[k, None]).T  # noqa: E731
        tgt, ms = nearest_targets(K[h], kept, ev, sim=sim, threshold=threshold)
        wk, we = weights("mergingpress", K[h], V[h], kept, ev, tgt, ms)
        kept_all.append(kept)
        Vout.append(merge_update(V[h], kept, ev, tgt, wk, we))
    return np.stack(kept_all), np.stack(Vout)


# --------------------------------------------------------------------------- decode-time merges

class DecodeCache:
    """Step-by-step decode with a merge rule, one (layer, head) (M8, M9).  Rows are ordinary
    tokens (kept in position order) followed by C summary rows.  Each step: append the new
    token (state 0, count 1), attend with the step's queries (decode_attention, count bias
    optional), add the attention summed over the group to the state (H2O's observe), then, when
    the ordinary rows exceed budget - C, keep the top (budget - C) by state with the last
    `recent` protected and hand the evicted rows to the merge rule:
      'drop'     nothing;
      'nearest'  merged into their nearest kept row (cosine of keys), weights by `weight`
                 ('average', 'd2o', ..., or 'count': w = the rows' member counts, ToMe's
                 size-weighted mean), keys and values; D2O's EMA threshold when
                 ema_beta is set: tau_t = beta tau_{t-1} + (1 - beta) mean max-sim, merged iff
                 max-sim >= tau_t;
      'summary'  the online running mean into the C summary rows (C = 1: RazorAttention's
                 compensation token; C > 1: the seed's online k-means)."""

    def __init__(self, K, V, pos, state, summary=None, budget=None, recent=1, rule="drop",
                 weight="average", ema_beta=None, tau=None, bias=False, counts=None, C=None,
                 iters=1, dtype=None):
        self.K = np.asarray(K, dtype=np.float64).copy()
        self.V = np.asarray(V, dtype=np.float64).copy()
        self.pos = np.asarray(pos, dtype=np.int64).copy()
        self.state = np.asarray(state, dtype=np.float64).copy()
        self.count = np.ones(self.K.shape[0]) if counts is None else np.asarray(counts, dtype=np.float64).copy()
        # summary rows: (Kc [C,d], Vc [C,d], pc [C], cnt [C], state [C])
        self.summary = summary
        self.budget, self.recent, self.rule, self.weight = budget, recent, rule, weight
        self.ema_beta, self.tau, self.bias = ema_beta, tau, bias
        # M10 (kvcc): rule 'summary' without summary rows builds C of them (Lloyd, `iters`) at
        # the first compression that evicts; the stored rows are rounded to `dtype` after
        # each compression (the cache's storage type; None: float64 throughout).
        self.C, self.iters, self.dtype = C, iters, dtype
        # smallest relative gap of any decision taken so far (selection boundary, nearest
        # target, threshold test, centroid assignment): golden cases keep it >= 1e-4
        self.margin = math.inf

    def rows(self):
        """All rows in storage order: ordinary then summary. (K, V, pos, count)"""
        if self.summary is None:
            return self.K, self.V, self.pos, self.count
        Kc, Vc, pc, cnt, _ = self.summary
        return (np.vstack([self.K, Kc]), np.vstack([self.V, Vc]),
                np.concatenate([self.pos, pc]), np.concatenate([self.count, cnt]))

    def step(self, k, v, p, qs):
        """One decode step: new token k, v [d] at position p, queries qs [G, d].  Returns the
        attention outputs [G, d] (computed after the append, before compression)."""
        self.K = np.vstack([self.K, k])
        self.V = np.vstack([self.V, v])
        self.pos = np.append(self.pos, p)
        self.state = np.append(self.state, 0.0)
        self.count = np.append(self.count, 1.0)
        Kr, Vr, _, cr = self.rows()
        outs, acc = [], np.zeros(Kr.shape[0])
        for q in qs:
            o, pr = decode_attention(q, Kr, Vr, cr, self.bias)
            outs.append(o)
            acc += pr
        m = self.K.shape[0]
        self.state += acc[:m]
        if self.summary is not None:
            self.summary[4][:] += acc[m:]
        C = 0 if self.summary is None else self.summary[0].shape[0]
        if self.budget is not None and m > self.budget - C:
            if C == 0 and self.rule == "summary" and self.C:
                self._compress(self.budget - self.C)     # M10: the first summary rows
            else:
                self._compress(self.budget - C)
        return np.array(outs)

    def _note(self, gap, scale):
        """Record a decision's relative gap."""
        if np.isfinite(gap):
            self.margin = min(self.margin, abs(gap) / max(abs(scale), 1e-30))

    def _round(self):
        import kvref
        if self.dtype is None:
            return
        self.K = kvref.round_storage(self.K, self.dtype).astype(np.float64)
        self.V = kvref.round_storage(self.V, self.dtype).astype(np.float64)
        if self.summary is not None:
            Kc, Vc, pc, cnt, st = self.summary
            self.summary = (kvref.round_storage(Kc, self.dtype).astype(np.float64),
                            kvref.round_storage(Vc, self.dtype).astype(np.float64), pc, cnt, st)

    def _compress(self, keep):
        m = self.K.shape[0]
        kept = topk_keep(self.state, keep, 0, self.recent)
        ev = np.setdiff1d(np.arange(m), kept)
        prot = np.zeros(m, dtype=bool)
        prot[m - self.recent:] = True
        kmask = np.zeros(m, dtype=bool)
        kmask[kept] = True
        a, b = self.state[kmask & ~prot], self.state[~kmask & ~prot]
        if a.size and b.size:
            self._note(a.min() - b.max(), max(abs(a.min()), abs(b.max())))
        if self.rule == "nearest":
            tgt, ms = nearest_targets(self.K, kept, ev)
            if ev.size and kept.size > 1:
                S = np.sort(cosine(self.K[ev], self.K[kept]), axis=1)
                for i in range(ev.size):
                    self._note(S[i, -1] - S[i, -2], S[i, -1])
            if self.ema_beta is not None and ev.size:
                mean_ms = float(np.nanmean(ms))
                self.tau = mean_ms if self.tau is None or math.isnan(self.tau) else \
                    self.ema_beta * self.tau + (1.0 - self.ema_beta) * mean_ms
                for x in ms:
                    self._note(x - self.tau, self.tau)
                tgt = np.where(ms >= self.tau, tgt, -1)
            if self.weight == "count":     # ToMe's size-weighted mean: w = the member counts
                wk, we = self.count[kept], self.count[ev]
            else:
                wk, we = weights(self.weight, self.K, self.V, kept, ev, tgt, ms, self.state)
            Kk, Vk, ck = merge(self.K, self.V, kept, ev, tgt, wk, we, counts=self.count)
        else:
            Kk, Vk, ck = self.K[kept], self.V[kept], self.count[kept]
            if self.rule == "summary" and ev.size and self.summary is None:
                self._note(kmeans_margin(self.K, ev, self.C, self.iters, self.count), 1.0)
                Kc, Vc, pc, cnt, members = kmeans_summary(self.K, self.V, self.pos, ev, self.C,
                                                          self.iters, self.count)
                self.summary = (Kc, Vc, pc, cnt, np.zeros(self.C))
            elif self.rule == "summary" and ev.size:
                Kc, Vc, pc, cnt, st = self.summary
                self._note_assign(self.K[ev], Kc)
                Kc, Vc, pc, cnt, _ = online_update(Kc, Vc, pc, cnt, self.K[ev], self.V[ev],
                                                   self.pos[ev], self.count[ev])
                self.summary = (Kc, Vc, pc, cnt, st)
        self.K, self.V, self.count = Kk, Vk, ck
        self.pos, self.state = self.pos[kept], self.state[kept]
        self._round()

    def _note_assign(self, Kx, Kc):
        """Gap between the nearest and the second-nearest centroid of each row."""
        if Kc.shape[0] < 2:
            return
        d2 = np.sort(((Kx[:, None, :] - Kc[None, :, :]) ** 2).sum(axis=2), axis=1)
        for r in d2:
            self._note(r[1] - r[0], r[1])
