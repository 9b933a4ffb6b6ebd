"""KvccPress: a kvpress press that runs a compiled kvcc policy on a Hugging Face model's KV cache.

    from kvcc.press import KvccPress
    press = KvccPress("policies/snapkv.lua", ratio=0.5, window=64)
    with press(model):                      # kvpress's protocol: compress the prefill's cache
        model(input_ids, past_key_values=cache)

It is a ``kvpress.BasePress``: ``with press(model):`` around a forward or ``generate``, and
kvpress's ``kv-press-text-generation`` pipeline (``pipe(context, question=…, press=press)``).
At the end of the prefill's attention in each layer it hands the layer's cache tensors to
``kvcc_compress`` — in place, no attention matrix, no copy of the cache — and replaces them by
tensors holding only the kept rows: the cache really gets shorter (kvpress's own presses gather
into shorter tensors too; its head-wise ones only mask).

How the Hugging Face cache stays consistent:

* **Uniform budgets** (every shipped policy but PyramidKV): each layer's keys become
  ``[batch, kv_heads, n_keep, head_dim]``.
* **Per-layer budgets** (PyramidKV's schedule): layers get different lengths. Hugging Face builds
  one attention mask from layer 0's length, which breaks every other layer once more than one
  token is fed after the prefill (kvpress's own PyramidKVPress fails there the same way).
  KvccPress therefore leaves a forward pre-hook on each attention layer (:func:`fix_masks`)
  that rebuilds the 4-D mask for the layer's own length: all compressed rows visible, causal
  among the new tokens (unpadded batches only — a padded batch raises).
* **Per-head budgets** (a policy with ``scope = layer``, AdaKV-style): a layer's heads keep
  different counts. The layer is padded to its longest head; the padded slots hold zeros and the
  same pre-hook masks them (−inf / False for that head's query heads) in every later forward.

Policies whose selection depends on the layer index or on other layers (a budget schedule,
``scope = model``, ``kv.random``, ``x.layer``; see :attr:`kvcc.Policy.layer_dependent`) are
compressed with every layer in one ``kvcc_compress`` call after the last layer's prefill
attention: the layers' cache tensors are first gathered into one ``[layers, …]`` buffer (one
copy of the cache; the C API takes one base pointer with a layer stride). Others are compressed
layer by layer, in place.

Observation queries are recomputed from the layer's input hidden states the way kvpress's
SnapKVPress does (``q_proj`` of the last ``obs`` positions, RoPE from the layer's
``position_embeddings``), in the cache's dtype, for the count the policy declares
(``kvcc_policy_obs``: its ``window``, every position for ``obs = kvcc.all``, or none).

Not supported: decode-time policies (``when = decode``, e.g. H2O: their observe hook runs inside
kvcc's decode attention, which Hugging Face's attention does not call), kvpress wrappers that
need a ``ScorerPress`` (AdaKVPress, DecodingPress…), GPU tensors.
"""
from __future__ import annotations

import contextlib
import math
import os
import weakref
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch
from kvpress import BasePress
from kvpress.presses.base_press import is_prefilling
from kvpress.utils import extract_keys_and_values

from . import core

_TORCH_DTYPES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one thread for the press's own small or memory-bound ops (RoPE of the window,
    reshapes, copies of the kept rows): kvcc runs the heavy part on its own pool, and torch's
    OpenMP team costs far more than these ops once the machine is busy (140 ms instead of 1 ms
    for the window's RoPE on a loaded 2-core machine)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def observation_queries(module: torch.nn.Module, hidden_states: torch.Tensor, position_embeddings: Any,
                        nobs: int, projected: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The post-RoPE queries of the last ``nobs`` positions, ``[batch, q_heads, nobs, head_dim]``:
    from ``projected`` (the q_proj output of those positions, captured during the prefill) or
    recomputed from the attention layer's input as kvpress's SnapKVPress does."""
    b, n, _ = hidden_states.shape
    hq = module.config.num_attention_heads
    d = module.head_dim
    if projected is not None:
        q = projected
    else:
        x = hidden_states[:, n - nobs:]
        if hasattr(module, "q_proj"):
            q = module.q_proj(x)
        elif hasattr(module, "qkv_proj"):                # Phi-3
            q = module.qkv_proj(x)[..., :hq * d]
        else:
            raise NotImplementedError("KvccPress: no q_proj in %s" % type(module).__name__)
    with _one_thread():
        q = q.reshape(b, nobs, hq, d).transpose(1, 2)
        if hasattr(module, "q_norm"):                    # Qwen3, Gemma3
            q = module.q_norm(q)
        cos, sin = position_embeddings
        cos, sin = cos[:, n - nobs:].unsqueeze(1), sin[:, n - nobs:].unsqueeze(1)
        return (q * cos) + (_rotate_half(q) * sin)


def _lse(q: torch.Tensor, keys: torch.Tensor, scale: float, chunk: int = 4096) -> torch.Tensor:
    """Log-sum-exp of each observation query's causal attention logits (float32), for
    policies that read x.lse: q [Hq, O, d] (the last O positions), keys [H, n, d]."""
    hq, O, d = q.shape
    H, n, _ = keys.shape
    G = hq // H
    qf = q.float().reshape(H, G * O, d)
    qpos = torch.arange(n - O, n).repeat(G)                       # [G*O]
    m = torch.full((H, G * O), -math.inf)
    s = torch.zeros(H, G * O)
    for t0 in range(0, n, chunk):
        k = keys[:, t0:t0 + chunk].float()
        lg = torch.matmul(qf, k.transpose(1, 2)) * scale          # [H, G*O, c]
        tpos = torch.arange(t0, t0 + k.shape[1])
        lg = lg.masked_fill(tpos[None, None, :] > qpos[None, :, None], -math.inf)
        mx = torch.maximum(m, lg.amax(-1))
        s = s * torch.exp(m - mx) + torch.exp(lg - mx[..., None]).sum(-1)
        m = mx
    return (m + torch.log(s)).reshape(H, G, O).contiguous()


_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _sdpa_with_lse(orig: Any) -> Any:
    """Hugging Face's "sdpa" attention function, wrapped for the modules a KvccPress manages: on a
    CPU prefill without a mask (causal, unpadded, no past, no dropout, no grad) it calls the kernel
    that ``F.scaled_dot_product_attention`` runs there itself — torch's CPU flash attention, GQA
    native — directly, because that call also returns each query's log-sum-exp; the last ``obs``
    rows of it are kept on the module (``_kvcc_lse`` [b, q_heads, obs] float32) for the
    compression step: kvcc then skips its own pass over K that computes them (kvcc.h: ``lse``);
    ``_kvcc_lse_obs`` < 0: every row (``obs = kvcc.all``).
    The attention output is the same tensor sdpa returns (tests/test_press.py checks logits bit
    for bit). Everything else goes to ``orig`` (kvpress's patched sdpa: at a prefill that patch
    only clears ``masked_key_indices``, which this does too)."""

    def attn(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
             attention_mask: Optional[torch.Tensor], dropout: float = 0.0, scaling: Optional[float] = None,
             is_causal: Optional[bool] = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
        O = getattr(module, "_kvcc_lse_obs", 0)
        n = query.shape[2]
        O = n if O < 0 else O                                  # obs = kvcc.all: every row
        if (O > 0 and _FLASH_CPU is not None and attention_mask is None and dropout == 0.0 and
                query.device.type == "cpu" and 1 < n == key.shape[2] and O <= n and
                (is_causal if is_causal is not None else getattr(module, "is_causal", True)) and
                query.dtype in _TORCH_DTYPES and not torch.is_grad_enabled() and
                not kwargs.get("output_attentions", False) and "cu_seq_lens_k" not in kwargs):
            module.masked_key_indices = None                   # what kvpress's patch does at a prefill
            out, lse = _FLASH_CPU(query, key, value, 0.0, True, attn_mask=None, scale=scaling)
            module._kvcc_lse = lse[:, :, n - O:].float().clone(memory_format=torch.contiguous_format)
            return out.transpose(1, 2).contiguous(), None
        module._kvcc_lse = None
        return orig(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                    is_causal=is_causal, **kwargs)
    attn._kvcc_orig = orig
    return attn


@contextlib.contextmanager
def _lse_capture(model: torch.nn.Module) -> Iterator[bool]:
    """While active, the model's "sdpa" attention keeps the observation rows' log-sum-exp
    (:func:`_sdpa_with_lse`); yields whether it could (an sdpa model on this transformers)."""
    try:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS as table
    except ImportError:
        yield False
        return
    impl = getattr(model.config, "_attn_implementation", None)
    cur = table.get("sdpa")                    # kvpress's patched sdpa (it patches at import)
    if impl != "sdpa" or cur is None or _FLASH_CPU is None or getattr(cur, "_kvcc_orig", None) is not None:
        yield False                                       # another implementation, or already wrapped
        return
    table["sdpa"] = _sdpa_with_lse(cur)
    try:
        yield True
    finally:
        table["sdpa"] = cur


# --- keeping the Hugging Face cache consistent ------------------------------------------------------
def _mask_prehook(module: torch.nn.Module, args: tuple, kwargs: dict) -> Optional[tuple]:
    cache = kwargs.get("past_key_values")
    mask = kwargs.get("attention_mask")
    hs = kwargs.get("hidden_states", args[0] if args else None)
    if cache is None or hs is None or not hasattr(cache, "layers"):
        return None
    try:
        past = int(cache.layers[module.layer_idx].get_seq_length())
    except (IndexError, AttributeError, TypeError):
        return None
    q = hs.shape[1]
    k = past + q
    pad = getattr(module, "_kvcc_pad", None)
    if pad is not None and (pad[0]() is not cache or past < pad[1].shape[-1]):
        module._kvcc_pad = pad = None                    # another cache, or it was reset
    if mask is not None and not isinstance(mask, torch.Tensor):
        return None                                      # e.g. flex attention's BlockMask
    if pad is None and (mask is None or mask.shape[-1] == k):
        return None
    dev = hs.device
    if mask is not None and mask.dim() == 4 and mask.shape[-1] != k:
        old = mask[..., :mask.shape[-1] - q]
        clear = bool(old.all()) if mask.dtype == torch.bool else bool((old == 0).all())
        if not clear:
            raise RuntimeError("kvcc: this layer's cache holds %d rows, another layer's a different "
                               "number, and the batch is padded: per-layer cache lengths work with "
                               "unpadded batches only" % past)
        body = torch.ones if mask.dtype == torch.bool else torch.zeros
        mask = torch.cat([body(mask.shape[:-1] + (past,), dtype=mask.dtype, device=dev), mask[..., -q:]], -1)
    if pad is not None:
        if mask is None:
            causal = torch.ones(q, q, dtype=torch.bool, device=dev).tril()
            mask = torch.cat([torch.ones(q, past, dtype=torch.bool, device=dev), causal], -1)[None, None]
        padm = pad[1].to(dev)                                        # [b, H, M] True = padded
        G = module.config.num_attention_heads // padm.shape[1]
        padq = padm.repeat_interleave(G, dim=1)[:, :, None, :]     # [b, Hq, 1, M]
        M = padm.shape[-1]
        b = max(mask.shape[0], padm.shape[0])
        mask = mask.expand(b, padq.shape[1], q, k).clone()
        if mask.dtype == torch.bool:
            mask[..., :M] &= ~padq
        else:
            mask[..., :M] = mask[..., :M].masked_fill(padq, torch.finfo(mask.dtype).min)
    kwargs["attention_mask"] = mask
    return args, kwargs


def fix_masks(model: torch.nn.Module) -> None:
    """Installs (once) the forward pre-hook that keeps attention masks right for caches whose
    layers (or heads) hold different numbers of rows — see the module docstring. A no-op for
    caches whose layers all have layer 0's length and no padded heads. Also useful for kvpress's
    own PyramidKVPress."""
    lm = model.model.language_model if hasattr(model.model, "language_model") else model.model
    for layer in lm.layers:
        att = layer.self_attn
        if not getattr(att, "_kvcc_prehook", None):
            att._kvcc_prehook = att.register_forward_pre_hook(_mask_prehook, with_kwargs=True)


def _store(cache: Any, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Writes a layer's keys/values back into the cache (as kvpress's forward hook does)."""
    from transformers import QuantizedCache
    cl = cache.layers[layer]
    if isinstance(cache, QuantizedCache):
        cl._quantized_keys = cl._quantize(keys, axis=cl.axis_key)
        cl._quantized_values = cl._quantize(values, axis=cl.axis_value)
        cl.keys = torch.zeros(0, dtype=keys.dtype, device=keys.device)
        cl.values = torch.zeros(0, dtype=keys.dtype, device=keys.device)
        cl.cumulative_length = keys.shape[2]
    else:
        cl.keys, cl.values = keys, values


class KvccPress(BasePress):
    """A kvpress press running a kvcc policy.

    ``policy``: a ``policy.lua`` / ``.kir`` (compiled on first use for the model's cache: dtype,
    head_dim, GQA group — through kvcc's compile cache), a ``policy.so`` path, or a
    :class:`kvcc.Policy` (its specialization must match the model). ``ratio``: the fraction
    removed (kvpress's ``compression_ratio``; ``n_keep = floor(n (1 - ratio))``), or ``budget``:
    rows kept per head. Policy params by name (``window=16``) or ``params={…}``; ``threads``:
    kvcc's workers (default: torch's thread count); ``capture_queries``: keep the prefill's q_proj
    output of the observation window instead of recomputing it (default); ``capture_lse``: on a
    model with ``attn_implementation="sdpa"``, keep the prefill attention's log-sum-exp of those
    queries (torch's CPU flash attention returns it), so that kvcc reads K once instead of twice
    for a policy whose softmax is that attention's (SnapKV, PyramidKV, TOVA…; default). After a compression, :attr:`kept` maps each
    layer to the kept positions ``[batch, kv_heads, rows]`` (−1 on padded slots) and
    :attr:`lengths` to the rows per head."""

    def __init__(self, policy: Union[str, os.PathLike, core.Policy], ratio: float = 0.0, *,
                 budget: Optional[int] = None, params: Optional[dict] = None, threads: Optional[int] = None,
                 weights: Optional[dict] = None, capture_queries: bool = True, capture_lse: bool = True,
                 **kw_params: float):
        self.policy_source = policy
        self._ratio = float(ratio)
        if not (0 <= self._ratio < 1):
            raise ValueError("ratio must be in [0, 1), got %r" % ratio)
        self.budget = budget
        self.params = dict(params or {}, **kw_params)
        self.threads = threads
        self.weights = dict(weights or {})
        self.capture_queries = capture_queries
        self.capture_lse = capture_lse
        self._policies: dict = {}
        self._plans: dict = {}
        self._nlayers = 0
        self._pending: dict = {}
        self._obs = 0
        self.kept: dict[int, np.ndarray] = {}
        self.lengths: dict[int, np.ndarray] = {}
        if isinstance(policy, core.Policy):
            self._check_policy(policy)

    # kvpress reads and sets compression_ratio
    @property
    def compression_ratio(self) -> float:
        return self._ratio

    @compression_ratio.setter
    def compression_ratio(self, value: float) -> None:
        self._ratio = float(value)

    def __repr__(self) -> str:
        return "KvccPress(%r, ratio=%g%s%s)" % (str(self.policy_source), self._ratio,
                                                ", budget=%d" % self.budget if self.budget is not None else "",
                                                "".join(", %s=%g" % kv for kv in self.params.items()))

    # policies -----------------------------------------------------------------------------------
    def _check_policy(self, p: core.Policy) -> None:
        if p.when != "prefill":
            raise ValueError("KvccPress runs prefill policies; %s runs during decoding (when = decode): "
                             "use kvcc's decode attention (kvcc.Plan.decode_layer) or kvcc eval" % p.name)
        p.param_vector(self.params)          # unknown param names raise here

    def policy_for(self, dtype: torch.dtype, head_dim: int, group: int) -> core.Policy:
        """The compiled policy for a cache of this dtype / head_dim / group (compiled once)."""
        key = (dtype, head_dim, group)
        p = self._policies.get(key)
        if p is not None:
            return p
        if dtype not in _TORCH_DTYPES:
            raise TypeError("KvccPress: cache dtype %s (kvcc stores f32, f16 or bf16)" % dtype)
        src = self.policy_source
        if isinstance(src, core.Policy):
            p = src
        elif str(src).endswith(".so"):
            p = core.open(core.find_policy(str(src)))
        else:
            p = core.compile(str(src), dtype=_TORCH_DTYPES[dtype], head_dim=head_dim, group=group)
        if (p.dtype, p.head_dim, p.group) != (_TORCH_DTYPES[dtype], head_dim, group):
            raise ValueError("KvccPress: policy %s was compiled for %s head_dim %d group %d, the model's "
                             "cache is %s head_dim %d group %d" % (p.name, p.dtype, p.head_dim, p.group,
                                                                   _TORCH_DTYPES[dtype], head_dim, group))
        self._check_policy(p)
        self._policies[key] = p
        return p

    @contextlib.contextmanager
    def __call__(self, model: Any) -> Iterator[None]:
        """kvpress's ``with press(model):`` — plus a forward hook on each layer's ``q_proj`` that
        keeps the projected queries of the last ``obs`` prompt positions, so that the compression
        step does not recompute them (kvpress's presses run q_proj on the window again)."""
        handles, atts = [], []
        try:
            with super().__call__(model), (_lse_capture(model) if self.capture_lse
                                           else contextlib.nullcontext(False)) as lse_on:
                lm = model.model.language_model if hasattr(model.model, "language_model") else model.model
                for layer in lm.layers:
                    att = layer.self_attn
                    atts.append(att)
                    if self.capture_queries and hasattr(att, "q_proj"):
                        handles.append(att.q_proj.register_forward_hook(self._capture(att)))
                    att._kvcc_lse_obs = self._obs if lse_on else 0
                yield
        finally:
            for h in handles:
                h.remove()
            for att in atts:
                att._kvcc_qproj = att._kvcc_lse = None
                att._kvcc_lse_obs = 0

    def _capture(self, att: torch.nn.Module) -> Any:
        def hook(mod: torch.nn.Module, inp: Any, out: torch.Tensor) -> None:
            O = self._obs
            if O < 0 or O >= out.shape[1]:
                att._kvcc_qproj = out                        # every position (a reference)
            elif O > 0:
                att._kvcc_qproj = out[:, out.shape[1] - O:].clone()
            else:
                att._kvcc_qproj = None
        return hook

    def post_init_from_model(self, model: Any) -> None:
        lm = model.model.language_model if hasattr(model.model, "language_model") else model.model
        self._nlayers = len(lm.layers)
        self._pending = {}
        cfg = model.config
        cfg = getattr(cfg, "text_config", cfg)
        hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        pol = self.policy_for(model.dtype, hd, cfg.num_attention_heads // cfg.num_key_value_heads)
        self._obs = pol.obs(self.params)
        fix_masks(model)

    # compression --------------------------------------------------------------------------------
    def _nthreads(self) -> int:
        return self.threads if self.threads is not None else torch.get_num_threads()

    def _plan(self, pol: core.Policy, cache: core.Cache, nobs: int) -> core.Plan:
        key = (id(pol), cache._key(), max(nobs, 1))
        pl = self._plans.get(key)
        if pl is None:
            if len(self._plans) > 16:
                self._plans.clear()
            pl = self._plans[key] = pol.plan(cache, max_obs=max(nobs, 1), threads=self._nthreads())
            for k, w in self.weights.items():
                pl.set_weight(k, w)
        return pl

    def _nobs(self, pol: core.Policy, n: int, q_len: int) -> int:
        O = pol.obs(self.params)
        if O < 0:
            O = n
        if O > q_len:
            raise ValueError("KvccPress(%s): the policy reads the last %d queries, the prompt has %d "
                             "tokens (kvpress's presses assert the same)" % (pol.name, O, q_len))
        return O

    def _run(self, pol: core.Policy, K: torch.Tensor, V: torch.Tensor, Q: Optional[torch.Tensor],
             lse: Optional[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """kvcc_compress of one batch element: K, V [layers, H, n, d] (in place), Q [layers, H,
        G, O, d]. Returns (lengths [layers, H], kept positions [layers, H, n])."""
        L, H, n, d = K.shape
        pos = np.ascontiguousarray(np.broadcast_to(np.arange(n, dtype=np.int32), (L, H, n)))
        state = None
        if pol.nstate:
            state = np.empty((pol.nstate, L, H, n), dtype=np.float32)
            for i, init in enumerate(pol.state.values()):
                state[i] = init
        cache = core.Cache(K, V, pos=pos, state=state)
        pl = self._plan(pol, cache, 0 if Q is None else Q.shape[3])
        if self.budget is not None:
            pl.compress(cache, Q, budget=self.budget, lse=lse, params=self.params)
        else:
            pl.compress(cache, Q, ratio=self._ratio, lse=lse, params=self.params)
        return np.asarray(cache.lengths), pos

    def _shorten(self, layer: int, module: torch.nn.Module, cache_obj: Any, keys: torch.Tensor,
                 values: torch.Tensor, lens: np.ndarray, pos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """keys/values [b, H, n, d] compacted by kvcc → new tensors of the longest head's rows;
        shorter heads padded (zeros, masked by the pre-hook). lens [b, H], pos [b, H, n]."""
        M = int(lens.max()) if lens.size else 0
        with _one_thread():
            k2 = keys[:, :, :M].clone()
            v2 = values[:, :, :M].clone()
        kept = pos[:, :, :M].copy()
        padded = np.arange(M)[None, None, :] >= lens[:, :, None]
        if padded.any():
            pm = torch.from_numpy(padded)
            k2[pm] = 0
            v2[pm] = 0
            kept[padded] = -1
            module._kvcc_pad = (weakref.ref(cache_obj) if cache_obj is not None else (lambda: None), pm)
        else:
            module._kvcc_pad = None
        self.kept[layer] = kept
        self.lengths[layer] = lens.copy()
        return k2, v2

    def _layer_inputs(self, pol: core.Policy, module: torch.nn.Module, hidden_states: torch.Tensor,
                      keys: torch.Tensor, kwargs: dict) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Observation queries [b, H, G, O, d] in the cache dtype (and lse [b, H, G, O])."""
        b, H, n, d = keys.shape
        O = self._nobs(pol, n, hidden_states.shape[1])
        if O == 0:
            return None, None
        cap = getattr(module, "_kvcc_qproj", None)
        module._kvcc_qproj = None
        if cap is not None and not (cap.shape[0] == b and cap.shape[1] >= O):
            cap = None
        if cap is not None:
            cap = cap[:, cap.shape[1] - O:]
        q = observation_queries(module, hidden_states, kwargs["position_embeddings"], O, cap)
        G = q.shape[1] // H
        lse = getattr(module, "_kvcc_lse", None)              # from the prefill's attention
        module._kvcc_lse = None
        if lse is not None and tuple(lse.shape) != (b, H * G, O):
            lse = None
        if lse is not None:
            lse = lse.reshape(b, H, G, O)                       # query head h*G + g
        elif pol.reads_lse:
            lse = torch.stack([_lse(q[i].to(keys.dtype), keys[i], module.scaling) for i in range(b)])
        with _one_thread():
            return q.to(keys.dtype).reshape(b, H, G, O, d).contiguous(), lse

    def compress(self, module: torch.nn.Module, hidden_states: torch.Tensor, keys: torch.Tensor,
                 values: torch.Tensor, attentions: torch.Tensor, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """kvpress's per-layer contract: returns the layer's shortened keys and values."""
        if self._ratio == 0 and self.budget is None:
            return keys, values
        b, H, n, d = keys.shape
        pol = self.policy_for(keys.dtype, d, module.config.num_attention_heads // H)
        if pol.layer_dependent and self._nlayers != 1:
            raise NotImplementedError("KvccPress(%s): the policy's selection depends on the layer, so it "
                                      "compresses every layer at once from the model's forward hook; "
                                      "compress() of one layer cannot" % pol.name)
        if not (keys.is_contiguous() and values.is_contiguous()):
            with _one_thread():
                keys, values = keys.contiguous(), values.contiguous()
        Q, lse = self._layer_inputs(pol, module, hidden_states, keys, kwargs)
        with torch.no_grad():
            lens, pos = [], []
            for i in range(b):
                ln, ps = self._run(pol, keys[i:i + 1], values[i:i + 1], None if Q is None else Q[i:i + 1],
                                   None if lse is None else lse[i:i + 1])
                lens.append(ln[0])
                pos.append(ps[0])
        return self._shorten(module.layer_idx, module, kwargs.get("past_key_values"), keys, values,
                             np.stack(lens), np.stack(pos))

    def forward_hook(self, module: torch.nn.Module, input: Any, kwargs: dict, output: Any) -> Any:
        hidden_states = kwargs["hidden_states"]
        if not is_prefilling(kwargs["cache_position"], hidden_states.shape[1]):
            return output
        cache = kwargs["past_key_values"]
        layer = module.layer_idx
        if layer == 0:
            self.kept, self.lengths, self._pending = {}, {}, {}
        keys, values = extract_keys_and_values(cache, layer)
        pol = self.policy_for(keys.dtype, keys.shape[3], module.config.num_attention_heads // keys.shape[1])
        if not pol.layer_dependent or self._nlayers <= 1 or (self._ratio == 0 and self.budget is None):
            return super().forward_hook(module, input, kwargs, output)
        # every layer in one call: gather, compress after the last layer's prefill
        Q, lse = self._layer_inputs(pol, module, hidden_states, keys, kwargs)
        self._pending[layer] = (module, keys, values, Q, lse)
        if len(self._pending) == self._nlayers:
            self._compress_model(pol, cache)
        return output

    def _compress_model(self, pol: core.Policy, cache: Any) -> None:
        from transformers import QuantizedCache
        order = sorted(self._pending)
        mod0, k0, v0, Q0, l0 = self._pending[order[0]]
        b, H, n, d = k0.shape
        L = len(order)
        with torch.no_grad():
            K = torch.empty((b, L, H, n, d), dtype=k0.dtype)
            V = torch.empty_like(K)
            for j, l in enumerate(order):
                _, k, v, _, _ = self._pending[l]
                if k.shape != k0.shape:
                    raise ValueError("KvccPress(%s): layers hold different cache lengths at the prefill" % pol.name)
                with _one_thread():
                    K[:, j].copy_(k)
                    V[:, j].copy_(v)
                if not isinstance(cache, QuantizedCache):
                    _store(cache, l, K[:, j], V[:, j])      # the originals can go now
            self._pending = {l: (m, None, None, Q, ls) for l, (m, _, _, Q, ls) in self._pending.items()}
            Qs = None if Q0 is None else torch.stack([self._pending[l][3] for l in order], 1).contiguous()
            ls = None if l0 is None else torch.stack([self._pending[l][4] for l in order], 1).contiguous()
            lens, pos = [], []
            for i in range(b):
                ln, ps = self._run(pol, K[i], V[i], None if Qs is None else Qs[i],
                                   None if ls is None else ls[i])
                lens.append(ln)
                pos.append(ps)
            lens, pos = np.stack(lens), np.stack(pos)              # [b, L, H], [b, L, H, n]
            for j, l in enumerate(order):
                module = self._pending[l][0]
                k2, v2 = self._shorten(l, module, cache, K[:, j], V[:, j], lens[:, j], pos[:, j])
                _store(cache, l, k2, v2)
        self._pending = {}
