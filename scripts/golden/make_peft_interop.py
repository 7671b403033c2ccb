#!/usr/bin/env python3
"""PEFT <-> lowrank interoperability: fixtures (PEFT -> lowrank) and a check (lowrank -> PEFT).

Run from the repository root with the reference stack of requirements.txt (torch 2.15,
transformers 5.24, peft 0.21.2; CPU only) and, for part B, a built lowrank binary and the real
model in assets/all-MiniLM-L6-v2 (scripts/fetch-assets.sh) plus the Rotten Tomatoes split:

    .venv-golden/bin/python scripts/golden/make_peft_interop.py            # both parts
    .venv-golden/bin/python scripts/golden/make_peft_interop.py --part a   # fixtures only (seconds)
    .venv-golden/bin/python scripts/golden/make_peft_interop.py --part b \\
        --binary target/release/lowrank --rt /work/shared/reference/rt-split

Part A (committed fixtures, used by a Rust test) writes, for each case in ``CASES``, a folder
tests/fixtures/peft/<case>/ written by ``PeftModel.save_pretrained`` (adapter_config.json +
adapter_model.safetensors; the generated README.md model card is removed) on the tiny random
models tests/fixtures/golden/tiny-{distilbert,bert}, plus ``expected.safetensors``:

    input_ids      int64   [4, 12]  lengths [9, 5, 12, 3], first token 2, ids in [5, 100), pads 0
    attention_mask int64   [4, 12]
    logits         float32 [4, K]   the PeftModel in eval mode (token types all 0)
    base_logits    float32 [4, K]   the plain base model (the adapter must change them: > 0.1)

Every lora_A and lora_B is overwritten with N(0, 0.3^2) values and modules_to_save copies are
perturbed, so that the adapter matters. When a lowrank binary is found, part A also checks that
``lowrank predict --adapter tests/fixtures/peft/<case>`` reproduces PEFT's logits (through a
throw-away copy of the tiny model with a synthetic vocab.txt: token "w<i>" has id i).

Part B (a check; writes tests/fixtures/peft/interop-report.json) trains tiny
lowrank runs on all-MiniLM-L6-v2 in a temporary folder, then for six fixed texts compares
``lowrank predict --adapter RUN/adapter`` logits with (1) PEFT: ``PeftModel.from_pretrained(
BertForSequenceClassification(all-MiniLM-L6-v2), RUN/adapter)`` and (2) transformers:
``AutoModelForSequenceClassification.from_pretrained(lowrank merge output)``. Tolerance 1e-5.
For the DistilBERT-head run, PEFT is applied to a DistilBertForSequenceClassification that this
script converts from the BERT checkpoint itself (token_type_embeddings[0] folded into the position
embeddings), independently of lowrank's conversion. Errors are recorded verbatim, not worked around.

For every run whose adapter PEFT loaded and checked, part B also records the exact files PEFT
loaded, in tests/fixtures/peft/lowrank-made/<run>/ (adapter_model.safetensors, adapter_config.json,
labels.json, lowrank.json) with expected.json (the training arguments, PEFT's logits on the six
texts, and the CPU features and thread count lowrank ran with). tests/peft_interop.rs keeps this
honest in CI without torch: it trains the same runs again with lowrank (same data, seed and
threads), compares the regenerated files with the recorded ones (bytes, when the CPU features
match; tensors within 1e-6 otherwise) and lowrank's logits with PEFT's (< 1e-5). When lowrank's
adapter writer or its numerics change, that test fails until this script is run again, so what
PEFT checked is always what lowrank writes.

Everything is deterministic (fixed seeds, CPU, eager attention, one thread).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import transformers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

import peft
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_golden  # noqa: E402  (the golden fixtures' batch)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path("tests/fixtures/golden")  # relative: it ends up in base_model_name_or_path
OUT = Path("tests/fixtures/peft")
REPORT = OUT / "interop-report.json"
MINILM = Path("assets/all-MiniLM-L6-v2")

BATCH, SEQ = make_golden.BATCH, make_golden.SEQ
LENGTHS = make_golden.LENGTHS
TOL = 1e-5
MIN_ADAPTER_EFFECT = 0.1

torch.set_default_dtype(torch.float32)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


# --------------------------------------------------------------------------------------
# Part A: PEFT -> lowrank fixtures
# --------------------------------------------------------------------------------------
CASES = {
    "distilbert-qv": dict(
        base="tiny-distilbert",
        config=dict(r=4, lora_alpha=8, target_modules=["q_lin", "v_lin"], task_type="SEQ_CLS"),
        seed=101,
    ),
    "bert-all": dict(
        base="tiny-bert",
        config=dict(r=2, lora_alpha=4, target_modules=["query", "key", "value", "dense"], modules_to_save=["classifier"]),
        seed=202,
    ),
    "bert-rslora": dict(
        base="tiny-bert",
        config=dict(r=4, lora_alpha=4, use_rslora=True, target_modules=["query", "value"]),
        seed=303,
    ),
}


def make_inputs() -> dict[str, torch.Tensor]:
    """The golden fixtures' batch (make_golden.make_inputs), without token types."""
    inputs = make_golden.make_inputs()
    return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}


def load_tiny(name: str) -> nn.Module:
    cls = DistilBertForSequenceClassification if "distil" in name else BertForSequenceClassification
    m = cls.from_pretrained(GOLDEN / name, attn_implementation="eager").float().eval()
    on_disk = load_file(GOLDEN / name / "model.safetensors")
    for k, v in m.state_dict().items():
        assert torch.equal(on_disk[k], v), f"{name}: {k} differs after from_pretrained"
    return m


def lora_layers(pm) -> dict[str, LoraLayer]:
    prefix = "base_model.model."
    return {n[len(prefix):]: m for n, m in pm.named_modules() if isinstance(m, LoraLayer)}


def randomise_adapter(pm, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in sorted(lora_layers(pm).items()):
            for w in (m.lora_A["default"].weight, m.lora_B["default"].weight):
                w.copy_(0.3 * torch.randn(w.shape, generator=g))
        for name, m in sorted(pm.named_modules()):
            if type(m).__name__ == "ModulesToSaveWrapper":
                for _, p in sorted(m.modules_to_save["default"].named_parameters()):
                    p.add_(0.3 * torch.randn(p.shape, generator=g))


@torch.no_grad()
def logits_of(model, inputs) -> torch.Tensor:
    return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.detach().float().contiguous()


def make_case(name: str, spec: dict, inputs) -> dict:
    base = load_tiny(spec["base"])
    base_logits = logits_of(base, inputs)
    torch.manual_seed(spec["seed"])
    pm = get_peft_model(base, LoraConfig(lora_dropout=0.0, bias="none", **spec["config"]))
    randomise_adapter(pm, spec["seed"] + 1)
    pm.eval()
    logits = logits_of(pm, inputs)
    folder = OUT / name
    if folder.exists():
        shutil.rmtree(folder)
    pm.save_pretrained(folder)
    (folder / "README.md").unlink(missing_ok=True)
    # PEFT writes target_modules / modules_to_save from Python sets (order varies per run): sort them.
    cfg_path = folder / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("target_modules", "modules_to_save"):
        if isinstance(cfg.get(key), list):
            cfg[key] = sorted(cfg[key])
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    save_file(
        {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "logits": logits, "base_logits": base_logits},
        folder / "expected.safetensors",
    )
    # Reload from disk with PEFT itself: the saved adapter must reproduce the logits exactly.
    re = PeftModel.from_pretrained(load_tiny(spec["base"]), folder).eval()
    again = logits_of(re, inputs)
    assert torch.equal(again, logits), (name, (again - logits).abs().max())
    effect = (logits - base_logits).abs().max().item()
    assert effect > MIN_ADAPTER_EFFECT, f"{name}: the adapter barely changes the logits ({effect})"
    layers = sorted(lora_layers(pm))
    saved = sorted(load_file(folder / "adapter_model.safetensors"))
    return {
        "case": name,
        "base": str(GOLDEN / spec["base"]),
        "lora_modules": layers,
        "modules_to_save": sorted(pm.modules_to_save or []),
        "tensors": saved,
        "scaling": {k: v.scaling["default"] for k, v in lora_layers(pm).items()}[layers[0]],
        "max_abs_logits_minus_base": effect,
        "num_labels": logits.shape[1],
    }


def part_a(binary: Path | None) -> list[dict]:
    OUT.mkdir(parents=True, exist_ok=True)
    inputs = make_inputs()
    results = []
    print("Part A: PEFT -> lowrank fixtures")
    for name, spec in CASES.items():
        r = make_case(name, spec, inputs)
        if binary is not None:
            r["lowrank_predict"] = check_fixture_with_lowrank(binary, name, spec, inputs)
        results.append(r)
        lp = r.get("lowrank_predict", {})
        extra = f"  lowrank predict max|diff| {lp.get('max_abs_diff', float('nan')):.3g} ({'PASS' if lp.get('pass') else 'FAIL: ' + str(lp.get('error'))})" if lp else ""
        print(f"  {name:14s} {len(r['lora_modules']):2d} LoRA modules, modules_to_save {r['modules_to_save']}, "
              f"scale {r['scaling']:.4g}, max|logits - base_logits| = {r['max_abs_logits_minus_base']:.4f}{extra}")
    return results


def check_fixture_with_lowrank(binary: Path, name: str, spec: dict, inputs) -> dict:
    """lowrank predict on the committed adapter vs PEFT, through a synthetic vocabulary."""
    with tempfile.TemporaryDirectory(prefix="lowrank-peft-a-") as tmp:
        model_dir = Path(tmp) / spec["base"]
        shutil.copytree(GOLDEN / spec["base"], model_dir)
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, 100)]
        (model_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
        texts, rows = [], []
        for i, n in enumerate(LENGTHS):
            ids = inputs["input_ids"][i, 1:n].tolist()
            texts.append(" ".join(f"w{t}" for t in ids))
            rows.append([2] + ids + [3])
        width = max(map(len, rows))
        ids = torch.zeros(len(rows), width, dtype=torch.int64)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        pm = PeftModel.from_pretrained(load_tiny(spec["base"]), OUT / name).eval()
        want = logits_of(pm, {"input_ids": ids, "attention_mask": mask})
        try:
            got = torch.tensor(lowrank_predict(binary, model_dir, OUT / name, texts))
        except Exception as e:  # noqa: BLE001 - reported verbatim
            return {"pass": False, "error": str(e)}
        diff = (got - want).abs().max().item()
        return {"max_abs_diff": diff, "pass": diff < TOL}


# --------------------------------------------------------------------------------------
# Part B: lowrank -> PEFT, merged models -> transformers
# --------------------------------------------------------------------------------------
COMMON = ["--limit-train", "48", "--epochs", "1", "--batch-size", "12", "--max-length", "64", "--lr", "1e-3", "--checkpoint-every", "1000",
          "--threads", "2"]
FIXED = OUT / "lowrank-made"
RECORDED = ("adapter_model.safetensors", "adapter_config.json", "labels.json", "lowrank.json")


def cpu_features() -> list[str]:
    """The x86 vector features that change lowrank's floating-point results (its kernels dispatch on them)."""
    try:
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_bf16"))


def record_fixture(spec: dict, adapter: Path, peft_logits: list, lowrank_logits: list, diff: float) -> None:
    """The files PEFT loaded and checked, and what it computed from them."""
    folder = FIXED / spec["name"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for f in RECORDED:
        shutil.copy(adapter / f, folder / f)
    (folder / "expected.json").write_text(json.dumps({
        "train_args": spec["args"] + COMMON,
        "data": {"train": "rotten-tomatoes split train.csv", "val": "its first 50 rows of val.csv", "test": "its first 50 rows of test.csv"},
        "texts": TEXTS,
        "peft_logits": peft_logits,
        "lowrank_logits": lowrank_logits,
        "peft_max_abs_diff": diff,
        "cpu_features": cpu_features(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }, indent=2, ensure_ascii=False) + "\n")

RUNS = [
    dict(name="bert-lora-raschka-qv", head="bert", args=["--head", "bert"]),
    dict(name="bert-lora-peft-qv-mlp-head", head="bert",
         args=["--head", "bert", "--scaling", "peft", "--lora-r", "4", "--lora-alpha", "8",
               "--lora-query", "--lora-value", "--lora-mlp", "--lora-head"]),
    dict(name="bert-last-layers", head="bert", args=["--head", "bert", "--mode", "last-layers"]),
    dict(name="distilbert-lora-raschka-qv", head="distilbert", args=["--head", "distilbert"]),
    dict(name="bert-lora-rslora-qkv", head="bert",
         args=["--head", "bert", "--scaling", "rslora", "--lora-r", "4", "--lora-alpha", "8",
               "--target-modules", "query,key,value", "--modules-to-save", "classifier"]),
]

TEXTS = [
    "A gorgeous, witty, seductive movie.",
    "The plot is paper-thin and the acting is even worse; I checked my watch three times.",
    "Not bad.",
    "An utterly forgettable sequel that nobody asked for, padded out with CGI explosions and jokes that land with a thud.",
    "Émile's performance -- quiet, precise and DEVASTATING -- holds the whole thing together (mostly).",
    "It starts slowly, and for the first forty minutes you may wonder where it is going, but the director "
    "knows exactly what she is doing: every scene pays off later, the cast is uniformly excellent, the score "
    "never tells you what to feel, and by the final shot the film has quietly become one of the most moving "
    "portraits of a family I have seen in years. Bring tissues, and stay through the credits.",
]


def lowrank_predict(binary: Path, model: Path, adapter: Path | None, texts: list[str]) -> list[list[float]]:
    cmd = [str(binary), "predict", "--model", str(model), "--json"]
    if adapter is not None:
        cmd += ["--adapter", str(adapter)]
    for t in texts:
        cmd += ["--text", t]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[:6])} ...` exited {p.returncode}: {p.stderr.strip()}")
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.strip().startswith("{")]
    assert [r["text"] for r in rows] == texts, "predict returned other texts"
    return [r["logits"] for r in rows]


def run_cmd(cmd: list[str]) -> None:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(map(str, cmd))}` exited {p.returncode}:\n{p.stderr.strip()[-3000:]}")


def subset_csv(src: Path, dst: Path, n: int) -> None:
    with open(src, newline="") as f:
        reader = csv.DictReader(f)
        rows = [row for _, row in zip(range(n), reader)]
        fields = reader.fieldnames
    with open(dst, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def encode(tok_dir: Path, texts: list[str], with_token_types: bool) -> list[dict]:
    tok = AutoTokenizer.from_pretrained(tok_dir)
    out = []
    for t in texts:
        enc = tok(t, truncation=True, max_length=512, return_tensors="pt")
        d = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if with_token_types:
            d["token_type_ids"] = enc.get("token_type_ids", torch.zeros_like(enc["input_ids"]))
        out.append(d)
    return out


@torch.no_grad()
def hf_logits(model, encs: list[dict]) -> torch.Tensor:
    return torch.cat([model(**e).logits.float() for e in encs])


def error_text(e: BaseException) -> str:
    last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" (at {Path(last.filename).name}:{last.lineno} in {last.name})" if last else ""
    return f"{type(e).__name__}: {e}{where}"


def lora_effect(pm, encs) -> float | None:
    """max |logits - logits with every LoRA scaling set to 0| (modules_to_save kept)."""
    layers = list(lora_layers(pm).values())
    if not layers:
        return None
    full = hf_logits(pm, encs)
    saved = [dict(m.scaling) for m in layers]
    for m in layers:
        for k in m.scaling:
            m.scaling[k] = 0.0
    off = hf_logits(pm, encs)
    for m, s in zip(layers, saved):
        m.scaling.update(s)
    return (full - off).abs().max().item()


def check_loaded_state(pm, adapter_dir: Path) -> str | None:
    """Every tensor of the adapter file must be in the PeftModel, unchanged."""
    want = load_file(adapter_dir / "adapter_model.safetensors")
    have = get_peft_model_state_dict(pm, save_embedding_layers=False)
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    differ = sorted(k for k in set(want) & set(have) if not torch.equal(want[k], have[k].float()))
    if missing or extra or differ:
        return f"adapter tensors not loaded as written: missing {missing[:5]}, unexpected {extra[:5]}, different {differ[:5]}"
    return None


def bert_to_distilbert(base_dir: Path, num_labels: int) -> DistilBertForSequenceClassification:
    """This script's own conversion of the BERT checkpoint to DistilBERT form (fresh head)."""
    cfg = json.loads((base_dir / "config.json").read_text())
    dcfg = DistilBertConfig(
        vocab_size=cfg["vocab_size"], dim=cfg["hidden_size"], n_layers=cfg["num_hidden_layers"], n_heads=cfg["num_attention_heads"],
        hidden_dim=cfg["intermediate_size"], max_position_embeddings=cfg["max_position_embeddings"], activation=cfg["hidden_act"],
        pad_token_id=cfg.get("pad_token_id", 0), num_labels=num_labels, attn_implementation="eager",
    )
    assert abs(cfg.get("layer_norm_eps", 1e-12) - 1e-12) < 1e-15, "DistilBERT's LayerNorm eps is fixed at 1e-12"
    sd = load_file(base_dir / "model.safetensors")
    sd = {k.removeprefix("bert."): v for k, v in sd.items()}
    new = {
        "distilbert.embeddings.word_embeddings.weight": sd["embeddings.word_embeddings.weight"],
        "distilbert.embeddings.position_embeddings.weight": sd["embeddings.position_embeddings.weight"] + sd["embeddings.token_type_embeddings.weight"][0],
        "distilbert.embeddings.LayerNorm.weight": sd["embeddings.LayerNorm.weight"],
        "distilbert.embeddings.LayerNorm.bias": sd["embeddings.LayerNorm.bias"],
    }
    names = {
        "attention.self.query": "attention.q_lin", "attention.self.key": "attention.k_lin", "attention.self.value": "attention.v_lin",
        "attention.output.dense": "attention.out_lin", "attention.output.LayerNorm": "sa_layer_norm",
        "intermediate.dense": "ffn.lin1", "output.dense": "ffn.lin2", "output.LayerNorm": "output_layer_norm",
    }
    for i in range(cfg["num_hidden_layers"]):
        for src, dst in names.items():
            for p in ("weight", "bias"):
                new[f"distilbert.transformer.layer.{i}.{dst}.{p}"] = sd[f"encoder.layer.{i}.{src}.{p}"]
    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(dcfg)
    missing, unexpected = model.load_state_dict(new, strict=False)
    assert not unexpected, unexpected
    assert sorted(missing) == ["classifier.bias", "classifier.weight", "pre_classifier.bias", "pre_classifier.weight"], missing
    return model.float().eval()


def adapter_summary(adapter: Path) -> dict:
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    tm = cfg.get("target_modules")
    return {
        "r": cfg.get("r"),
        "lora_alpha": cfg.get("lora_alpha"),
        "use_rslora": cfg.get("use_rslora"),
        "peft_scale": (cfg["lora_alpha"] / (math.sqrt(cfg["r"]) if cfg.get("use_rslora") else cfg["r"])) if tm else None,
        "target_modules": len(tm) if isinstance(tm, list) else tm,
        "target_modules_first": tm[:3] if isinstance(tm, list) else None,
        "modules_to_save": cfg.get("modules_to_save"),
        "task_type": cfg.get("task_type"),
        "lowrank": cfg.get("lowrank"),
        "tensors": len(load_file(adapter / "adapter_model.safetensors")),
    }


def check_run(binary: Path, tmp: Path, rt: Path, spec: dict) -> dict:
    run_dir = tmp / spec["name"]
    res: dict = {"name": spec["name"], "head": spec["head"], "train_args": spec["args"] + COMMON}
    try:
        run_cmd([binary, "train", "--model", MINILM, "--train", rt / "train.csv", "--val", tmp / "val.csv", "--test", tmp / "test.csv",
                 *spec["args"], *COMMON, "--out", run_dir])
    except Exception as e:  # noqa: BLE001
        res.update(train_error=error_text(e), passed=False)
        return res
    adapter = run_dir / "adapter"
    res["adapter"] = adapter_summary(adapter)
    num_labels = len(json.loads((adapter / "labels.json").read_text()))
    try:
        want = torch.tensor(lowrank_predict(binary, MINILM, adapter, TEXTS))
    except Exception as e:  # noqa: BLE001
        res.update(train_error=f"lowrank predict: {error_text(e)}", passed=False)
        return res
    res["lowrank_logits"] = want.tolist()

    # (1) PEFT loads lowrank's adapter.
    peft_res: dict = {}
    try:
        if spec["head"] == "bert":
            base = BertForSequenceClassification.from_pretrained(MINILM, num_labels=num_labels, attn_implementation="eager").float().eval()
            peft_res["base"] = "BertForSequenceClassification.from_pretrained(all-MiniLM-L6-v2)"
        else:
            base = bert_to_distilbert(MINILM, num_labels)
            peft_res["base"] = "DistilBertForSequenceClassification converted from all-MiniLM-L6-v2 by this script"
        pm = PeftModel.from_pretrained(base, adapter).eval()
        bad = check_loaded_state(pm, adapter)
        encs = encode(adapter, TEXTS, with_token_types=spec["head"] == "bert")
        got = hf_logits(pm, encs)
        peft_res["max_abs_diff"] = (got - want).abs().max().item()
        peft_res["lora_effect"] = lora_effect(pm, encs)
        peft_res["passed"] = peft_res["max_abs_diff"] < TOL and bad is None
        if bad:
            peft_res["error"] = bad
        if peft_res["passed"]:
            record_fixture(spec, adapter, got.tolist(), want.tolist(), peft_res["max_abs_diff"])
    except Exception as e:  # noqa: BLE001
        peft_res.update(passed=False, error=error_text(e))
    res["peft_load"] = peft_res

    # (2) transformers loads lowrank's merged model.
    merged_res: dict = {}
    merged = run_dir / "merged"
    try:
        run_cmd([binary, "merge", "--model", MINILM, "--adapter", adapter, "--out", merged])
        model, info = AutoModelForSequenceClassification.from_pretrained(merged, attn_implementation="eager", output_loading_info=True)
        model = model.float().eval()
        merged_res["class"] = type(model).__name__
        problems = {k: sorted(v) for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        encs = encode(merged, TEXTS, with_token_types=spec["head"] == "bert")
        got = hf_logits(model, encs)
        merged_res["max_abs_diff"] = (got - want).abs().max().item()
        merged_res["passed"] = merged_res["max_abs_diff"] < TOL and not problems
        if problems:
            merged_res["error"] = f"loading info: {problems}"
    except Exception as e:  # noqa: BLE001
        merged_res.update(passed=False, error=error_text(e))
    res["merged"] = merged_res
    res["passed"] = bool(peft_res.get("passed")) and bool(merged_res.get("passed"))
    return res


def lowrank_version(binary: Path) -> str:
    try:
        return subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()
    except OSError as e:
        return f"unavailable: {e}"


def part_b(binary: Path, rt: Path, keep: bool, fixtures: list[dict] | None) -> dict:
    print("Part B: lowrank -> PEFT and merged -> transformers (all-MiniLM-L6-v2)")
    tmp = Path(tempfile.mkdtemp(prefix="lowrank-peft-b-"))
    try:
        subset_csv(rt / "val.csv", tmp / "val.csv", 50)
        subset_csv(rt / "test.csv", tmp / "test.csv", 50)
        runs = []
        for spec in RUNS:
            r = check_run(binary, tmp, rt, spec)
            runs.append(r)
            print(f"  {r['name']}: {'PASS' if r['passed'] else 'FAIL'}", flush=True)
    finally:
        if keep:
            print(f"  (kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "description": "lowrank <-> PEFT interoperability check (scripts/golden/make_peft_interop.py). For each lowrank run "
        "(tiny training on all-MiniLM-L6-v2), the logits of `lowrank predict --adapter` on six texts are compared with PEFT "
        "loading the adapter (peft_load) and with transformers loading `lowrank merge` output (merged). lora_effect: max "
        "|logits - logits with LoRA scaling 0| in PEFT, i.e. how much the LoRA part matters.",
        "tolerance": TOL,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "lowrank": lowrank_version(binary),
        },
        "texts": TEXTS,
        "runs": runs,
        "all_passed": all(r["passed"] for r in runs),
    }
    if fixtures is not None:
        report["peft_fixtures"] = fixtures
    return report


def fmt(x) -> str:
    return "-" if x is None else (f"{x:.2e}" if isinstance(x, float) else str(x))


def print_table(report: dict) -> None:
    print()
    print(f"{'run':28s} {'head':10s} {'peft-load max|diff|':>20s} {'lora effect':>12s} {'merged max|diff|':>17s}  result")
    for r in report["runs"]:
        p, m = r.get("peft_load", {}), r.get("merged", {})
        print(f"{r['name']:28s} {r['head']:10s} {fmt(p.get('max_abs_diff')):>20s} {fmt(p.get('lora_effect')):>12s} "
              f"{fmt(m.get('max_abs_diff')):>17s}  {'PASS' if r['passed'] else 'FAIL'}")
        for what, d in (("train", {"error": r.get("train_error")}), ("peft-load", p), ("merged", m)):
            if d.get("error"):
                print(f"    {what} error: {d['error']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["a", "b", "all"], default="all")
    ap.add_argument("--binary", type=Path, default=Path(os.environ.get("LOWRANK_BIN", "target/release/lowrank")),
                    help="the lowrank binary (default: $LOWRANK_BIN or target/release/lowrank)")
    ap.add_argument("--rt", type=Path, default=Path(os.environ.get("RT_SPLIT", "/work/shared/reference/rt-split")),
                    help="folder with the Rotten Tomatoes train/val/test.csv")
    ap.add_argument("--keep-tmp", action="store_true", help="keep part B's temporary runs")
    args = ap.parse_args()
    os.chdir(ROOT)
    binary = args.binary.resolve() if args.binary.exists() else None
    fixtures = None
    if args.part in ("a", "all"):
        fixtures = part_a(binary)
    if args.part in ("b", "all"):
        if binary is None:
            print(f"no lowrank binary at {args.binary}: build it (cargo build --release) or pass --binary", file=sys.stderr)
            return 2
        report = part_b(binary, args.rt, args.keep_tmp, fixtures)
        REPORT.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print_table(report)
        print(f"\nwrote {REPORT}")
        return 0 if report["all_passed"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
