"""kvcc's tokenizer for the shipped checkpoint: a reader of llama2.c's ``tokenizer.bin``
(``shared/data/tok512.bin``) and its encoding, written from shared/data/README.md §2 (the same
rules as lib/llama/tokenizer.c). Pure Python.

    tok = Tokenizer("../shared/data/tok512.bin")
    tok.encode("Once upon a time", bos=True)     # [1, 403, 407, 261, 378]
    tok.decode([1, 403, 407, 261, 378])          # 'Once upon a time'

Also: :func:`load_stories` (the ``<|endoftext|>``-separated stories file) and
:func:`story_tokens` (``[BOS] + encode(story)`` truncated to 512 tokens, as ``kvcc eval`` does).
"""
from __future__ import annotations

import re
import struct
from typing import Iterable, Optional

BOS, EOS = 1, 2
MAX_TOKENS = 512
_BYTE = re.compile(rb"^<0x([0-9A-Fa-f]{2})>$")


class Tokenizer:
    """llama2.c tokenizer.bin: int32 max_token_length, then per token float32 score, int32
    length, the piece's bytes. Ids 3..258 are the byte-fallback pieces ``<0x00>``..``<0xFF>``."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            raw = f.read()
        if len(raw) < 4:
            raise ValueError("%s: not a llama2.c tokenizer (%d bytes)" % (path, len(raw)))
        (self.max_token_length,) = struct.unpack_from("<i", raw, 0)
        off = 4
        self.pieces: list[bytes] = []
        self.scores: list[float] = []
        while off < len(raw):
            if off + 8 > len(raw):
                raise ValueError("%s: truncated record at byte %d" % (path, off))
            score, n = struct.unpack_from("<fi", raw, off)
            off += 8
            if n < 0 or off + n > len(raw):
                raise ValueError("%s: bad piece length %d at byte %d" % (path, n, off - 4))
            self.pieces.append(raw[off:off + n])
            self.scores.append(score)
            off += n
        self.lookup: dict[bytes, int] = {}
        for i, p in enumerate(self.pieces):
            self.lookup.setdefault(p, i)        # the first id of a duplicated piece

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """README §2: a leading " " for non-empty text, code points as pieces (else their UTF-8
        bytes as byte-fallback ids b+3), then repeatedly merge the adjacent pair whose
        concatenation is the highest-scoring piece (the first such pair on ties)."""
        ids: list[int] = []
        if text:
            sp = self.lookup.get(b" ")
            if sp is not None:
                ids.append(sp)
            for ch in text:
                b = ch.encode("utf-8")
                i = self.lookup.get(b)
                if i is not None:
                    ids.append(i)
                else:
                    ids.extend(x + 3 for x in b)
        while True:
            best, at = None, -1
            for k in range(len(ids) - 1):
                j = self.lookup.get(self.pieces[ids[k]] + self.pieces[ids[k + 1]])
                if j is not None and (best is None or self.scores[j] > self.scores[best]):
                    best, at = j, k
            if best is None:
                break
            ids[at:at + 2] = [best]
        return ([BOS] if bos else []) + ids + ([EOS] if eos else [])

    def piece_bytes(self, i: int, prev: Optional[int] = None) -> bytes:
        """The bytes token i stands for (byte-fallback pieces as the raw byte; the leading
        space of the first piece after BOS dropped)."""
        p = self.pieces[i]
        if prev == BOS and p.startswith(b" "):
            p = p[1:]
        m = _BYTE.match(p)
        return bytes([int(m.group(1), 16)]) if m else p

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        out, prev = [], None
        for i in ids:
            i = int(i)
            if skip_special and i in (0, BOS, EOS):
                prev = i
                continue
            out.append(self.piece_bytes(i, prev))
            prev = i
        return b"".join(out).decode("utf-8", "replace")


def load_stories(path: str) -> list[str]:
    """Stories separated by lines that are exactly ``<|endoftext|>``, each stripped of its
    surrounding newlines, empty ones dropped (doc/eval.md, step 1)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out, cur = [], []
    for line in text.split("\n"):
        if line == "<|endoftext|>":
            out.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    out.append("\n".join(cur))
    return [s.strip("\n") for s in out if s.strip("\n")]


def story_tokens(tok: Tokenizer, story: str, limit: int = MAX_TOKENS) -> list[int]:
    """``[BOS] + encode(story)`` truncated to ``limit`` tokens (the model's seq_len)."""
    return tok.encode(story, bos=True)[:limit]
