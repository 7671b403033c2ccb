#!/usr/bin/env python3
"""The PyTorch + PEFT peer of a results/lora-family row, on the protocol of
../shared/reference/pytorch-reference.md: all-MiniLM-L6-v2 loaded as DistilBERT (token type 0
folded into the positions, pooler dropped) with DistilBertForSequenceClassification's fresh head
(normal(0, 0.02), under torch.manual_seed(123)), the Rotten Tomatoes reference split, max length
128 with dynamic padding, Adam lr 5e-5, batch 12 shuffled with drop_last, 3 epochs, the
best-validation checkpoint, model dropouts on; train accuracy in eval mode over the whole train
split; plus the 1,000 UCI IMDb sentences.

Row ``dora-seed-best``: PEFT's DoRA (LoraConfig(use_dora=True)) at the seed's LoRA-best setting:
r 8 on q_lin, v_lin, lin1, lin2, scale 1 (the seed's alpha = 1: lora_alpha = alpha·r = 8), A as
the seed initialises it (randn(in, r) / √r, so lora_A.weight = Aᵀ), B = 0, the head frozen;
lora_magnitude_vector starts at ‖W‖ per row, as PEFT computes it.

    /work/venv/bin/python scripts/torch_lora_family.py --out results/lora-family/torch-dora-seed-best.json
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import platform
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

import peft
import transformers
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

ASSETS = Path("assets")
MINILM = ASSETS / "all-MiniLM-L6-v2"
SPLIT = ASSETS / "rotten-tomatoes" / "split"
UCI = ASSETS / "imdb-uci" / "imdb_uci.csv"


def read(path: Path) -> tuple[list[str], list[int]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


def minilm_as_distilbert() -> DistilBertForSequenceClassification:
    b = json.loads((MINILM / "config.json").read_text())
    cfg = DistilBertConfig(
        vocab_size=b["vocab_size"], dim=b["hidden_size"], n_layers=b["num_hidden_layers"], n_heads=b["num_attention_heads"],
        hidden_dim=b["intermediate_size"], max_position_embeddings=b["max_position_embeddings"], dropout=0.1,
        attention_dropout=0.1, seq_classif_dropout=0.2, activation="gelu", num_labels=2, pad_token_id=0,
    )
    torch.manual_seed(123)
    model = DistilBertForSequenceClassification(cfg)
    w = load_file(MINILM / "model.safetensors")
    sd = {
        "distilbert.embeddings.word_embeddings.weight": w["embeddings.word_embeddings.weight"],
        "distilbert.embeddings.position_embeddings.weight": w["embeddings.position_embeddings.weight"] + w["embeddings.token_type_embeddings.weight"][0][None],
        "distilbert.embeddings.LayerNorm.weight": w["embeddings.LayerNorm.weight"],
        "distilbert.embeddings.LayerNorm.bias": w["embeddings.LayerNorm.bias"],
    }
    pairs = {
        "attention.q_lin": "attention.self.query", "attention.k_lin": "attention.self.key", "attention.v_lin": "attention.self.value",
        "attention.out_lin": "attention.output.dense", "sa_layer_norm": "attention.output.LayerNorm", "ffn.lin1": "intermediate.dense",
        "ffn.lin2": "output.dense", "output_layer_norm": "output.LayerNorm",
    }
    for i in range(cfg.n_layers):
        for d, s in pairs.items():
            for wb in ("weight", "bias"):
                sd[f"distilbert.transformer.layer.{i}.{d}.{wb}"] = w[f"encoder.layer.{i}.{s}.{wb}"]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.startswith(("pre_classifier", "classifier")) or "position_ids" in k for k in missing), (missing, unexpected)
    return model


def peft_dora_seed_best(model):
    r, alpha = 8, 1.0
    config = LoraConfig(r=r, lora_alpha=alpha * r, target_modules=["q_lin", "v_lin", "lin1", "lin2"], use_dora=True, lora_dropout=0.0, bias="none", task_type=None)
    pm = get_peft_model(model, config)
    with torch.no_grad():
        for _, m in pm.named_modules():
            if isinstance(m, peft.tuners.lora.LoraLayer):
                a = m.lora_A["default"].weight  # [r, in]
                a.copy_((torch.randn(a.shape[1], r) / math.sqrt(r)).t())
    return pm, "DoRA at the seed's LoRA best (r 8, scale 1, q+v+mlp, seed's A init)"


@torch.no_grad()
def accuracy(model, tok, texts, labels, batch=64) -> float:
    model.eval()
    right = 0
    for i in range(0, len(texts), batch):
        enc = tok(texts[i : i + batch], truncation=True, max_length=128, padding=True, return_tensors="pt")
        pred = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.argmax(-1)
        right += (pred == torch.tensor(labels[i : i + batch])).sum().item()
    return right / len(texts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(MINILM)
    train, val, test, uci = (read(SPLIT / "train.csv"), read(SPLIT / "val.csv"), read(SPLIT / "test.csv"), read(UCI))
    model, what = peft_dora_seed_best(minilm_as_distilbert())
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    opt = torch.optim.Adam(trainable, lr=5e-5)
    g = torch.Generator().manual_seed(123)
    loader = DataLoader(list(zip(*train)), batch_size=12, shuffle=True, drop_last=True, generator=g, collate_fn=lambda b: list(zip(*b)))
    best, best_val, best_epoch, train_s, seen, history = None, -1.0, 0, 0.0, 0, []
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        for texts, labels in loader:
            enc = tok(list(texts), truncation=True, max_length=128, padding=True, return_tensors="pt")
            loss = torch.nn.functional.cross_entropy(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits, torch.tensor(labels))
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(labels)
        train_s += time.perf_counter() - t0
        v = accuracy(model, tok, *val)
        history.append({"epoch": epoch, "val_acc": v})
        print(f"epoch {epoch}: val {100 * v:.2f}%", flush=True)
        if v > best_val:
            best_val, best_epoch = v, epoch
            best = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in best:
                p.copy_(best[n])
    result = {
        "what": what,
        "train_acc": accuracy(model, tok, *train),
        "val_acc": accuracy(model, tok, *val),
        "test_acc": accuracy(model, tok, *test),
        "uci_acc": accuracy(model, tok, *uci),
        "best_epoch": best_epoch,
        "history": history,
        "trainable_params": n_trainable,
        "train_seconds": train_s,
        "train_examples_per_s": seen / train_s,
        "wall_seconds": time.perf_counter() - t_start,
        "threads": args.threads,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor()),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
