"""kvcc — KV-cache compression policies compiled to fused kernels, from Python.

A thin ctypes binding over kvcc's C libraries (include/kvcc.h): compile a ``policy.lua`` or
open a ``policy.so``, compress numpy arrays and torch CPU tensors in place (no copies), run
decode attention, read a policy's params, state and observation count. Errors are
:class:`KvccError` exceptions carrying kvcc's message (``file:line:col: error: …`` for a
policy that does not compile). :mod:`kvcc.press` adds ``KvccPress``, a kvpress press.

    import numpy as np, kvcc
    pol = kvcc.compile("policies/snapkv.lua", dtype="f32", head_dim=64, group=4)
    K = np.random.randn(2, 8, 1000, 64).astype(np.float32); V = K.copy()
    Q = np.random.randn(2, 8, 4, 64, 64).astype(np.float32)     # the last 64 prompt queries
    c = pol.compress(K, V, Q, ratio=0.5, window=64)            # K, V compacted in place
    c.lengths, c.kept(0, 0)                                    # 500 rows per head, their positions

numpy is the only dependency; torch, transformers and kvpress only for :mod:`kvcc.press` and
:mod:`kvcc.models`. See doc/python.md.
"""
from ._lib import LibraryNotFound, search_dirs
from .core import (Cache, CompileError, GpuPlan, KvccError, Plan, Policy, compile, find_policy, open,
                   version)

__all__ = ["compile", "open", "Policy", "Plan", "GpuPlan", "Cache", "KvccError", "CompileError",
           "LibraryNotFound", "version", "search_dirs", "find_policy"]
__version__ = "0.1.0"
