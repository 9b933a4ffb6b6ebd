"""Raw views of caller-owned arrays: the address, element type, shape and strides that kvcc's C
API needs, taken from numpy arrays (``__array_interface__``), torch CPU tensors (``data_ptr``,
which also covers bf16, a dtype numpy lacks), any DLPack producer (``__dlpack__``) and any
buffer-protocol object. Nothing is ever copied: kvcc reads and writes the caller's memory.

Element types are named as kvcc names them: ``f32``, ``f16``, ``bf16`` (torch.bfloat16,
ml_dtypes.bfloat16, or uint16 arrays holding bf16 bit patterns where a bf16 cache is expected),
``i32``, plus ``u16`` and ``other`` for what kvcc does not take.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

_NP = {"<f4": "f32", "<f2": "f16", "<i4": "i32", "<u2": "u16", "|u1": "u8", "<f8": "f64",
       "<i8": "i64"}
_SIZE = {"f32": 4, "f16": 2, "bf16": 2, "i32": 4, "u16": 2, "u8": 1, "f64": 8, "i64": 8}


@dataclass
class View:
    """One array as kvcc sees it. ``strides`` are in elements."""
    name: str
    ptr: int
    dtype: str
    shape: tuple
    strides: tuple
    readonly: bool
    owner: Any          # keeps the memory (or the DLPack capsule) alive while the view is used

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def contiguous(self) -> bool:
        """C-contiguous (dimensions of extent 1 may have any stride)."""
        want = 1
        for n, s in zip(reversed(self.shape), reversed(self.strides)):
            if n != 1 and s != want:
                return False
            want *= n
        return True

    def size(self) -> int:
        k = 1
        for n in self.shape:
            k *= n
        return k


def _cstrides(shape: Sequence[int]) -> tuple:
    out, k = [], 1
    for n in reversed(shape):
        out.append(k)
        k *= int(n)
    return tuple(reversed(out))


def _torch_like(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "data_ptr") and hasattr(x, "stride")


def _from_numpy(name: str, a: np.ndarray) -> View:
    ai = a.__array_interface__
    ts = a.dtype.str
    dt = "bf16" if a.dtype.name == "bfloat16" else _NP.get(ts, "other")
    isz = a.dtype.itemsize
    if ai.get("strides") is None:
        strides = _cstrides(a.shape)
    else:
        if any(s % isz for s in ai["strides"]):
            raise ValueError("%s: strides %s are not a multiple of the element size %d"
                             % (name, ai["strides"], isz))
        strides = tuple(int(s) // isz for s in ai["strides"])
    return View(name, int(ai["data"][0]), dt, tuple(int(n) for n in a.shape), strides,
                bool(ai["data"][1]), a)


def _from_torch(name: str, t: Any) -> View:
    dev = getattr(t, "device", None)
    if dev is not None and getattr(dev, "type", "cpu") != "cpu":
        raise ValueError("%s: a %s tensor; kvcc's Python binding runs on CPU tensors (the GPU path "
                         "is the C API's kvcc_gpu_compress)" % (name, dev))
    dt = {"torch.float32": "f32", "torch.float16": "f16", "torch.bfloat16": "bf16",
          "torch.int32": "i32", "torch.uint16": "u16"}.get(str(t.dtype), str(t.dtype))
    if getattr(t, "is_sparse", False) or str(getattr(t, "layout", "torch.strided")) != "torch.strided":
        raise ValueError("%s: a sparse tensor" % name)
    if getattr(t, "is_conj", lambda: False)() or getattr(t, "is_neg", lambda: False)():
        raise ValueError("%s: a lazily conjugated/negated tensor (call .resolve_conj()/.resolve_neg())"
                         % name)
    return View(name, int(t.data_ptr()), dt, tuple(int(n) for n in t.shape),
                tuple(int(s) for s in t.stride()), False, t)


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


def _from_dlpack(name: str, x: Any) -> View:
    cap = x.__dlpack__()
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    p = get(cap, b"dltensor")         # the capsule stays unconsumed: its destructor frees it
    t = _DLTensor.from_address(p)     # DLManagedTensor starts with its DLTensor
    if t.device.device_type != 1:
        raise ValueError("%s: a DLPack tensor on device type %d; kvcc's Python binding takes CPU "
                         "memory" % (name, t.device.device_type))
    code, bits, lanes = t.dtype.code, t.dtype.bits, t.dtype.lanes
    dt = {(2, 32): "f32", (2, 16): "f16", (4, 16): "bf16", (0, 32): "i32", (1, 16): "u16"}.get(
        (code, bits), "other") if lanes == 1 else "other"
    shape = tuple(t.shape[i] for i in range(t.ndim))
    if t.strides:
        strides = tuple(t.strides[i] for i in range(t.ndim))
    else:
        strides = _cstrides(shape)
    return View(name, int(t.data) + int(t.byte_offset), dt, shape, strides, False, (x, cap))


def view(name: str, x: Any) -> View:
    """A raw view of ``x`` (no copy); TypeError for objects that are not arrays."""
    if isinstance(x, np.ndarray):
        return _from_numpy(name, x)
    if _torch_like(x):
        return _from_torch(name, x)
    if hasattr(x, "__dlpack__"):
        return _from_dlpack(name, x)
    if hasattr(x, "__array_interface__"):
        return _from_numpy(name, np.asarray(x))
    try:
        mv = memoryview(x)
    except TypeError:
        raise TypeError("%s: expected a numpy array, a torch CPU tensor, or a DLPack or "
                        "buffer-protocol object, got %s" % (name, type(x).__name__)) from None
    return _from_numpy(name, np.asarray(mv))


def check(v: View, *, dtypes: Sequence[str], shape: Optional[Sequence[Optional[int]]] = None,
          contiguous: bool = True, writable: bool = False, what: str = "") -> View:
    """Raises TypeError / ValueError with a message naming the argument unless ``v`` fits."""
    if v.dtype not in dtypes:
        raise TypeError("%s: element type %s, expected %s%s" % (v.name, v.dtype, " or ".join(dtypes),
                                                              (" (" + what + ")") if what else ""))
    if shape is not None:
        if len(shape) != v.ndim or any(w is not None and w != n for w, n in zip(shape, v.shape)):
            want = "[" + ", ".join("*" if w is None else str(w) for w in shape) + "]"
            raise ValueError("%s: shape %s, expected %s%s" % (v.name, list(v.shape), want,
                                                            (" (" + what + ")") if what else ""))
    if contiguous and not v.contiguous():
        raise ValueError("%s: not contiguous (strides %s in elements for shape %s); pass a "
                         "C-contiguous array (numpy.ascontiguousarray / tensor.contiguous())"
                         % (v.name, list(v.strides), list(v.shape)))
    if writable and v.readonly:
        raise ValueError("%s: read-only memory, but kvcc writes it in place" % v.name)
    if any(s < 0 for s in v.strides):
        raise ValueError("%s: negative strides %s" % (v.name, list(v.strides)))
    return v
