"""The binding proper: policies, KV caches over caller-owned arrays, plans, compression and
decode attention — thin wrappers over include/kvcc.h (ctypes; see _lib.py for where the
libraries come from).

Shapes follow kvcc's contiguous layout (DESIGN §7): a cache is K, V ``[layers, kv_heads,
capacity, head_dim]`` with any strides whose innermost one is 1 (a slice of a bigger buffer is
fine), per-head lengths ``[layers, kv_heads]`` int32, positions ``[layers, kv_heads, capacity]``
int32, per-token policy state ``[nstate, layers, kv_heads, capacity]`` float32. Observation
queries are ``[layers, kv_heads, group, nobs, head_dim]`` (query head ``h*group + g``) in the
storage dtype. Everything is used in place: kvcc compacts K, V, pos and state where they are.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
import weakref
from ctypes import byref, c_char_p, c_double, c_int, c_void_p
from typing import Any, Mapping, Optional

import numpy as np

from . import _lib
from ._array import View, check, view

_STORAGE = {"f32": ("f32",), "f16": ("f16",), "bf16": ("bf16", "u16")}


class KvccError(RuntimeError):
    """An error reported by libkvcc. ``message`` is kvcc's own text (for a policy that does not
    compile it starts with ``file:line:col: error:``); ``code`` the negative KVCC_E* code."""

    def __init__(self, code: int, message: str):
        self.code = code
        self.code_name = _lib.CODE_NAMES.get(code, str(code))
        self.message = message
        super().__init__(message)


class CompileError(KvccError):
    """The policy does not compile (KVCC_ECOMPILE); the message carries ``file:line:col``."""


def _raise(lib: ctypes.CDLL, rc: int) -> None:
    msg = lib.kvcc_last_error()
    msg = msg.decode("utf-8", "replace") if msg else "kvcc error %d" % rc
    raise (CompileError if rc == _lib.ECOMPILE else KvccError)(rc, msg)


def _call(lib: ctypes.CDLL, fn: str, *args: Any) -> int:
    rc = getattr(lib, fn)(*args)
    if rc < 0:
        _raise(lib, rc)
    return rc


def version() -> str:
    """The version of the kvcc runtime library loaded."""
    return _lib.rt().kvcc_version().decode()


# --- policies -----------------------------------------------------------------------------------
class _Closable:
    """A handle closed by close(), at the end of a with-block, or when collected."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class Policy(_Closable):
    """A compiled policy (an opened ``policy.so``): its name, the specialization it was compiled
    for, params, per-token state, when it runs and what it reads. Use :func:`compile` or
    :func:`open` to get one; :meth:`compress` is the one-call path, :meth:`plan` the
    plan-once/run-many path of the C API."""

    def __init__(self, handle: int, source: str):
        self._h = c_void_p(handle)
        self._plans: "weakref.WeakSet[Plan]" = weakref.WeakSet()
        self._plan_cache: dict = {}
        self.source = source
        rt = _lib.rt()
        self.name: str = rt.kvcc_policy_name(self._h).decode()
        s = _lib.Spec()
        _call(rt, "kvcc_policy_spec", self._h, byref(s))
        self.dtype: str = _lib.DTYPE_NAMES.get(s.dtype, str(s.dtype))
        self.head_dim: int = s.head_dim
        self.group: int = s.group
        self.target: str = {v: k for k, v in _lib.TARGETS.items()}.get(s.target, str(s.target))
        self.params: dict[str, float] = {}
        for i in range(rt.kvcc_param_count(self._h)):
            nm, d = c_char_p(), c_double()
            _call(rt, "kvcc_param_info", self._h, i, byref(nm), byref(d))
            self.params[nm.value.decode()] = d.value
        self.state: dict[str, float] = {}
        for i in range(rt.kvcc_state_count(self._h)):
            nm, d = c_char_p(), c_double()
            _call(rt, "kvcc_state_info", self._h, i, byref(nm), byref(d))
            self.state[nm.value.decode()] = d.value
        #: the weights the policy declares (kv.weights), in declaration order: give them to
        #: compress (weights={name: array}) or Plan.set_weight
        self.weights: list[str] = []
        for i in range(rt.kvcc_weight_count(self._h)):
            nm, nd = c_char_p(), c_int()
            _call(rt, "kvcc_weight_info", self._h, i, byref(nm), byref(nd))
            self.weights.append(nm.value.decode())
        every = c_int()
        w = _call(rt, "kvcc_policy_when", self._h, byref(every))
        self.when: str = "decode" if w == 1 else "prefill"
        self.every: int = every.value
        flags, scope = ctypes.c_uint32(), c_int()
        _call(rt, "kvcc_policy_info", self._h, byref(flags), byref(scope))
        self.flags: int = flags.value
        #: the select rule's scope: "head", "layer" (AdaKV-style per-head budgets) or "model"
        self.scope: str = _lib.SCOPES.get(scope.value, str(scope.value))

    # introspection ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        return "<kvcc.Policy %s %s head_dim=%d group=%d params=%s>" % (
            self.name, self.dtype, self.head_dim, self.group, self.params)

    @property
    def nstate(self) -> int:
        return len(self.state)

    def param_vector(self, params: Optional[Mapping[str, float]] = None) -> np.ndarray:
        """The params in the C API's order (defaults, overridden by ``params`` by name)."""
        v = np.array(list(self.params.values()) or [0.0], dtype=np.float64)
        for k, x in (params or {}).items():
            if k not in self.params:
                raise ValueError("policy %s has no param '%s' (its params: %s)"
                                 % (self.name, k, ", ".join(self.params) or "none"))
            v[list(self.params).index(k)] = float(x)
        return v

    def obs(self, params: Optional[Mapping[str, float]] = None, **kw: float) -> int:
        """How many observation queries a compress call passes with these params (the policy's
        ``obs`` declaration): 0 = it reads none, -1 = every context position."""
        p = dict(params or {}, **kw)
        v = self.param_vector(p)
        o = c_int()
        _call(_lib.rt(), "kvcc_policy_obs", self._h, v.ctypes.data_as(c_void_p), byref(o))
        return o.value

    @property
    def layer_dependent(self) -> bool:
        """Whether what one layer keeps depends on the layer's index or on other layers (a budget
        schedule such as PyramidKV's, scope = model, kv.random keyed by layer, x.layer /
        x.nlayers; kvcc_policy_info's KVCC_POLICY_LAYER). Such a policy must be compressed with
        every layer in one call (KvccPress does)."""
        return bool(self.flags & _lib.POLICY_LAYER)

    @property
    def reads_queries(self) -> bool:
        """Whether the policy reads observation queries (a compress call must pass Q)."""
        return bool(self.flags & _lib.POLICY_QUERIES)

    @property
    def reads_lse(self) -> bool:
        """Whether the policy reads x.lse (then a compress call must pass it)."""
        return bool(self.flags & _lib.POLICY_LSE)

    # running ---------------------------------------------------------------------------------
    def plan(self, cache: "Cache", *, max_obs: int = 0, threads: int = 0) -> "Plan":
        """A plan for ``cache``'s layout (kvcc_plan_create): sizes workspaces for up to
        ``max_obs`` observation queries and starts ``threads`` workers (0: one per core)."""
        return Plan(self, cache, max_obs=max_obs, threads=threads)

    def compress(self, K: Any, V: Any, Q: Any = None, *, ratio: Optional[float] = None,
                 budget: Optional[int] = None, lengths: Any = None, pos: Any = None,
                 state: Any = None, qpos: Any = None, lse: Any = None,
                 params: Optional[Mapping[str, float]] = None, weights: Optional[Mapping[str, Any]] = None,
                 scores: bool = False, threads: int = 0, **kw_params: float) -> "Cache":
        """Compresses K, V in place: score, select and compact every (layer, head).

        ``ratio`` (fraction removed, n_keep = floor(n (1 - ratio))) or ``budget`` (rows kept per
        head). Params by name: ``window=16`` or ``params={"window": 16}``. ``pos`` defaults to
        the token index, and a fresh ``pos`` array is made when none is given so that the kept
        positions can be read back. Returns the :class:`Cache` (``.lengths``, ``.kept(l, h)``,
        ``.scores`` when ``scores=True``). Plans are cached per layout."""
        if pos is None:
            Kv = view("K", K)
            if Kv.ndim != 4:
                raise ValueError("K: shape %s, expected [layers, kv_heads, capacity, head_dim]"
                                 % list(Kv.shape))
            pos = np.empty(Kv.shape[:3], dtype=np.int32)   # writable, whatever the shape
            pos[...] = np.arange(Kv.shape[2], dtype=np.int32)
        if state is None and self.nstate:
            Kv = view("K", K)
            state = np.empty((self.nstate,) + tuple(Kv.shape[:3]), dtype=np.float32)
            for i, init in enumerate(self.state.values()):
                state[i] = init
        cache = Cache(K, V, lengths=lengths, pos=pos, state=state)
        nobs = 0
        if Q is not None:
            nobs = view("Q", Q).shape[3] if view("Q", Q).ndim == 5 else 0
        key = (cache._key(), max(nobs, 1), threads)
        pl = self._plan_cache.get(key)
        if pl is None or pl._h is None:
            pl = self._plan_cache[key] = Plan(self, cache, max_obs=max(nobs, 1), threads=threads)
        if weights:
            for k, w in weights.items():
                pl.set_weight(k, w)
        sc = np.empty(cache.shape[:3], dtype=np.float32) if scores else None
        pl.compress(cache, Q, ratio=ratio, budget=budget, qpos=qpos, lse=lse, params=params,
                    scores=sc, **kw_params)
        cache.scores = sc
        return cache

    def close(self) -> None:
        """Destroys the plans made from this policy and closes it (kvcc_close)."""
        for pl in list(self._plans):
            pl.close()
        self._plan_cache.clear()
        if self._h is not None and self._h.value:
            _lib.rt().kvcc_close(self._h)
        self._h = None

    def _handle(self) -> c_void_p:
        if self._h is None:
            raise ValueError("policy %s is closed" % self.name)
        return self._h


def find_policy(name: str) -> str:
    """A policy file: ``name`` itself when it exists, else a shipped policy by name ("snapkv"
    → policies/snapkv.lua, from the installed package or the source tree)."""
    if os.path.exists(name) or os.sep in name or name.endswith((".lua", ".kir", ".so")):
        return name
    here = os.path.dirname(os.path.abspath(__file__))
    for d in (os.path.join(here, "policies"), os.path.join(here, "..", "..", "policies")):
        p = os.path.join(d, name + ".lua")
        if os.path.isfile(p):
            return os.path.normpath(p)
    return name


def open(path: str) -> Policy:  # noqa: A001 (mirrors kvcc_open)
    """Loads a ``policy.so`` written by ``kvcc compile`` (validated: magic, ABI, version, cache
    key, CPU features) — only the runtime library is needed."""
    h = c_void_p()
    _call(_lib.rt(), "kvcc_open", os.fsencode(path), byref(h))
    return Policy(h.value, path)


def compile(path: str, *, dtype: str = "f32", head_dim: int = 128, group: int = 1,  # noqa: A001
            target: str = "native", out: Optional[str] = None, verbose: bool = False,
            gpu_archs: Optional[str] = None) -> Policy:
    """Compiles a ``policy.lua`` (or ``.kir``) for a KV cache of ``dtype`` (f32, f16, bf16),
    ``head_dim`` and GQA ``group`` through the compiler library (libkvcc.so,
    include/kvcc_compiler.h: kvcc_compile_file, or kvcc_compile_so then kvcc_open when ``out``
    names a ``policy.so`` to keep) and its compile cache ($KVCC_CACHE_DIR). A policy that does not
    compile raises :class:`CompileError` with kvcc's ``file:line:col: error: …`` line. A bare
    name ("snapkv") is a shipped policy (:func:`find_policy`). ``gpu_archs`` ("sm_80,sm_90"):
    also the CUDA kernels for those targets (kvcc_compile_so_gpu; NVRTC), for :class:`GpuPlan`."""
    path = find_policy(os.fspath(path))
    if dtype not in _lib.DTYPES:
        raise ValueError("dtype must be one of %s, got %r" % (", ".join(_lib.DTYPES), dtype))
    if target not in _lib.TARGETS:
        raise ValueError("target must be one of %s, got %r" % (", ".join(_lib.TARGETS), target))
    spec = _lib.Spec(_lib.DTYPES[dtype], int(head_dim), int(group), _lib.TARGETS[target])
    comp = _lib.compiler()
    h = c_void_p()
    if out is None and not verbose and gpu_archs is None:
        _call(comp, "kvcc_compile_file", os.fsencode(path), byref(spec), byref(h))
        return Policy(h.value, path)
    tmp = None
    try:
        if out is None:
            tmp = tempfile.mkdtemp(prefix="kvcc-py-")
            so = os.path.join(tmp, "policy.so")
        else:
            so = out
        if gpu_archs is None:
            _call(comp, "kvcc_compile_so", os.fsencode(path), byref(spec), os.fsencode(so), int(verbose))
        else:
            _call(comp, "kvcc_compile_so_gpu", os.fsencode(path), byref(spec), str(gpu_archs).encode(),
                  os.fsencode(so), int(verbose))
        _call(_lib.rt(), "kvcc_open", os.fsencode(so), byref(h))
        return Policy(h.value, path)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _check_amount(ratio: Optional[float], budget: Optional[int]) -> None:
    """compress's ratio or budget: exactly one, in range (ValueError otherwise)."""
    if (ratio is None) == (budget is None):
        raise ValueError("give ratio or budget (exactly one)")
    if ratio is not None and not (0 <= float(ratio) < 1):
        raise ValueError("ratio must be in [0, 1), got %r" % ratio)
    if budget is not None and int(budget) < 0:
        raise ValueError("budget must be >= 0, got %r" % budget)


def _set_weight(fn: str, handle: c_void_p, name: str, array: Any) -> None:
    """kvcc_plan_set_weight / kvcc_gpu_plan_set_weight: a C-contiguous float32 copy of array, its
    shape, the C side's checks (name, shape against the plan's layout, finite values)."""
    a = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    shape = np.ascontiguousarray(a.shape or (1,), dtype=np.int64)
    _call(_lib.rt(), fn, handle, str(name).encode(), a.ctypes.data, a.ndim, shape.ctypes.data)


# --- caches ----------------------------------------------------------------------------------------
class Cache:
    """A KV cache in kvcc's contiguous layout over caller-owned arrays (never copied).

    ``K``, ``V``: ``[layers, kv_heads, capacity, head_dim]`` with the same strides, innermost 1;
    ``lengths``: int32 ``[layers, kv_heads]`` (default: every head full); ``pos``: int32
    ``[layers, kv_heads, capacity]`` absolute positions (default: none, positions = index);
    ``state``: float32 ``[nstate, layers, kv_heads, capacity]`` for policies with per-token
    state. The storage dtype is K's: float32, float16, bfloat16 (torch or ml_dtypes) — or uint16
    bit patterns, read as bf16."""

    def __init__(self, K: Any, V: Any, *, lengths: Any = None, pos: Any = None, state: Any = None):
        k = view("K", K)
        if k.dtype not in ("f32", "f16", "bf16", "u16"):
            raise TypeError("K: element type %s, expected f32, f16 or bf16 (uint16 = bf16 bits)" % k.dtype)
        if k.ndim != 4:
            raise ValueError("K: shape %s, expected [layers, kv_heads, capacity, head_dim]" % list(k.shape))
        check(k, dtypes=(k.dtype,), contiguous=False, writable=True)
        v = check(view("V", V), dtypes=(k.dtype,), shape=k.shape, contiguous=False, writable=True,
                  what="the same as K")
        if k.strides[3] != 1:
            raise ValueError("K: the head_dim axis must be contiguous (stride 1), got strides %s"
                             % list(k.strides))
        if v.strides != k.strides:
            raise ValueError("V: strides %s differ from K's %s (one layout describes both)"
                             % (list(v.strides), list(k.strides)))
        L, H, C, d = k.shape
        sl, sh, st, _ = k.strides
        if not (st >= d and sh >= st * C and (L == 1 or sl >= sh * H)):
            raise ValueError("K: strides %s do not describe [layers][kv_heads][capacity][head_dim] "
                             "rows that do not overlap (need token >= head_dim, head >= token * "
                             "capacity, layer >= head * kv_heads)" % list(k.strides))
        self.K, self.V, self._k, self._v = K, V, k, v
        self.shape = (L, H, C, d)
        self.storage = "bf16" if k.dtype == "u16" else k.dtype
        if lengths is None:
            lengths = np.full((L, H), C, dtype=np.int32)
        self.lengths = lengths
        self._len = check(view("lengths", lengths), dtypes=("i32",), shape=(L, H), writable=True)
        self.pos = pos
        self._pos = None if pos is None else check(view("pos", pos), dtypes=("i32",), shape=(L, H, C),
                                                   writable=True)
        self.state = state
        self._state = None
        if state is not None:
            self._state = check(view("state", state), dtypes=("f32",), shape=(None, L, H, C), writable=True)
        self.scores: Optional[np.ndarray] = None
        self._c = _lib.CCache(k.ptr, v.ptr, self._pos.ptr if self._pos else None, self._len.ptr,
                              self._state.ptr if self._state else None)

    def _key(self) -> tuple:
        return (self.storage,) + self.shape + tuple(self._k.strides[:3])

    def layout(self) -> _lib.Layout:
        L, H, C, d = self.shape
        sl, sh, st, _ = self._k.strides
        return _lib.Layout(_lib.DTYPES[self.storage], L, H, d, C, sl if L > 1 else max(sl, sh * H), sh, st)

    def length(self, layer: int, head: int) -> int:
        return int(np.asarray(self._np(self._len))[layer, head])

    @staticmethod
    def _np(v: View) -> np.ndarray:
        """A numpy view of an int32/float32 array given as any array type (no copy)."""
        n = v.size()
        dt = np.int32 if v.dtype == "i32" else np.float32
        buf = (ctypes.c_char * (max(n, 1) * 4)).from_address(v.ptr)
        return np.frombuffer(buf, dtype=dt, count=n).reshape(v.shape)

    def kept(self, layer: int, head: int) -> np.ndarray:
        """The positions (pos, or indices when the cache has no pos) of the rows (layer, head)
        holds, in order."""
        n = self.length(layer, head)
        if self._pos is None:
            return np.arange(n, dtype=np.int32)
        return self._np(self._pos)[layer, head, :n].copy()


# --- plans --------------------------------------------------------------------------------------------
class Plan(_Closable):
    """kvcc_plan_create for one cache layout: compress, append and decode attention, allocation
    free after creation. One call at a time per plan."""

    def __init__(self, policy: Policy, cache: Cache, *, max_obs: int = 0, threads: int = 0):
        if (cache.storage, cache.shape[3]) != (policy.dtype, policy.head_dim):
            raise ValueError("the cache stores %s rows of head_dim %d (%s), policy %s was compiled for %s "
                             "head_dim %d" % (cache.storage, cache.shape[3], "uint16 = bf16 bits"
                                              if cache._k.dtype == "u16" else "K's dtype", policy.name,
                                              policy.dtype, policy.head_dim))
        self.policy = policy
        self._key = cache._key()
        self._lay = cache.layout()
        self.max_obs = max_obs
        h = c_void_p()
        _call(_lib.rt(), "kvcc_plan_create", policy._handle(), byref(self._lay), int(max_obs),
              int(threads), byref(h))
        self._h: Optional[c_void_p] = h
        policy._plans.add(self)

    def _handle(self) -> c_void_p:
        if self._h is None:
            raise ValueError("%s is closed" % ("GPU plan" if isinstance(self, GpuPlan) else "plan"))
        return self._h

    def _same(self, cache: Cache) -> None:
        if cache._key() != self._key:
            raise ValueError("cache layout %s differs from the plan's %s (make a plan per layout)"
                             % (cache._key(), self._key))

    def _params(self, params: Optional[Mapping[str, float]], kw: Mapping[str, float]) -> np.ndarray:
        p = dict(params or {})
        p.update(kw)
        return self.policy.param_vector(p)

    def compress(self, cache: Cache, Q: Any = None, *, ratio: Optional[float] = None,
                 budget: Optional[int] = None, qpos: Any = None, lse: Any = None,
                 params: Optional[Mapping[str, float]] = None, scores: Any = None,
                 **kw_params: float) -> Any:
        """kvcc_compress: score, select and compact ``cache`` in place. ``Q``: observation
        queries ``[layers, kv_heads, group, nobs, head_dim]`` in the storage dtype (the last
        ``policy.obs()`` prompt queries); ``lse`` float32 ``[layers, kv_heads, group, nobs]``;
        ``qpos`` int32 ``[nobs]``; ``scores`` an optional float32 ``[layers, kv_heads,
        capacity]`` out array. Returns ``cache.lengths``."""
        self._same(cache)
        _check_amount(ratio, budget)
        L, H, C, d = cache.shape
        G = self.policy.group
        keep = []
        obs = _lib.Obs(0, None, None, None)
        if Q is not None:
            q = check(view("Q", Q), dtypes=_STORAGE[cache.storage], shape=(L, H, G, None, d),
                      what="[layers, kv_heads, group, nobs, head_dim] in the cache's dtype")
            nobs = q.shape[3]
            obs.nobs, obs.Q = nobs, q.ptr
            keep.append(q)
            if lse is not None:
                lv = check(view("lse", lse), dtypes=("f32",), shape=(L, H, G, nobs))
                obs.lse = lv.ptr
                keep.append(lv)
            if qpos is not None:
                qv = check(view("qpos", qpos), dtypes=("i32",), shape=(nobs,))
                obs.qpos = qv.ptr
                keep.append(qv)
        elif lse is not None or qpos is not None:
            raise ValueError("lse and qpos go with observation queries Q")
        par = self._params(params, kw_params)
        sc = None
        if scores is not None:
            sc = check(view("scores", scores), dtypes=("f32",), shape=(L, H, C), writable=True)
        args = _lib.Args(float(ratio) if ratio is not None else 0.0,
                         int(budget) if budget is not None else -1,
                         par.ctypes.data, 0, sc.ptr if sc else None)
        _call(_lib.rt(), "kvcc_compress", self._handle(), byref(cache._c), byref(obs), byref(args))
        return cache.lengths

    def append(self, cache: Cache, layer: int, k: Any, v: Any, pos: int) -> None:
        """kvcc_append: one token (``k``, ``v``: ``[kv_heads, head_dim]`` in the storage dtype) at
        absolute position ``pos`` to every head of ``layer``; its state gets the init values."""
        self._same(cache)
        L, H, C, d = cache.shape
        kv = check(view("k", k), dtypes=_STORAGE[cache.storage], shape=(H, d))
        vv = check(view("v", v), dtypes=_STORAGE[cache.storage], shape=(H, d))
        _call(_lib.rt(), "kvcc_append", self._handle(), byref(cache._c), int(layer), kv.ptr, vv.ptr, int(pos))

    def decode_layer(self, cache: Cache, layer: int, q: Any, out: Any = None) -> Any:
        """kvcc_decode_layer: the G query heads of every KV head of ``layer`` (``q``: float32
        ``[kv_heads, group, head_dim]``, post-RoPE) attend over the rows the cache holds; runs
        the policy's observe hook. Returns ``out`` (float32 ``[kv_heads, group, head_dim]``)."""
        self._same(cache)
        L, H, C, d = cache.shape
        G = self.policy.group
        qv = check(view("q", q), dtypes=("f32",), shape=(H, G, d))
        if out is None:
            out = np.empty((H, G, d), dtype=np.float32)
        ov = check(view("out", out), dtypes=("f32",), shape=(H, G, d), writable=True)
        _call(_lib.rt(), "kvcc_decode_layer", self._handle(), byref(cache._c), int(layer), qv.ptr, ov.ptr)
        return out

    def set_params(self, params: Optional[Mapping[str, float]] = None, **kw: float) -> None:
        """kvcc_plan_set_params: the params the observe hook reads during decode."""
        par = self._params(params, kw)
        _call(_lib.rt(), "kvcc_plan_set_params", self._handle(), par.ctypes.data)

    def set_step(self, step: int) -> None:
        """kvcc_plan_set_step: x.step of the next kvcc_decode_layer of every layer."""
        _call(_lib.rt(), "kvcc_plan_set_step", self._handle(), int(step))

    def set_weight(self, name: str, array: Any) -> None:
        """kvcc_plan_set_weight: binds the policy's weight ``name`` (declared with kv.weights,
        doc/dsl.md) to ``array``, converted to a C-contiguous float32 copy of its shape: the
        declared axes in order, layer = the cache's layers, head = kv heads, group = the policy's
        group, chan = head_dim. The plan copies the values; changing them never recompiles. A
        wrong name or shape or a non-finite value raises KvccError with kvcc's message."""
        fn = _lib.weight_function()
        if fn is None:
            raise NotImplementedError("policy weights: this libkvcc_rt has no %s()" % _lib.WEIGHT_FUNCTION)
        _set_weight(_lib.WEIGHT_FUNCTION, self._handle(), name, array)

    def timings(self) -> dict:
        """Wall times (ms) of the last compress: score, select, compact, total."""
        ms = (c_double * 4)()
        _call(_lib.rt(), "kvcc_plan_timings", self._handle(), ms)
        return {"score": ms[0], "select": ms[1], "compact": ms[2], "total": ms[3]}

    def close(self) -> None:
        if self._h is not None:
            _lib.rt().kvcc_plan_destroy(self._h)
            self._h = None


# --- GPU plans -------------------------------------------------------------------------------
class GpuPlan(_Closable):
    """kvcc_gpu_plan_create: a policy's CUDA kernels (compiled with ``gpu_archs``) planned for one
    cache layout on a device (doc/gpu.md). The runtime loads the CUDA driver with dlopen
    (``libcuda.so.1``, or ``$KVCC_LIBCUDA`` read when the first plan is made); without a driver,
    a device or GPU kernels in the policy.so, creating the plan raises :class:`KvccError`
    (EUNSUPPORTED) with the reason.

    The layout is given by shape (``layers``, ``kv_heads``, ``capacity``; head_dim and dtype
    are the policy's), contiguous unless ``strides`` (elements: layer, head, token) says
    otherwise. :meth:`compress` takes DEVICE addresses as ints (a torch CUDA tensor's
    ``data_ptr()``, a CuPy array's ``data.ptr``): it enqueues score, select and compaction on
    ``stream`` and returns without synchronizing; :meth:`check` synchronizes and raises the
    device-side error, if any."""

    def __init__(self, policy: Policy, *, layers: int, kv_heads: int, capacity: int, max_obs: int = 0,
                 device: int = 0, strides: Optional[tuple] = None):
        d = policy.head_dim
        if strides is None:
            strides = (kv_heads * capacity * d, capacity * d, d)
        if len(strides) != 3:
            raise ValueError("strides: (layer, head, token) in elements, got %r" % (strides,))
        self.policy = policy
        self.shape = (int(layers), int(kv_heads), int(capacity), d)
        self._lay = _lib.Layout(_lib.DTYPES[policy.dtype], int(layers), int(kv_heads), d, int(capacity),
                                *(int(x) for x in strides))
        self.max_obs = int(max_obs)
        h = c_void_p()
        _call(_lib.rt(), "kvcc_gpu_plan_create", policy._handle(), byref(self._lay), self.max_obs, int(device),
              byref(h))
        self._h: Optional[c_void_p] = h
        policy._plans.add(self)

    _handle = Plan._handle

    @property
    def image(self) -> str:
        """The image the plan runs: "cubin sm_90" or "ptx sm_80 (JIT)"."""
        return _lib.rt().kvcc_gpu_plan_image(self._handle()).decode()

    def set_weight(self, name: str, array: Any) -> None:
        """kvcc_gpu_plan_set_weight: ``array`` (host; converted to a C-contiguous float32 copy)
        becomes the policy's weight ``name`` on the device, with the checks and messages of
        :meth:`Plan.set_weight` (declared name, shape against the plan's layout, finite values);
        one synchronous copy, never a recompile."""
        _set_weight("kvcc_gpu_plan_set_weight", self._handle(), name, array)

    def compress(self, K: int, V: int, lengths: int, *, pos: int = 0, state: int = 0, Q: int = 0,
                 nobs: int = 0, lse: int = 0, qpos: int = 0, ratio: Optional[float] = None,
                 budget: Optional[int] = None, params: Optional[Mapping[str, float]] = None,
                 scores: int = 0, stream: int = 0, **kw_params: float) -> None:
        """kvcc_gpu_compress: ``K``, ``V``, ``lengths`` (int32 [layers, kv_heads]), ``pos``,
        ``state``, ``Q`` ([layers, kv_heads, group, nobs, head_dim]), ``lse``, ``qpos``,
        ``scores`` are DEVICE addresses (0: none); params are host values (copied into the
        launch). Enqueued on ``stream`` (0: the legacy default stream); nothing synchronizes."""
        _check_amount(ratio, budget)
        if not K or not V or not lengths:
            raise ValueError("K, V and lengths are required (device addresses)")
        if Q and not 0 < int(nobs) <= max(self.max_obs, 0):
            raise ValueError("nobs must be in 1..max_obs (%d) with Q, got %r" % (self.max_obs, nobs))
        p = dict(params or {})
        p.update(kw_params)
        par = self.policy.param_vector(p)
        c = _lib.CCache(int(K), int(V), int(pos) or None, int(lengths), int(state) or None)
        obs = _lib.Obs(int(nobs) if Q else 0, int(Q) or None, int(lse) or None, int(qpos) or None)
        args = _lib.Args(float(ratio) if ratio is not None else 0.0, int(budget) if budget is not None else -1,
                         par.ctypes.data, 0, int(scores) or None)
        _call(_lib.rt(), "kvcc_gpu_compress", self._handle(), byref(c), byref(obs), byref(args),
              c_void_p(int(stream) or None))

    def check(self) -> None:
        """kvcc_gpu_plan_check: synchronizes and raises KvccError with the device error of the
        plan's launches since the last check (bad pooling size, select arguments, …)."""
        _call(_lib.rt(), "kvcc_gpu_plan_check", self._handle())

    def close(self) -> None:
        if self._h is not None:
            _lib.rt().kvcc_gpu_plan_destroy(self._h)
            self._h = None
