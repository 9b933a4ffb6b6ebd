#!/usr/bin/env python3
"""KvccPress(snapkv.lua) vs kvpress's SnapKVPress inside kvpress, on a Hugging Face Llama layer.

A LlamaForCausalLM with random weights and serving-like attention shapes (head_dim 128, 32 query
heads, 8 KV heads: group 4; one layer; hidden size 4096) is built locally. For a prompt of n
tokens the cache layer holds random post-RoPE keys and values [1, 8, n, 128]; the compression
step is what kvpress runs after the prefill's attention: the press's ``forward_hook`` on the
layer's ``self_attn`` (BasePress.forward_hook → compress → cache update), with the layer's real
``q_proj`` and rotary embedding recomputing the last 64 queries from the hidden states. Both
presses keep half (ratio 0.5, window 64, kernel 5).

Measured per (dtype, n, press) — KvccPress with the prefill's lse, KvccPress without it, SnapKVPress —
each in a fresh process:
- time: the median of REPS hook calls after one warm-up (kvcc's plan and compile cache warm;
  the cache layer is restored from a copy before each call, outside the timing);
- peak memory: the rise of the process's peak RSS (VmHWM, reset through
  /proc/self/clear_refs) over its RSS before the first, cold hook call — everything the step
  allocates, kvcc's plan workspace included (glibc serves blocks over 128 KiB with mmap in these
  processes, so freed memory is not silently reused); kvpress materializes the window's
  attention [32, 64, n] in float32, kvcc never does.
- agreement: the fraction of kept positions the two presses share (f32: near-ties aside,
  identical; bf16: kvpress rounds attention weights to bf16 before averaging), and whether
  KvccPress keeps the same sets with and without the lse.
KvccPress on an sdpa model (Hugging Face's default) takes the window's log-sum-exp from the
prefill's own attention (torch's CPU flash attention returns it) and kvcc reads K once instead
of twice; the prefill does not run here, so the child computes that lse before the timed calls
with the same flash kernel on the window's rows. The --prefill-n check times the layer's sdpa
attention with and without KvccPress's capturing wrapper (and checks its output is identical).

    build/py-venv/bin/python bench/press_bench.py [--n 8192,32768] [--dtypes f32,bf16] [--reps 3]
        [--threads 2] [--prefill-n 4096] [--out bench/results/python-press.md]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))

H, G, D, WINDOW, RATIO = 8, 4, 128, 64, 0.5


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(press_name, dtype, n, reps, threads):
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM
    from kvpress import SnapKVPress
    from kvcc.press import KvccPress

    tdt = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
    cfg = LlamaConfig(vocab_size=128, hidden_size=H * G * D, intermediate_size=256, num_hidden_layers=1,
                      num_attention_heads=H * G, num_key_value_heads=H, head_dim=D,
                      max_position_embeddings=max(n, 4096))
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(tdt).eval()
    att = model.model.layers[0].self_attn
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(1, H, n, D, generator=g).to(tdt)
    values = torch.randn(1, H, n, D, generator=g).to(tdt)
    hidden = torch.empty(1, n, H * G * D, dtype=tdt)          # only the last WINDOW rows are read
    hidden[:, n - WINDOW:] = torch.randn(1, WINDOW, H * G * D, generator=g).to(tdt)
    pos = torch.arange(n)[None]
    with torch.no_grad():
        cos, sin = model.model.rotary_emb(values[:, 0], pos)
    cos, sin = cos.to(tdt), sin.to(tdt)
    if press_name in ("kvcc", "kvcc-nolse"):
        press = KvccPress(os.path.join(ROOT, "policies", "snapkv.lua"), ratio=RATIO, window=WINDOW, kernel=5,
                          threads=threads)
    else:
        press = SnapKVPress(compression_ratio=RATIO, window_size=WINDOW, kernel_size=5)
    cache = DynamicCache()
    cache.update(keys.clone(), values.clone(), 0)
    kw = {"hidden_states": hidden, "past_key_values": cache, "cache_position": torch.arange(n),
          "position_embeddings": (cos, sin)}
    out = (torch.empty(0), None)

    lse = None
    if press_name == "kvcc":
        # what the prefill's sdpa attention hands KvccPress on this layer (kvcc.press._sdpa_with_lse):
        # the window's log-sum-exp from torch's CPU flash attention, the kernel F.sdpa runs —
        # here on the window's rows only, with the causal mask of those rows (outside the timing:
        # the prefill computes it anyway)
        from kvcc.press import _FLASH_CPU, observation_queries
        with torch.no_grad():
            qw = observation_queries(att, hidden, (cos, sin), WINDOW, att.q_proj(hidden[:, n - WINDOW:]))
            mask = torch.zeros(WINDOW, n, dtype=tdt)
            mask.masked_fill_(torch.arange(n)[None, :] > torch.arange(n - WINDOW, n)[:, None], float("-inf"))
            lse = _FLASH_CPU(qw, keys, values, 0.0, False, attn_mask=mask[None, None], scale=att.scaling)[1]
            lse = lse.float().contiguous()
            del mask

    def restore():
        cache.layers[0].keys = keys.clone()
        cache.layers[0].values = values.clone()
        att._kvcc_lse = lse

    times, qtimes, ctimes = [], [], []
    with torch.no_grad(), press(model):
        # the prefill's q_proj of the window (KvccPress keeps it; SnapKVPress recomputes it in its hook)
        att.q_proj(hidden[:, n - WINDOW:])
        att._kvcc_lse = lse
        rss0 = status("VmRSS")
        have_peak = reset_peak()
        t0 = time.perf_counter()
        press.forward_hook(att, [], kw, out)                    # cold: plan, workspaces
        cold = time.perf_counter() - t0
        peak = status("VmHWM") - rss0 if have_peak else float("nan")
        kept_k = cache.layers[0].keys[0].float().numpy()
        for _ in range(reps):
            restore()
            t0 = time.perf_counter()
            att.q_proj(hidden[:, n - WINDOW:])
            qtimes.append(time.perf_counter() - t0)
            t0, c0 = time.perf_counter(), time.process_time()
            press.forward_hook(att, [], kw, out)
            times.append(time.perf_counter() - t0)
            ctimes.append(time.process_time() - c0)
        m = cache.layers[0].keys.shape[2]
    # kept positions by row matching (keys are random, rows distinct)
    kin = keys[0].float().numpy()
    kept = []
    for h in range(H):
        where = {kin[h, t].tobytes(): t for t in range(n)}
        kept.append(sorted(where[kept_k[h, j].tobytes()] for j in range(m)))
    res = {"press": press_name, "dtype": dtype, "n": n, "median_ms": 1e3 * float(np.median(times)),
           "min_ms": 1e3 * float(np.min(times)), "cold_ms": 1e3 * cold, "qproj_ms": 1e3 * float(np.median(qtimes)),
           "cpu_ms": 1e3 * float(np.median(ctimes)), "load": os.getloadavg()[0], "peak_bytes": peak, "kept": m,
           "threads": threads, "torch": torch.__version__}
    np.save(os.environ["KVCC_BENCH_KEPT"], np.array(kept, dtype=np.int32))
    print(json.dumps(res))


def prefill(dtype, n, reps, threads):
    """The layer's prefill attention through Hugging Face's sdpa function (as kvpress patches it)
    and through KvccPress's wrapper that also keeps the window's lse: time and equality."""
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    import kvpress  # noqa: F401  (patches the attention functions as in use)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers import LlamaConfig, LlamaForCausalLM
    from kvcc.press import _sdpa_with_lse
    tdt = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
    cfg = LlamaConfig(vocab_size=128, hidden_size=H * G * D, intermediate_size=256, num_hidden_layers=1,
                      num_attention_heads=H * G, num_key_value_heads=H, head_dim=D,
                      max_position_embeddings=max(n, 4096))
    att = LlamaForCausalLM(cfg).to(tdt).eval().model.layers[0].self_attn
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, H * G, n, D, generator=g).to(tdt)
    k = torch.randn(1, H, n, D, generator=g).to(tdt)
    v = torch.randn(1, H, n, D, generator=g).to(tdt)
    plain = ALL_ATTENTION_FUNCTIONS["sdpa"]
    wrapped = _sdpa_with_lse(plain)
    att._kvcc_lse_obs = WINDOW
    res = {}
    with torch.no_grad():
        for name, f in (("plain", plain), ("wrapped", wrapped)) * 2:
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                o = f(att, q, k, v, None, dropout=0.0, scaling=att.scaling)[0]
                ts.append(time.perf_counter() - t0)
            res[name] = (1e3 * float(np.median(ts)), o)
    same = torch.equal(res["plain"][1], res["wrapped"][1]) and att._kvcc_lse is not None
    print(json.dumps({"dtype": dtype, "n": n, "plain_ms": res["plain"][0], "wrapped_ms": res["wrapped"][0],
                      "same": bool(same)}))


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", default="8192,32768")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--prefill-n", type=int, default=4096,
                    help="n of the prefill-attention check (sdpa with and without the lse capture; 0: none)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--prefill", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        p, dt, n = a.child.split(",")
        return child(p, dt, int(n), a.reps, a.threads)
    if a.prefill:
        dt, n = a.prefill.split(",")
        return prefill(dt, int(n), a.reps, a.threads)
    import numpy as np
    os.environ.setdefault("KVCC_CACHE_DIR", os.path.join(ROOT, "build", "py-cache"))
    rows = []
    tmp = os.path.join(ROOT, "build", "press-bench")
    os.makedirs(tmp, exist_ok=True)
    load0 = os.getloadavg()
    for dt in a.dtypes.split(","):
        for n in [int(x) for x in a.n.split(",")]:
            r = {}
            for p in ("kvcc", "kvcc-nolse", "kvpress"):
                # large blocks through mmap: freed memory goes back to the system, so the peak RSS
                # of the step counts its own allocations rather than reused heap pages
                env = dict(os.environ, KVCC_BENCH_KEPT=os.path.join(tmp, "%s.npy" % p),
                           OMP_NUM_THREADS=str(a.threads), PYTHONWARNINGS="ignore",
                           MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
                out = subprocess.run([sys.executable, __file__, "--child", "%s,%s,%d" % (p, dt, n), "--reps",
                                      str(a.reps), "--threads", str(a.threads)], capture_output=True, text=True,
                                     env=env)
                if out.returncode:
                    sys.exit("press_bench: %s %s n=%d failed:\n%s" % (p, dt, n, out.stderr[-2000:]))
                r[p] = json.loads(out.stdout.strip().split("\n")[-1])
            kk = {p: np.load(os.path.join(tmp, "%s.npy" % p)) for p in r}
            agree = sum(len(np.intersect1d(kk["kvcc"][h], kk["kvpress"][h])) for h in range(H)) / kk["kvcc"].size
            same = bool(np.array_equal(kk["kvcc"], kk["kvcc-nolse"]))
            rows.append((dt, n, r["kvcc"], r["kvcc-nolse"], r["kvpress"], agree, same))
            print("%s n=%d: kvcc %.1f ms (no lse %.1f ms; peak +%.1f MB), kvpress %.1f ms (peak +%.1f MB): "
                  "%.1fx (%.1fx), kept agreement %.4f, lse/no-lse kept sets %s"
                  % (dt, n, r["kvcc"]["median_ms"], r["kvcc-nolse"]["median_ms"], r["kvcc"]["peak_bytes"] / 2**20,
                     r["kvpress"]["median_ms"], r["kvpress"]["peak_bytes"] / 2**20,
                     r["kvpress"]["median_ms"] / r["kvcc"]["median_ms"],
                     r["kvpress"]["median_ms"] / r["kvcc-nolse"]["median_ms"], agree,
                     "identical" if same else "differ"), flush=True)
    pre = []
    if a.prefill_n:
        for dt in a.dtypes.split(","):
            out = subprocess.run([sys.executable, __file__, "--prefill", "%s,%d" % (dt, a.prefill_n), "--reps",
                                  str(a.reps), "--threads", str(a.threads)], capture_output=True, text=True,
                                 env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(a.threads)))
            if out.returncode:
                sys.exit("press_bench: prefill %s failed:\n%s" % (dt, out.stderr[-2000:]))
            pre.append(json.loads(out.stdout.strip().split("\n")[-1]))
    from importlib.metadata import version
    lines = ["# KvccPress vs kvpress SnapKVPress inside kvpress (CPU)", "",
             "- date: %s UTC; commit %s" % (time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                                         subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                                        capture_output=True, text=True).stdout.strip()),
             "- CPU: %s, %d threads (torch and kvcc); load average at start %s, at the end %s" % (
                 cpu_name(), a.threads, " ".join("%.1f" % x for x in load0),
                 " ".join("%.1f" % x for x in os.getloadavg())),
             "- torch %s, transformers %s, kvpress %s" % (rows[0][2]["torch"], version("transformers"),
                                                         version("kvpress")),
             "- case: LlamaForCausalLM, random weights, 1 layer, 32 query heads / 8 KV heads (group 4), "
             "head_dim 128; the press's forward_hook on the layer after the prefill; ratio 0.5, window 64, "
             "kernel 5; median of %d calls after a warm-up" % a.reps, "",
             "| dtype | n | KvccPress ms | KvccPress, no lse ms | SnapKVPress ms | speedup | speedup, no lse "
             "| CPU ms KvccPress / no lse / SnapKVPress | CPU-time ratio (no lse) | (q_proj of the window ms) "
             "| KvccPress peak MB | SnapKVPress peak MB | kept agreement | load |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for dt, n, k, k2, p, agree, same in rows:
        lines.append("| %s | %d | %.1f | %.1f | %.1f | %.1fx | %.1fx | %.0f / %.0f / %.0f | %.1fx (%.1fx) | %.1f "
                     "| %.1f | %.1f | %.4f | %.1f |" % (
                         dt, n, k["median_ms"], k2["median_ms"], p["median_ms"], p["median_ms"] / k["median_ms"],
                         p["median_ms"] / k2["median_ms"], k["cpu_ms"], k2["cpu_ms"], p["cpu_ms"],
                         p["cpu_ms"] / k["cpu_ms"], p["cpu_ms"] / k2["cpu_ms"], p["qproj_ms"],
                         k["peak_bytes"] / 2**20, p["peak_bytes"] / 2**20, agree,
                         (k["load"] + k2["load"] + p["load"]) / 3))
    lines += ["", "KvccPress: on a model with attn_implementation=\"sdpa\" (Hugging Face's default) KvccPress "
              "takes the window's log-sum-exp from the prefill's own attention (torch's CPU flash attention "
              "returns it; kvcc.press._sdpa_with_lse) and kvcc reads K once; here that lse is computed before "
              "the timed call, by the same flash kernel on the window's rows. \"no lse\": the same press "
              "without it (an eager model, or capture_lse=False): kvcc computes the softmax statistics itself, "
              "a second pass over K. The two keep identical sets (%s)." % (
                  "checked: every row above" if all(x[6] for x in rows) else "NOT identical in some rows above"),
              "", "CPU ms: process CPU time (all threads) of the hook call, median; less sensitive than wall time "
              "to other processes on the machine (load: the 1-minute load average during the runs).",
              "", "(q_proj of the window): the time of the layer's q_proj on the last 64 hidden states, which "
              "SnapKVPress's hook recomputes (inside its time) and KvccPress takes from the prefill's own q_proj "
              "(a forward hook keeps those 64 rows).",
              "", "Peak MB: the rise of the process's peak RSS during the first (cold) hook call over its RSS "
              "before it — the kept rows' new tensors (both presses), kvcc's plan workspace, kvpress's "
              "float32 attention of the window [32, 64, n] and its softmax/pool temporaries."]
    if pre:
        lines += ["", "The lse is free in the prefill: the layer's attention (Hugging Face's sdpa function, "
                  "n = %d, causal, GQA) with and without KvccPress's wrapper, median of %d:" % (a.prefill_n, a.reps),
                  "", "| dtype | n | sdpa ms | sdpa + lse capture ms | outputs identical |", "|---|---:|---:|---:|---|"]
        for x in pre:
            lines.append("| %s | %d | %.1f | %.1f | %s |" % (x["dtype"], x["n"], x["plain_ms"], x["wrapped_ms"],
                                                          "yes" if x["same"] else "NO"))
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    sys.exit(main())
