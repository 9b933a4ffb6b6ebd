"""The shipped llama2.c checkpoint (shared/data/stories260K.bin) as a Hugging Face
``LlamaForCausalLM``, and kvcc's tokenizer as a Hugging Face tokenizer — so that kvpress runs
on the same model ``kvcc eval`` runs.

Written from shared/data/README.md §1 (the file layout: a 7 × int32 header, then fp32 arrays
in a fixed order, classifier shared with the embedding). The one non-obvious step is RoPE:
llama2.c rotates adjacent channel pairs (2j, 2j+1) of each head by pos·10000^(−2j/d), Hugging
Face's Llama rotates (j, j + d/2) by the same angle (``rotate_half``). Permuting the rows of
``wq`` and ``wk`` per head — new row j ← old 2j, new row d/2 + j ← old 2j + 1 — makes the two
models compute the same attention: q·k is unchanged when q and k are permuted alike, and v is
not permuted. The keys in the Hugging Face cache are therefore the keys of kvcc eval's cache
with their channels permuted, which changes no norm, dot product or cosine a policy computes.

    model = load_llama2c("../shared/data/stories260K.bin")            # float32, eval mode
    tok = Tok512Tokenizer("../shared/data/tok512.bin")                 # for kvpress's pipeline
    python -m kvcc.models.llama2c stories260K.bin OUT_DIR [--tokenizer tok512.bin]  # save_pretrained
"""
from __future__ import annotations

import argparse
import re
import struct
import sys
from typing import Any, Optional

import numpy as np

from ..tokenizer import BOS, EOS, Tokenizer

HEADER = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")


def read_checkpoint(path: str) -> tuple[dict, dict]:
    """(config, weights) of a llama2.c legacy (version 0) checkpoint; weights as float32 numpy
    arrays in llama2.c's layout, matrices [out][in]."""
    raw = np.fromfile(path, dtype="<u1")
    if raw.size < 28:
        raise ValueError("%s: too short for a llama2.c header" % path)
    cfg = dict(zip(HEADER, struct.unpack_from("<7i", raw.tobytes()[:28])))
    shared = cfg["vocab_size"] > 0
    cfg["vocab_size"] = abs(cfg["vocab_size"])
    D, F, L = cfg["dim"], cfg["hidden_dim"], cfg["n_layers"]
    Hq, Hkv, Vv, S = cfg["n_heads"], cfg["n_kv_heads"], cfg["vocab_size"], cfg["seq_len"]
    if min(D, F, L, Hq, Hkv, Vv, S) <= 0 or D % Hq or Hq % Hkv:
        raise ValueError("%s: implausible header %s" % (path, cfg))
    hd = D // Hq
    shapes = [("emb", (Vv, D)), ("rms_att", (L, D)), ("wq", (L, Hq * hd, D)), ("wk", (L, Hkv * hd, D)),
              ("wv", (L, Hkv * hd, D)), ("wo", (L, D, Hq * hd)), ("rms_ffn", (L, D)), ("w1", (L, F, D)),
              ("w2", (L, D, F)), ("w3", (L, F, D)), ("rms_final", (D,)),
              ("freq_cis_real", (S, hd // 2)), ("freq_cis_imag", (S, hd // 2))]
    if not shared:
        shapes.append(("wcls", (Vv, D)))
    flo = np.frombuffer(raw.tobytes(), dtype="<f4", offset=28)
    need = sum(int(np.prod(s)) for _, s in shapes)
    if flo.size != need:
        raise ValueError("%s: %d floats after the header, the header implies %d" % (path, flo.size, need))
    w, off = {}, 0
    for name, s in shapes:
        n = int(np.prod(s))
        w[name] = flo[off:off + n].reshape(s).astype(np.float32)
        off += n
    if shared:
        w["wcls"] = w["emb"]
    cfg["head_dim"] = hd
    return cfg, w


def permute_rotary(w: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a q/k projection [heads*d, in] from llama2.c's interleaved RoPE pairs to Hugging
    Face's half-split ones: per head, new row j = old 2j, new row d/2 + j = old 2j + 1."""
    out_dim, in_dim = w.shape
    d = out_dim // heads
    return w.reshape(heads, d // 2, 2, in_dim).transpose(0, 2, 1, 3).reshape(out_dim, in_dim)


def hf_config(cfg: dict) -> Any:
    from transformers import LlamaConfig
    kw = dict(vocab_size=cfg["vocab_size"], hidden_size=cfg["dim"], intermediate_size=cfg["hidden_dim"],
              num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"],
              num_key_value_heads=cfg["n_kv_heads"], head_dim=cfg["head_dim"],
              max_position_embeddings=cfg["seq_len"], rms_norm_eps=1e-5, hidden_act="silu",
              tie_word_embeddings=True, bos_token_id=BOS, eos_token_id=EOS,
              attention_bias=False, mlp_bias=False)
    try:
        return LlamaConfig(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **kw)
    except TypeError:       # transformers 4.x
        return LlamaConfig(rope_theta=10000.0, **kw)


def hf_state_dict(cfg: dict, w: dict) -> dict:
    """The Hugging Face Llama state dict (numpy float32) of a llama2.c checkpoint."""
    Hq, Hkv = cfg["n_heads"], cfg["n_kv_heads"]
    sd = {"model.embed_tokens.weight": w["emb"], "model.norm.weight": w["rms_final"],
          "lm_head.weight": w["wcls"]}
    for l in range(cfg["n_layers"]):
        p = "model.layers.%d." % l
        sd[p + "input_layernorm.weight"] = w["rms_att"][l]
        sd[p + "self_attn.q_proj.weight"] = permute_rotary(w["wq"][l], Hq)
        sd[p + "self_attn.k_proj.weight"] = permute_rotary(w["wk"][l], Hkv)
        sd[p + "self_attn.v_proj.weight"] = w["wv"][l]
        sd[p + "self_attn.o_proj.weight"] = w["wo"][l]
        sd[p + "post_attention_layernorm.weight"] = w["rms_ffn"][l]
        sd[p + "mlp.gate_proj.weight"] = w["w1"][l]
        sd[p + "mlp.down_proj.weight"] = w["w2"][l]
        sd[p + "mlp.up_proj.weight"] = w["w3"][l]
    return sd


def load_llama2c(path: str, dtype: Any = None, attn_implementation: str = "eager") -> Any:
    """A ``LlamaForCausalLM`` with the checkpoint's weights (float32 unless ``dtype``), in eval
    mode. ``attn_implementation``: "eager" (kvpress's ObservedAttentionPress needs it) or
    "sdpa"."""
    import torch
    from transformers import LlamaForCausalLM
    cfg, w = read_checkpoint(path)
    conf = hf_config(cfg)
    conf._attn_implementation = attn_implementation
    model = LlamaForCausalLM(conf)
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in hf_state_dict(cfg, w).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "rotary_emb" not in k]
    if missing or unexpected:
        raise ValueError("state dict mismatch: missing %s, unexpected %s" % (missing, unexpected))
    model.tie_weights()
    if dtype is not None:
        model = model.to(dtype)
    model.generation_config.pad_token_id = EOS
    return model.eval()


def _tokenizer_base() -> Any:
    try:
        from transformers.tokenization_python import PythonBackend as Base   # transformers 5
    except ImportError:
        from transformers import PreTrainedTokenizer as Base                 # transformers 4
    return Base


def Tok512Tokenizer(path: str, **kw: Any) -> Any:
    """kvcc's tokenizer (llama2.c tokenizer.bin) as a Hugging Face slow tokenizer, so that
    kvpress's ``kv-press-text-generation`` pipeline can use it: ``encode`` is
    :meth:`kvcc.tokenizer.Tokenizer.encode` (BOS is the special token ``"\\n<s>\\n"``), ``decode``
    joins the pieces' bytes. A factory (the class is built on first use, so that importing this
    module does not import transformers)."""
    return _tok_class()(path, **kw)


_TOK_CLASS: Optional[type] = None


def _tok_class() -> type:
    global _TOK_CLASS
    if _TOK_CLASS is not None:
        return _TOK_CLASS
    Base = _tokenizer_base()

    class _Tok512(Base):
        vocab_files_names = {"vocab_file": "tokenizer.bin"}
        model_input_names = ["input_ids", "attention_mask"]

        def __init__(self, vocab_file: str, **kwargs: Any):
            self.kt = Tokenizer(vocab_file)
            self.vocab_file = vocab_file
            self._str = [p.decode("latin-1") for p in self.kt.pieces]
            self._ids = {}
            for i, s in enumerate(self._str):
                self._ids.setdefault(s, i)
            kwargs.setdefault("bos_token", self._str[BOS])
            kwargs.setdefault("eos_token", self._str[EOS])
            kwargs.setdefault("unk_token", self._str[0])
            kwargs.setdefault("model_max_length", 512)
            kwargs.setdefault("clean_up_tokenization_spaces", False)
            super().__init__(**kwargs)

        @property
        def vocab_size(self) -> int:
            return self.kt.vocab_size

        def get_vocab(self) -> dict:
            return dict(self._ids)

        def _tokenize(self, text: str, **kwargs: Any) -> list:
            return [self._str[i] for i in self.kt.encode(text, bos=False)]

        def _convert_token_to_id(self, token: str) -> int:
            return self._ids.get(token, 0)

        def _convert_id_to_token(self, index: int) -> str:
            return self._str[index]

        def convert_tokens_to_string(self, tokens: list) -> str:
            out = []
            for t in tokens:
                m = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", t)
                out.append(bytes([int(m.group(1), 16)]) if m else t.encode("latin-1"))
            return b"".join(out).decode("utf-8", "replace")

        def build_inputs_with_special_tokens(self, a: list, b: Optional[list] = None) -> list:
            return [BOS] + a + (b or [])

        def save_vocabulary(self, save_directory: str, filename_prefix: Optional[str] = None) -> tuple:
            import os
            import shutil
            out = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "tokenizer.bin")
            shutil.copyfile(self.vocab_file, out)
            return (out,)

    _TOK_CLASS = _Tok512
    return _TOK_CLASS


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kvcc.models.llama2c",
                                 description="Convert a llama2.c checkpoint to a Hugging Face LlamaForCausalLM "
                                             "directory (save_pretrained).")
    ap.add_argument("checkpoint")
    ap.add_argument("out_dir")
    ap.add_argument("--tokenizer", help="llama2.c tokenizer.bin, saved beside the model")
    a = ap.parse_args(argv)
    model = load_llama2c(a.checkpoint)
    model.save_pretrained(a.out_dir)
    if a.tokenizer:
        Tok512Tokenizer(a.tokenizer).save_pretrained(a.out_dir)
    print("wrote %s (%d parameters)" % (a.out_dir, sum(p.numel() for p in model.parameters())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
