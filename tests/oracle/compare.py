#!/usr/bin/env python3
"""compare.py CASE.npz RESULT.npz [--score-rtol R] [--score-atol A]

Checks kvcc's result (scores [L,H,n] float64, kept.<l>.<h> int32, K.<l>.<h> / V.<l>.<h>
float32 [n_keep, d]) against a golden case from gen_golden.py (expected kept sets per layer,
expect.kept [L,H,n_keep] or expect.kept.<l> [H,n_l], or per head, expect.kept.<l>.<h>).  Prints one line,
"PASS policy__case" or "FAIL policy__case: <first difference>", exit status 0 / 1.

Order of checks: scores (within |r - e| <= atol + rtol*|e| where the expected score is not
NaN), then kept indices (exact), then K and V rows (bit-exact).  Merge cases (expect.count.*:
tests/oracle/merge_golden.py): kept (summary rows -1), pos and counts exact (counts 1e-9
relative), rows within one ulp of the storage dtype.  Decode cases (expect.out): every
step's attention outputs (1e-5 relative + 1e-6), the positions held after every step, and
the final rows by position.
"""

import argparse
import os
import sys

import numpy as np


class Mismatch(Exception):
    pass


def expected_per_layer(case, name, L):
    """expect.<name> as a list over layers of [H, ...] arrays (uniform or per-layer layout)."""
    key = "expect." + name
    if key in case.files:
        arr = case[key]
        return [arr[l] for l in range(L)]
    out = []
    for l in range(L):
        k = "%s.%d" % (key, l)
        if k not in case.files:
            raise Mismatch("case file lacks %s (and %s)" % (key, k))
        out.append(case[k])
    return out


def get(res, key):
    if key not in res.files:
        raise Mismatch("result lacks %s" % key)
    return res[key]


def check_scores(case, res, rtol, atol):
    exp = case["expect.scores"]
    mask = ~np.isnan(exp)
    if not mask.any():
        return                                     # nothing to compare (e.g. streaming_llm)
    got = np.asarray(get(res, "scores"), dtype=np.float64)
    if got.shape != exp.shape:
        raise Mismatch("scores shape %s, expected %s" % (got.shape, exp.shape))
    with np.errstate(invalid="ignore"):
        bad = mask & ~(np.abs(got - exp) <= atol + rtol * np.abs(exp))   # NaN in got -> bad
    if bad.any():
        l, h, t = (int(i) for i in np.argwhere(bad)[0])
        e, g = exp[l, h, t], got[l, h, t]
        rel = abs(g - e) / max(abs(e), 1e-300)
        raise Mismatch("score l=%d h=%d t=%d: got %.17g expected %.17g (rel %.3g; %d of %d differ)"
                       % (l, h, t, g, e, rel, int(bad.sum()), int(mask.sum())))


def expected_per_head(case, name, L, H):
    """expect.<name>.<l>.<h> (per-head lengths: scopes layer/model) as [l][h] lists."""
    return [[case["expect.%s.%d.%d" % (name, l, h)] for h in range(H)] for l in range(L)]


def check_pos_and_rows(case, res, L, H):
    """Decode cases: the kept positions (expect.pos.<l>.<h>) and their rows."""
    for l in range(L):
        for h in range(H):
            for name in ("pos", "K", "V"):
                e = case["expect.%s.%d.%d" % (name, l, h)]
                g = np.asarray(get(res, "%s.%d.%d" % (name, l, h)))
                if g.shape != e.shape:
                    raise Mismatch("%s l=%d h=%d: shape %s, expected %s" % (name, l, h, g.shape, e.shape))
                same = np.array_equal(g, e) if name == "pos" else np.array_equal(
                    g.astype(np.float32).view(np.uint32), e.astype(np.float32).view(np.uint32))
                if not same:
                    raise Mismatch("%s l=%d h=%d differ: got %s expected %s"
                                   % (name, l, h, g.ravel()[:8].tolist(), e.ravel()[:8].tolist()))


def check_kept_and_rows(case, res):
    L, H = case["K"].shape[:2]
    if "expect.pos.0.0" in case.files:
        return check_pos_and_rows(case, res, L, H)
    if "expect.kept.0.0" in case.files:
        kept, Ke, Ve = (expected_per_head(case, x, L, H) for x in ("kept", "K", "V"))
    else:
        kept = expected_per_layer(case, "kept", L)
        Ke = expected_per_layer(case, "K", L)
        Ve = expected_per_layer(case, "V", L)
    for l in range(L):
        for h in range(H):
            e = kept[l][h].astype(np.int64)
            g = np.asarray(get(res, "kept.%d.%d" % (l, h))).astype(np.int64).ravel()
            if g.shape != e.shape:
                raise Mismatch("kept l=%d h=%d: %d tokens, expected %d" % (l, h, g.size, e.size))
            if not np.array_equal(g, e):
                i = int(np.argmax(g != e))
                only_g = sorted(set(g.tolist()) - set(e.tolist()))
                only_e = sorted(set(e.tolist()) - set(g.tolist()))
                raise Mismatch("kept l=%d h=%d slot %d: got t=%d expected t=%d (extra %s, missing %s)"
                               % (l, h, i, g[i], e[i], only_g[:4], only_e[:4]))
    for name, exp in (("K", Ke), ("V", Ve)):
        for l in range(L):
            for h in range(H):
                e = np.asarray(exp[l][h], dtype=np.float32)
                g = np.asarray(get(res, "%s.%d.%d" % (name, l, h)))
                if g.dtype != np.float32:
                    raise Mismatch("%s.%d.%d has dtype %s, expected float32" % (name, l, h, g.dtype))
                if g.shape != e.shape:
                    raise Mismatch("%s l=%d h=%d: shape %s, expected %s" % (name, l, h, g.shape, e.shape))
                bad = g.view(np.uint32) != e.view(np.uint32)
                if bad.any():
                    r, c = (int(i) for i in np.argwhere(bad)[0])
                    t = int(kept[l][h][r])
                    raise Mismatch("%s l=%d h=%d t=%d chan %d: got %.9g expected %.9g"
                                   % (name, l, h, t, c, g[r, c], e[r, c]))


# --------------------------------------------------------------------------- merges

ULP_BITS = {"f32": 23, "f16": 10, "bf16": 7}


def check_rows(what, got, exp, dtype):
    """Merged rows: within one unit in the last place of the storage dtype (kvcc and the
    oracle both round a double result; they may land on the two sides of a boundary)."""
    got = np.asarray(got)
    if got.dtype != np.float32:
        raise Mismatch("%s has dtype %s, expected float32" % (what, got.dtype))
    if got.shape != exp.shape:
        raise Mismatch("%s: shape %s, expected %s" % (what, got.shape, exp.shape))
    e = exp.astype(np.float64)
    g = got.astype(np.float64)
    tol = np.maximum(np.abs(e), np.abs(g)) * 2.0 ** -ULP_BITS[dtype] + 1e-30
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(g - e) <= tol)
    bad &= ~(np.isnan(e) & np.isnan(g))
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise Mismatch("%s %s: got %.9g expected %.9g (%d of %d outside one %s ulp)"
                       % (what, idx, g[idx], e[idx], int(bad.sum()), bad.size, dtype))


def check_counts(what, got, exp):
    got = np.asarray(got, dtype=np.float64)
    if got.shape != exp.shape:
        raise Mismatch("%s: shape %s, expected %s" % (what, got.shape, exp.shape))
    bad = ~(np.abs(got - exp) <= 1e-9 * np.maximum(np.abs(exp), 1.0))
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise Mismatch("%s slot %d: got %.17g expected %.17g" % (what, i, got[i], exp[i]))


def check_exact(what, got, exp):
    got = np.asarray(got).astype(np.int64).ravel()
    exp = np.asarray(exp).astype(np.int64).ravel()
    if got.shape != exp.shape:
        raise Mismatch("%s: %d entries, expected %d" % (what, got.size, exp.size))
    if not np.array_equal(got, exp):
        i = int(np.argmax(got != exp))
        raise Mismatch("%s slot %d: got %d expected %d" % (what, i, got[i], exp[i]))


def check_merge(case, res):
    """A merge case: kept rows (summary rows: -1), positions, counts exact / 1e-9; rows
    within one storage ulp."""
    L, H = case["K"].shape[:2]
    dtype = str(case["dtype"])
    for l in range(L):
        for h in range(H):
            t = "%d.%d" % (l, h)
            check_exact("kept l=%d h=%d" % (l, h), get(res, "kept." + t), case["expect.kept." + t])
            check_exact("pos l=%d h=%d" % (l, h), get(res, "pos." + t), case["expect.pos." + t])
            check_counts("count l=%d h=%d" % (l, h), get(res, "count." + t), case["expect.count." + t])
            for x in ("K", "V"):
                check_rows("%s l=%d h=%d" % (x, l, h), get(res, "%s.%s" % (x, t)),
                           case["expect.%s.%s" % (x, t)], dtype)


def check_decode(case, res):
    """A decode case: every step's attention outputs (1e-5 relative + 1e-6), the positions
    held after every step (as sets), the final rows by position."""
    exp = case["expect.out"].astype(np.float64)
    got = np.asarray(get(res, "out"), dtype=np.float64)
    if got.shape != exp.shape:
        raise Mismatch("out: shape %s, expected %s" % (got.shape, exp.shape))
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(got - exp) <= 1e-6 + 1e-5 * np.abs(exp))
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise Mismatch("out step %d l=%d h=%d g=%d chan %d: got %.9g expected %.9g" % (idx + (got[idx], exp[idx])))
    sl, sp = get(res, "steplen"), get(res, "steppos")
    S, L, H = case["expect.steplen"].shape
    for s in range(S):
        for l in range(L):
            for h in range(H):
                n = int(sl[s, l, h])
                g = np.sort(sp[s, l, h, :n])
                e = case["expect.steppos"][s, l, h, :int(case["expect.steplen"][s, l, h])]
                if g.shape != e.shape or not np.array_equal(g, e):
                    raise Mismatch("step %d l=%d h=%d: holds positions %s, expected %s"
                                   % (s, l, h, g.tolist()[:12], e.tolist()[:12]))
    dtype = str(case["dtype"])
    for l in range(L):
        for h in range(H):
            t = "%d.%d" % (l, h)
            o = np.argsort(get(res, "pos." + t), kind="stable")
            check_exact("final pos l=%d h=%d" % (l, h), get(res, "pos." + t)[o], case["expect.pos." + t])
            check_counts("final count l=%d h=%d" % (l, h), get(res, "count." + t)[o], case["expect.count." + t])
            for x in ("K", "V"):
                check_rows("final %s l=%d h=%d" % (x, l, h), get(res, "%s.%s" % (x, t))[o],
                           case["expect.%s.%s" % (x, t)], dtype)


def compare(case_path, result_path, rtol=1e-6, atol=1e-9):
    """Returns (ok, line)."""
    name = os.path.basename(case_path)
    if name.endswith(".npz"):
        name = name[:-4]
    try:
        with np.load(case_path) as case, np.load(result_path) as res:
            if "expect.out" in case.files:
                check_decode(case, res)
            else:
                check_scores(case, res, rtol, atol)
                if "expect.count.0.0" in case.files:
                    check_merge(case, res)
                else:
                    check_kept_and_rows(case, res)
    except Mismatch as m:
        return False, "FAIL %s: %s" % (name, m)
    except (OSError, ValueError, KeyError) as e:
        return False, "FAIL %s: cannot read: %s" % (name, e)
    return True, "PASS %s" % name


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case")
    ap.add_argument("result")
    ap.add_argument("--score-rtol", type=float, default=1e-6)
    ap.add_argument("--score-atol", type=float, default=1e-9)
    a = ap.parse_args(argv)
    ok, line = compare(a.case, a.result, a.score_rtol, a.score_atol)
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
