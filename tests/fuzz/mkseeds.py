#!/usr/bin/env python3
"""Write the hand-made seed inputs of tests/fuzz/corpus/ (files named seed-*):
small valid and nearly valid inputs from which the fuzzers start. Run from the
repository root after `make` (the KIR seeds are kvcc's own dumps of the shipped
policies; the artifact seed is a compiled policy):
    /usr/bin/python3 tests/fuzz/mkseeds.py build/kvcc ../shared/data
The corpora then grow by `make fuzz` and shrink by `make fuzz-merge`."""
import glob
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

kvcc, data = sys.argv[1:3]
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(kind, name, blob):
    os.makedirs(os.path.join(root, kind), exist_ok=True)
    with open(os.path.join(root, kind, "seed-" + name), "wb") as f:
        f.write(blob)


# --- KIR and DSL: the shipped policies and the diagnostics corpus ---------------------
for p in sorted(glob.glob("policies/*.lua")):
    base = os.path.basename(p)[:-4]
    put("dsl", base + ".lua", open(p, "rb").read())
    for args, tag in ((["--raw"], "raw"), ([], "passes")):
        out = subprocess.run([kvcc, "dump", p] + args, capture_output=True, check=True).stdout
        put("kir", "%s-%s.kir" % (base, tag), out)
for p in sorted(glob.glob("tests/errors/*.lua") + glob.glob("tests/errors/*/*.lua")):
    put("dsl", "err-" + os.path.basename(p), open(p, "rb").read())

# --- npz: small cases as np.savez writes them, and zip64 variants ----------------------
def npz(arrays, zip64=False):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for k, v in arrays.items():
            b = io.BytesIO()
            np.lib.format.write_array(b, np.asanyarray(v), allow_pickle=False)
            with z.open(k + ".npy", "w", force_zip64=zip64) as m:
                m.write(b.getvalue())
    return buf.getvalue()

rng = np.random.default_rng(1)
small = {"K": rng.standard_normal((1, 1, 5, 4)).astype(np.float32),
         "V": rng.standard_normal((1, 1, 5, 4)).astype(np.float32),
         "Q": rng.standard_normal((1, 1, 1, 2, 4)).astype(np.float32),
         "pos": np.arange(5, dtype=np.int32), "ratio": np.array(0.5),
         "budget": np.array(3, dtype=np.int64), "dtype": np.array("bf16"),
         "param.window": np.array(2.0)}
put("npz", "case.npz", npz(small))
put("npz", "case-zip64.npz", npz(small, zip64=True))
put("npz", "dtypes.npz", npz({"b": np.array([True, False]), "u1": np.arange(3, dtype=np.uint8),
                              "i2": -np.arange(3, dtype=np.int16), "u8": np.arange(2, dtype=np.uint64),
                              "f8": np.array([[1.5, -2.0]]), "s": np.array("snapkv"),
                              "empty": np.zeros((0, 3), np.float32)}))

# --- llama2.c checkpoints: tiny ones, and the shipped one truncated ---------------------
def ckpt(dim, hidden, L, H, KV, vocab, seq, shared=True):
    hd = dim // H
    n = (vocab * dim + L * dim + L * dim * dim + 2 * L * KV * hd * dim + L * dim * dim + L * dim
         + 3 * L * hidden * dim + dim + seq * hd + (0 if shared else vocab * dim))
    w = (np.random.default_rng(dim + L).standard_normal(n) * 0.1).astype("<f4")
    return struct.pack("<7i", dim, hidden, L, H, KV, vocab if shared else -vocab, seq) + w.tobytes()

# (fz_ckpt's first byte: odd = fit the weights to the header's size, even = as it is)
put("ckpt", "tiny.bin", b"\1" + ckpt(8, 16, 1, 2, 1, 12, 8))
put("ckpt", "tiny-raw.bin", b"\0" + ckpt(8, 16, 1, 2, 1, 12, 8))
put("ckpt", "tiny-header-only.bin", b"\1" + ckpt(8, 16, 1, 2, 1, 12, 8)[:28])
put("ckpt", "tiny-gqa-wcls.bin", b"\1" + ckpt(8, 12, 2, 4, 2, 10, 6, shared=False))
put("ckpt", "stories260K-head.bin", b"\0" + open(os.path.join(data, "stories260K.bin"), "rb").read()[:512])

# --- tokenizers: the shipped one, and a small one with byte tokens ---------------------
put("tok", "tok512.bin", open(os.path.join(data, "tok512.bin"), "rb").read())
pieces = [b"<unk>", b"<s>", b"</s>"] + [b"<0x%02X>" % b for b in range(256)] + \
         [b" ", b"a", b"b", b"ab", b" a", b"\xc3\xbc", b"ba"]
put("tok", "bytes.bin", struct.pack("<i", 8) + b"".join(
    struct.pack("<fi", float(-i), len(p)) + p for i, p in enumerate(pieces)))
put("tok", "tiny.bin", struct.pack("<i", 3) + b"".join(
    struct.pack("<fi", s, len(p)) + p for s, p in ((0, b"x"), (0, b""), (1.5, b"xy"), (2, b"y"))))

# --- artifacts: a compiled policy (scalar target: loads on any x86-64) and not-ELF bytes --
with tempfile.TemporaryDirectory() as tmp:
    so = os.path.join(tmp, "p.so")
    env = dict(os.environ, KVCC_CACHE_DIR=os.path.join(tmp, "cache"))
    subprocess.run([kvcc, "compile", "policies/streaming_llm.lua", "-o", so, "--target", "scalar",
                    "--head-dim", "16"], check=True, env=env)
    subprocess.run(["strip", so], check=True)
    put("artifact", "streaming_llm.so", open(so, "rb").read())
put("artifact", "not-elf.so", b"\x7fELG" + b"\0" * 60)
