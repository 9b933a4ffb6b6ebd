#!/usr/bin/env python3
"""Corrupted checkpoints and tokenizers through the programs that read them (issue 10):
`llama generate` and `kvcc eval` on truncations, header rewrites (every field of the
llama2.c header: zero, negative, huge, inconsistent), byte flips in the weights (NaN, inf,
huge values) and in the tokenizer records (lengths, scores, bytes). Each run must end
with status 0 (the damage hit only numbers) or 1 with one error line on stderr — never
a crash, an abort or a hang. The fuzz harnesses fz_ckpt / fz_tok cover the readers
themselves; this checks what the programs do with what the readers accept. A FIFO or a
directory in place of a file is an error line at once.
usage: llama_cli.py LLAMA KVCC DATA_DIR WORKDIR"""
import os
import random
import struct
import subprocess
import sys

llama, kvcc, data, work = sys.argv[1:5]
ckpt = open(os.path.join(data, "stories260K.bin"), "rb").read()
tok = open(os.path.join(data, "tok512.bin"), "rb").read()
text = os.path.join(work, "text.txt")
open(text, "w").write("Once upon a time, there was a little girl named Lily. She liked to play outside. "
                      "One day she saw a big red ball in the park and ran to get it.\n" * 2)
rng = random.Random(10)


def hdr(fields):
    h = list(struct.unpack("<7i", ckpt[:28]))
    for k, v in fields.items():
        h[k] = v
    return struct.pack("<7i", *h) + ckpt[28:]


def flip(blob, where, values):
    b = bytearray(blob)
    for _ in range(rng.choice([1, 3, 16])):
        pos = where()
        b[pos:pos + len(values[0])] = rng.choice(values)
    return bytes(b)


floats = [struct.pack("<f", v) for v in (float("nan"), float("inf"), -float("inf"), 3e38, -1e30, 0.0)]
models = [("truncated@%d" % k, ckpt[:k]) for k in (0, 27, 28, 1000, len(ckpt) // 2, len(ckpt) - 4, len(ckpt) - 1)]
models += [("trailing", ckpt + b"\0\0\0\0")]
for k, name in enumerate(("dim", "hidden", "layers", "heads", "kv_heads", "vocab", "seq_len")):
    for v in (0, -1, 1, 3, 1 << 20, 2**31 - 1, -2**31):
        models.append(("%s=%d" % (name, v), hdr({k: v})))
models += [("weights%d" % i, flip(ckpt, lambda: 28 + 4 * rng.randrange((len(ckpt) - 28) // 4), floats)) for i in range(8)]
toks = [("truncated@%d" % k, tok[:k]) for k in (0, 3, 4, 11, 12, 100, len(tok) // 2, len(tok) - 1)]
toks += [("max_len=%d" % v, struct.pack("<i", v) + tok[4:]) for v in (0, -1, 1, 4097, 2**31 - 1)]
for i in range(12):
    toks.append(("record%d" % i, flip(tok, lambda: 4 + rng.randrange(len(tok) - 8),
                                      [struct.pack("<i", v) for v in (-1, 0, 1 << 30, 5000, 7)] + floats[:2])))
toks.append(("extra-record", tok + struct.pack("<fi", 0.0, 1) + b"x"))

passed = failed = 0


def run(name, args):
    global passed, failed
    try:
        p = subprocess.run(args, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        print("FAIL %s: hang" % name)
        failed += 1
        return
    err = p.stderr.decode(errors="replace").strip().splitlines()
    if p.returncode == 0 or (p.returncode == 1 and len(err) == 1 and "error" in err[0]):
        passed += 1
    else:
        print("FAIL %s: status %d, stderr %r" % (name, p.returncode, err[:3]))
        failed += 1


mpath, tpath = os.path.join(work, "model.bin"), os.path.join(work, "tok.bin")
good_m, good_t = os.path.join(data, "stories260K.bin"), os.path.join(data, "tok512.bin")
for i, (name, blob) in enumerate(models):
    open(mpath, "wb").write(blob)
    run("checkpoint " + name, [llama, "--model", mpath, "--tokenizer", good_t, "generate", "--steps", "4",
                                "--prompt", "Once upon"])
    if i % 6 == 0:
        run("eval checkpoint " + name, [kvcc, "eval", "policies/streaming_llm.lua", "--model", mpath,
                                         "--tokenizer", good_t, "--data", text, "--ratios", "0.5"])
for i, (name, blob) in enumerate(toks):
    open(tpath, "wb").write(blob)
    run("tokenizer " + name, [llama, "--model", good_m, "--tokenizer", tpath, "generate", "--steps", "4",
                               "--prompt", "Once upon a time"])
    if i % 6 == 0:
        run("eval tokenizer " + name, [kvcc, "eval", "policies/streaming_llm.lua", "--model", good_m,
                                        "--tokenizer", tpath, "--data", text, "--ratios", "0.5"])
# what is not a file: a FIFO (no writer: reading it blocked forever) or a directory as the
# checkpoint, the tokenizer or the data: status 1 and the error line that says so, at once
fifo, folder = os.path.join(work, "fifo.bin"), os.path.join(work, "dir.bin")
for p in (fifo, folder):
    if os.path.lexists(p):
        os.rmdir(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
os.mkfifo(fifo)
os.mkdir(folder)
for bad, what in ((fifo, "a FIFO"), (folder, "a directory")):
    want = "%s: cannot read %s (a file is needed)" % (bad, what)
    for name, args in (("checkpoint", [llama, "--model", bad, "--tokenizer", good_t, "generate", "--steps", "1"]),
                       ("tokenizer", [llama, "--model", good_m, "--tokenizer", bad, "generate", "--steps", "1"]),
                       ("eval data", [kvcc, "eval", "policies/streaming_llm.lua", "--model", good_m,
                                      "--tokenizer", good_t, "--data", bad, "--ratios", "0.5"]),
                       ("eval checkpoint", [kvcc, "eval", "policies/streaming_llm.lua", "--model", bad,
                                            "--tokenizer", good_t, "--data", text, "--ratios", "0.5"])):
        try:
            p = subprocess.run(args, capture_output=True, timeout=20)
            err = p.stderr.decode(errors="replace").strip().splitlines()
            ok = p.returncode == 1 and len(err) == 1 and want in err[0]
        except subprocess.TimeoutExpired:
            ok, err = False, ["hang"]
        passed += ok
        failed += not ok
        if not ok:
            print("FAIL %s is %s: %r (want %r)" % (name, what, err[:3], want))
os.remove(fifo)
os.rmdir(folder)
print("corrupted checkpoints and tokenizers: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
