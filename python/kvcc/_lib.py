"""Where kvcc's C libraries are found and how they are called — the one place that knows.

kvcc ships two shared libraries:

* ``libkvcc_rt.so`` — the runtime (include/kvcc.h): ``kvcc_open``, ``kvcc_plan_*``,
  ``kvcc_compress``, ``kvcc_append``, ``kvcc_decode_layer``, ``kvcc_policy_*``, ``kvcc_param_*``,
  ``kvcc_state_*``; libc, libm, libpthread and libdl only, no compiler;
* ``libkvcc.so`` — the compiler library (include/kvcc_compiler.h: ``kvcc_compile_so``,
  ``kvcc_compile_file``), which links libkvcc_rt.so, Lua and LLVM.

Search order (the first directory holding ``libkvcc_rt.so`` or ``libkvcc.so`` wins, and both
libraries are taken from that same directory so that they always come from one build):

1. ``$KVCC_LIB_DIR``;
2. ``kvcc/_libs/`` inside the installed package (``pip install ./python`` copies the
   libraries and the ``kvcc`` command there from a build tree, see python/setup.py);
3. the build tree this package sits in (``python/kvcc`` → ``build/``), or ``$KVCC_BUILD_DIR``;
4. the system loader's path (``LD_LIBRARY_PATH``, ``make install``'s ``$PREFIX/lib``).

Both libraries share one runtime: libkvcc.so's DT_NEEDED libkvcc_rt.so resolves to the copy
loaded first (same soname), so a policy that :func:`kvcc.compile` gets from
``kvcc_compile_file`` is the runtime's own handle. :func:`kvcc.open` needs the runtime only.
"""
from __future__ import annotations

import ctypes
import os
import shutil
from ctypes import (POINTER, Structure, c_char_p, c_double, c_float, c_int, c_int32, c_int64,
                    c_long, c_uint32, c_void_p)
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
RT_NAME = "libkvcc_rt.so"
COMPILER_NAME = "libkvcc.so"

# error codes of kvcc.h
OK, EINVAL, ENOMEM, EIO, EARTIFACT, ECOMPILE, ESPEC, EUNSUPPORTED, EDEVICE, EBUSY = 0, -1, -2, -3, -4, -5, -6, -7, -8, -9
CODE_NAMES = {EINVAL: "EINVAL", ENOMEM: "ENOMEM", EIO: "EIO", EARTIFACT: "EARTIFACT",
              ECOMPILE: "ECOMPILE", ESPEC: "ESPEC", EUNSUPPORTED: "EUNSUPPORTED", EDEVICE: "EDEVICE",
              EBUSY: "EBUSY"}
F32, F16, BF16 = 0, 1, 2
DTYPES = {"f32": F32, "f16": F16, "bf16": BF16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
TARGETS = {"native": 0, "x86-64-v3": 1, "x86-64-v4": 2, "scalar": 3}


# --- the structs of kvcc.h --------------------------------------------------------------------
class Spec(Structure):
    _fields_ = [("dtype", c_int), ("head_dim", c_int), ("group", c_int), ("target", c_int)]


class Layout(Structure):
    _fields_ = [("dtype", c_int), ("layers", c_int), ("kv_heads", c_int), ("head_dim", c_int),
                ("capacity", c_int), ("stride_layer", c_int64), ("stride_head", c_int64),
                ("stride_token", c_int64)]


class CCache(Structure):
    _fields_ = [("K", c_void_p), ("V", c_void_p), ("pos", c_void_p), ("len", c_void_p),
                ("state", c_void_p)]


class Obs(Structure):
    _fields_ = [("nobs", c_int), ("Q", c_void_p), ("lse", c_void_p), ("qpos", c_void_p)]


class Args(Structure):
    _fields_ = [("ratio", c_double), ("budget", c_long), ("params", c_void_p), ("threads", c_int),
                ("scores", c_void_p)]


P = c_void_p
_RT_PROTOS = {
    "kvcc_last_error": (c_char_p, []),
    "kvcc_version": (c_char_p, []),
    "kvcc_open": (c_int, [c_char_p, POINTER(c_void_p)]),
    "kvcc_close": (None, [P]),
    "kvcc_policy_name": (c_char_p, [P]),
    "kvcc_policy_spec": (c_int, [P, POINTER(Spec)]),
    "kvcc_param_count": (c_int, [P]),
    "kvcc_param_index": (c_int, [P, c_char_p]),
    "kvcc_param_info": (c_int, [P, c_int, POINTER(c_char_p), POINTER(c_double)]),
    "kvcc_state_count": (c_int, [P]),
    "kvcc_state_info": (c_int, [P, c_int, POINTER(c_char_p), POINTER(c_double)]),
    "kvcc_weight_count": (c_int, [P]),
    "kvcc_weight_info": (c_int, [P, c_int, POINTER(c_char_p), POINTER(c_int)]),
    "kvcc_plan_set_weight": (c_int, [P, c_char_p, P, c_int, P]),
    "kvcc_policy_when": (c_int, [P, POINTER(c_int)]),
    "kvcc_policy_obs": (c_int, [P, P, POINTER(c_int)]),
    "kvcc_policy_info": (c_int, [P, POINTER(c_uint32), POINTER(c_int)]),
    "kvcc_plan_create": (c_int, [P, POINTER(Layout), c_int, c_int, POINTER(c_void_p)]),
    "kvcc_plan_destroy": (None, [P]),
    "kvcc_compress": (c_int, [P, POINTER(CCache), POINTER(Obs), POINTER(Args)]),
    "kvcc_plan_timings": (c_int, [P, POINTER(c_double)]),
    "kvcc_append": (c_int, [P, POINTER(CCache), c_int, P, P, c_int32]),
    "kvcc_decode_layer": (c_int, [P, POINTER(CCache), c_int, P, P]),
    "kvcc_plan_set_params": (c_int, [P, P]),
    "kvcc_plan_set_step": (c_int, [P, c_int]),
    # GPU (kvcc.GpuPlan): the plan, its image, compress on device pointers, weights, the error word
    "kvcc_gpu_plan_create": (c_int, [P, POINTER(Layout), c_int, c_int, POINTER(c_void_p)]),
    "kvcc_gpu_plan_destroy": (None, [P]),
    "kvcc_gpu_plan_image": (c_char_p, [P]),
    "kvcc_gpu_compress": (c_int, [P, POINTER(CCache), POINTER(Obs), POINTER(Args), P]),
    "kvcc_gpu_plan_set_weight": (c_int, [P, c_char_p, P, c_int, P]),
    "kvcc_gpu_plan_check": (c_int, [P]),
}
_COMPILER_PROTOS = {
    "kvcc_last_error": (c_char_p, []),
    "kvcc_version": (c_char_p, []),
    "kvcc_compile_so": (c_int, [c_char_p, POINTER(Spec), c_char_p, c_int]),
    "kvcc_compile_file": (c_int, [c_char_p, POINTER(Spec), POINTER(c_void_p)]),
    "kvcc_compile_so_gpu": (c_int, [c_char_p, POINTER(Spec), c_char_p, c_char_p, c_int]),
}
# kvcc_policy_info's flags and scopes (kvcc.h)
POLICY_QUERIES, POLICY_LSE, POLICY_QPOS, POLICY_LAYER, POLICY_HEADS, POLICY_OBSERVE = 1, 2, 4, 8, 16, 32
SCOPES = {0: "head", 1: "layer", 2: "model"}
# Weights (DESIGN §3 "Weights, tables and scans"): kvcc.Plan.set_weight calls this function.
WEIGHT_FUNCTION = "kvcc_plan_set_weight"


class LibraryNotFound(OSError):
    """No kvcc shared library was found (the message lists where it looked)."""


class _Libs:
    def __init__(self) -> None:
        self.dir: Optional[str] = None
        self.rt: Optional[ctypes.CDLL] = None
        self.compiler: Optional[ctypes.CDLL] = None
        self.rt_path = self.compiler_path = None
        self.searched: list[str] = []


_libs: Optional[_Libs] = None


def search_dirs() -> list[str]:
    """The directories searched for the libraries, in order (see the module docstring)."""
    dirs = []
    if os.environ.get("KVCC_LIB_DIR"):
        dirs.append(os.environ["KVCC_LIB_DIR"])
    dirs.append(os.path.join(HERE, "_libs"))
    if os.environ.get("KVCC_BUILD_DIR"):
        dirs.append(os.environ["KVCC_BUILD_DIR"])
    dirs.append(os.path.normpath(os.path.join(HERE, "..", "..", "build")))
    return dirs


def _declare(lib: ctypes.CDLL, protos: dict) -> None:
    for name, (res, args) in protos.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args


def _load() -> _Libs:
    L = _Libs()
    chosen = None
    for d in search_dirs():
        L.searched.append(d)
        if os.path.isfile(os.path.join(d, RT_NAME)) or os.path.isfile(os.path.join(d, COMPILER_NAME)):
            chosen = d
            break
    mode = ctypes.RTLD_GLOBAL   # libkvcc.so's DT_NEEDED libkvcc_rt.so resolves to the same copy
    try:
        if chosen:
            L.dir = chosen
            rt = os.path.join(chosen, RT_NAME)
            comp = os.path.join(chosen, COMPILER_NAME)
            L.rt_path = rt if os.path.isfile(rt) else comp
            L.rt = ctypes.CDLL(L.rt_path, mode=mode)
            if os.path.isfile(comp):
                L.compiler_path = comp
                L.compiler = L.rt if comp == L.rt_path else ctypes.CDLL(comp, mode=mode)
        else:
            L.searched.append("the system loader path")
            for name in (RT_NAME, COMPILER_NAME):
                try:
                    lib = ctypes.CDLL(name, mode=mode)
                except OSError:
                    continue
                if L.rt is None:
                    L.rt, L.rt_path = lib, name
                if name == COMPILER_NAME:
                    L.compiler, L.compiler_path = lib, name
    except OSError as e:
        raise LibraryNotFound("kvcc: cannot load %s: %s" % (L.rt_path or L.compiler_path, e)) from None
    if L.rt is None:
        raise LibraryNotFound("kvcc: no %s or %s in %s (set KVCC_LIB_DIR to the folder that holds "
                              "them, e.g. a kvcc build/ directory)" % (RT_NAME, COMPILER_NAME,
                                                                       ", ".join(L.searched)))
    _declare(L.rt, _RT_PROTOS)
    if L.compiler is not None:
        _declare(L.compiler, _COMPILER_PROTOS)
        a, b = L.rt.kvcc_version(), L.compiler.kvcc_version()
        if a != b:
            raise LibraryNotFound("kvcc: %s is version %s but %s is %s (one build, please)"
                                  % (L.rt_path, a.decode(), L.compiler_path, b.decode()))
    return L


def libs() -> _Libs:
    """The loaded libraries (loaded on first use)."""
    global _libs
    if _libs is None:
        _libs = _load()
    return _libs


def rt() -> ctypes.CDLL:
    """The runtime library (libkvcc_rt.so; a libkvcc.so alone when it is the only one found)."""
    return libs().rt


def compiler() -> ctypes.CDLL:
    """The compiler library (libkvcc.so); LibraryNotFound when only the runtime is present."""
    L = libs()
    if L.compiler is None:
        raise LibraryNotFound("kvcc: compiling a policy needs %s, but only %s was found in %s: "
                              "compile with the kvcc command (kvcc compile … -o policy.so) and "
                              "open the .so" % (COMPILER_NAME, L.rt_path, L.dir))
    return L.compiler


def weight_function():
    """The C function that binds a policy weight, or None in a libkvcc_rt that predates it."""
    try:
        return getattr(rt(), WEIGHT_FUNCTION)
    except AttributeError:
        return None


def kvcc_binary() -> Optional[str]:
    """The ``kvcc`` command next to the libraries found ($KVCC_BIN first, then PATH)."""
    if os.environ.get("KVCC_BIN"):
        return os.environ["KVCC_BIN"]
    for d in search_dirs():
        p = os.path.join(d, "kvcc")
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return shutil.which("kvcc")


__all__ = ["libs", "rt", "compiler", "search_dirs", "kvcc_binary", "LibraryNotFound", "Spec",
           "Layout", "CCache", "Obs", "Args", "DTYPES", "DTYPE_NAMES", "TARGETS",
           "c_float"]
