#!/usr/bin/env python3
"""Reference tensors and config of the real SmolLM2-135M-Instruct GGUF, as transformers loads it.

Run from the repository root with the reference stack (torch 2.15, transformers 5.24, gguf 0.19;
scripts/golden/requirements.txt plus `gguf`), once assets/SmolLM2-135M-Instruct/ holds the file:

    python scripts/golden/make_smollm2_tensors.py [--gguf assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf]

transformers dequantizes the file to fp32 (`AutoModelForCausalLM.from_pretrained(dir,
gguf_file=name, dtype=torch.float32)`, about 40 s) and undoes llama.cpp's Q/K row permutation.
For a handful of tensors this records, into tests/fixtures/smollm2/tensors.json, under their
Hugging Face names: the shape, the sum, the sum of squares, a position-weighted sum
(sum of w[i] * (1 + (i mod 1000) / 1000) over the flattened tensor, which a row permutation changes),
the first 8 values and the first 4 values of rows 1, 2, 33 and the last row (those it has) (all sums in float64).
It also records transformers' config (`to_diff_dict()`), the model's state_dict keys and the
file's sha256.
`embed_tokens` is recorded for its rows 0..3 only, as `model.embed_tokens.weight[0:4]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

DEFAULT = Path("assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = Path("tests/fixtures/smollm2/tensors.json")

NAMES = [
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.k_proj.weight",
    "model.layers.0.self_attn.v_proj.weight",
    "model.layers.0.self_attn.o_proj.weight",
    "model.layers.0.mlp.gate_proj.weight",
    "model.layers.0.mlp.up_proj.weight",
    "model.layers.0.mlp.down_proj.weight",
    "model.layers.0.input_layernorm.weight",
    "model.layers.0.post_attention_layernorm.weight",
    "model.norm.weight",
    "model.layers.29.self_attn.q_proj.weight",
    "model.layers.29.self_attn.k_proj.weight",
]


def stats(t: np.ndarray) -> dict:
    flat = t.astype(np.float64).ravel()
    weights = 1.0 + (np.arange(flat.size) % 1000) / 1000.0
    rows = {}
    if t.ndim == 2:
        for r in sorted({r for r in (1, 2, 33, t.shape[0] - 1) if r < t.shape[0]}):
            rows[str(r)] = t[r, :4].astype(float).tolist()
    return {
        "shape": list(t.shape),
        "sum": float(flat.sum()),
        "sum_sq": float((flat * flat).sum()),
        "weighted_sum": float((flat * weights).sum()),
        "first8": t.ravel()[:8].astype(float).tolist(),
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=DEFAULT)
    args = ap.parse_args()
    folder, name = str(args.gguf.parent), args.gguf.name
    sha = hashlib.sha256(args.gguf.read_bytes()).hexdigest()

    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    tensors = {n: stats(state[n]) for n in NAMES}
    tensors["model.embed_tokens.weight[0:4]"] = stats(state["model.embed_tokens.weight"][0:4])
    out = {
        "source": f"{name} sha256 {sha}",
        "made_by": f"scripts/golden/make_smollm2_tensors.py, transformers {transformers.__version__}, torch {torch.__version__}",
        "config": config.to_diff_dict(),
        "state_dict_keys": sorted(state),
        "tensors": tensors,
    }
    out["config"].pop("transformers_version", None)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT} ({len(tensors)} tensors)")


if __name__ == "__main__":
    main()
