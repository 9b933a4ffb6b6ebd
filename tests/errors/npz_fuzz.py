#!/usr/bin/env python3
"""Malformed inputs to `kvcc run`: truncations and byte flips of a valid case
file, and crafted zip / zip64 / .npy headers whose sizes and offsets overflow
naive bounds checks (an offset near 2^64, a zip64 record in a file shorter
than the record, huge item sizes and shapes). Each run must end with status 0
(the damage hit only data) or 1 with exactly one error line — never a crash,
a hang or a multi-line dump.
usage: npz_fuzz.py KVCC POLICY CASE.npz WORKDIR
       npz_fuzz.py --corpus DIR      (writes the crafted files, for tests/fuzz/corpus/npz)"""
import os
import random
import struct
import subprocess
import sys


def npy(descr, shape, data):
    hdr = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    hdr += " " * ((64 - (10 + len(hdr) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode() + data


def zipfile64(members, loff=None, csize=None, usize=None, z64=None, eocd_zip64=False):
    """A stored zip whose central directory gives sizes and offsets in zip64 extra
    fields (0xffffffff in the 32-bit fields); loff/csize/usize override the true
    values of the first member, z64 adds a zip64 end-of-directory locator pointing there."""
    out, cd = b"", b""
    for i, (name, data) in enumerate(members):
        off = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034b50, 45, 0, 0, 0, 0x21, 0, len(data), len(data),
                           len(name), 0) + name + data
        u, c, o = len(data), len(data), off
        if i == 0:
            u = usize if usize is not None else u
            c = csize if csize is not None else c
            o = loff if loff is not None else o
        extra = struct.pack("<HHQQQ", 1, 24, u, c, o)
        cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 45, 45, 0, 0, 0, 0x21, 0, 0xffffffff,
                          0xffffffff, len(name), len(extra), 0, 0, 0, 0, 0xffffffff) + name + extra
    cdoff = len(out)
    out += cd
    if z64 is not None:
        out += struct.pack("<IIQI", 0x07064b50, 0, z64, 1)
    n = 0xffff if eocd_zip64 else len(members)
    out += struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, n, n, len(cd), 0xffffffff if eocd_zip64 else cdoff, 0)
    return out


def crafted():
    k = npy("<f4", "(1, 1, 2, 2)", b"\0" * 16)
    ok = [(b"K.npy", k), (b"V.npy", k)]
    return [
        ("zip64-valid", zipfile64(ok)),
        ("zip64-loff-2^64-16", zipfile64(ok, loff=2**64 - 16)),
        ("zip64-loff-2^64-1", zipfile64(ok, loff=2**64 - 1)),
        ("zip64-loff-2^63", zipfile64(ok, loff=2**63)),
        ("zip64-size-2^64-1", zipfile64(ok, csize=2**64 - 1, usize=2**64 - 1)),
        ("zip64-size-2^63", zipfile64(ok, csize=2**63, usize=2**63)),
        ("zip64-locator-2^64-8", zipfile64(ok, z64=2**64 - 8, eocd_zip64=True)),
        ("zip64-locator-short-file", struct.pack("<IIQI", 0x07064b50, 0, 0, 1) +
         struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, 0xffff, 0xffff, 0, 0xffffffff, 0)),
        ("npy-itemsize-huge", zipfile64([(b"K.npy", npy("<U99999999999999999999", "()", b"")), (b"V.npy", k)])),
        ("npy-itemsize-int-max", zipfile64([(b"K.npy", npy("<i2147483647", "(1,)", b"")), (b"V.npy", k)])),
        ("npy-unicode-2^30", zipfile64([(b"K.npy", npy("<U1073741824", "()", b"")), (b"V.npy", k)])),
        ("npy-shape-2^62", zipfile64([(b"K.npy", npy("<f4", "(4611686018427387904, 4)", b"")), (b"V.npy", k)])),
        ("npy-shape-product", zipfile64([(b"K.npy", npy("<f4", "(1099511627776, 1099511627776)", b"")),
                                         (b"V.npy", k)])),
        ("npy-shape-negative", zipfile64([(b"K.npy", npy("<f4", "(-1, 4)", b"")), (b"V.npy", k)])),
    ]


if sys.argv[1] == "--corpus":
    for name, blob in crafted():
        open(os.path.join(sys.argv[2], "regress-" + name + ".npz"), "wb").write(blob)
    sys.exit(0)

kvcc, policy, case, work = sys.argv[1:5]
data = open(case, "rb").read()
rng = random.Random(7)
variants = [("truncated@%d" % k, data[:k]) for k in sorted({0, 1, 4, 22, 30, 100, len(data) // 2, len(data) - 23, len(data) - 1})]
for i in range(120):
    b = bytearray(data)
    for _ in range(rng.choice([1, 2, 8])):
        # most damage near headers and the directory, where parsing happens
        pos = rng.choice([rng.randrange(0, 200), rng.randrange(len(b) - 400, len(b)), rng.randrange(len(b))])
        b[pos] = rng.randrange(256)
    variants.append(("flip%d" % i, bytes(b)))
variants.append(("garbage", bytes(rng.randrange(256) for _ in range(5000))))
variants += crafted()
passed = failed = 0
path = os.path.join(work, "fuzz.npz")
for name, blob in variants:
    open(path, "wb").write(blob)
    try:
        p = subprocess.run([kvcc, "run", policy, "--inputs", path], capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        print("FAIL %s: hang" % name)
        failed += 1
        continue
    err = p.stderr.decode(errors="replace").strip().splitlines()
    if p.returncode == 0 or (p.returncode == 1 and len(err) == 1 and "error:" in err[0]):
        passed += 1
    else:
        print("FAIL %s: status %d, stderr %r" % (name, p.returncode, err[:3]))
        failed += 1
print("npz robustness: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
