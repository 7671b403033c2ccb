#!/usr/bin/env python3
"""Golden fixtures and interop checks for LoRA's family (DoRA, PiSSA, OLoRA, gaussian init,
lora_bias, rank_pattern / alpha_pattern, layers_to_transform, LoRA+), made with PEFT's own
LoraConfig on the tiny random models of make_golden.py.

Run from the repository root with the reference stack (torch 2.15, transformers 5.24, peft 0.21.2;
CPU only):

    .venv-golden/bin/python scripts/golden/make_lora_family.py                 # parts A and B
    .venv-golden/bin/python scripts/golden/make_lora_family.py --part a        # fixtures only
    .venv-golden/bin/python scripts/golden/make_lora_family.py --part b --binary target/release/lowrank

Part A writes under tests/fixtures/lora-family/ (used by tests/lora_family.rs, no torch needed):

* ``golden/<case>.safetensors`` + ``.json``: the golden batch of make_golden.py, and for each LoRA
  module (engine layout: A [in, r], B [r, out]) ``lora.<m>.A`` / ``.B`` / ``.bias`` (lora_B's bias)
  / ``.magnitude`` (DoRA) as the forward used them, ``init.<m>.A`` / ``.B`` / ``.magnitude`` as
  PEFT initialised them, ``residual.<m>.weight`` (the base weight after PiSSA / OLoRA), ``logits``
  and ``loss`` of one eval-mode forward, ``grad.<m>.A`` / ``.B`` / ``.bias`` / ``.magnitude``
  after ``loss.backward()``, ``merged_logits`` (PEFT ``merge(safe_merge=True)``), and for the
  LoRA+ case ``step<k>.<m>.A`` ... after k optimizer steps of ``create_loraplus_optimizer``.
* ``peft/<case>/``: adapters written by ``PeftModel.save_pretrained`` (DoRA, PiSSA as saved by
  default and converted with ``path_initial_model_for_weight_conversion``, OLoRA, patterns with
  lora_bias and layers_to_transform), plus ``expected.safetensors`` (input_ids, attention_mask,
  logits, base_logits).

Part B (a check; writes tests/fixtures/lora-family/interop-report.json) trains tiny lowrank runs
(a built lowrank binary; synthetic texts "w<i>" over a vocab.txt whose token w<i> has id i) with
--dora, --init pissa / olora / pissa_niter_2, patterns + --lora-bias + --layers-to-transform and
LoRA+, and compares ``lowrank predict --adapter RUN/adapter`` with PEFT's
``PeftModel.from_pretrained(base, RUN/adapter)`` and with transformers on ``lowrank merge``'s
folder (tolerance 1e-5).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import peft
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from peft.optimizers import create_loraplus_optimizer
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification, DistilBertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_decoder_golden  # noqa: E402  (the decoder batch and the tiny Llama)
import make_golden  # noqa: E402  (the golden batch and models)

GOLDEN = Path("tests/fixtures/golden")
OUT = Path("tests/fixtures/lora-family")
TOL = 1e-5

torch.set_default_dtype(torch.float32)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

D_LABELS = torch.tensor(make_golden.DISTILBERT_LABELS)
B_LABELS = torch.tensor(make_golden.BERT_LABELS)


def load_tiny(name: str):
    cls = DistilBertForSequenceClassification if "distil" in name else BertForSequenceClassification
    m = cls.from_pretrained(GOLDEN / name, attn_implementation="eager").float().eval()
    on_disk = load_file(GOLDEN / name / "model.safetensors")
    for k, v in m.state_dict().items():
        assert torch.equal(on_disk[k], v), f"{name}: {k} differs after from_pretrained"
    return m


def lora_layers(pm) -> dict[str, LoraLayer]:
    prefix = "base_model.model."
    return {n[len(prefix):]: m for n, m in pm.named_modules() if isinstance(m, LoraLayer)}


def c(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().contiguous().float()


def module_tensors(layers, prefix: str, grads: bool = False) -> dict[str, torch.Tensor]:
    """A [in, r], B [r, out], bias [out], magnitude [out] (or their gradients) per module."""
    out = {}
    for path, m in sorted(layers.items()):
        get = (lambda p: p.grad) if grads else (lambda p: p)
        out[f"{prefix}.{path}.A"] = c(get(m.lora_A["default"].weight).t())
        out[f"{prefix}.{path}.B"] = c(get(m.lora_B["default"].weight).t())
        if m.lora_B["default"].bias is not None:
            out[f"{prefix}.{path}.bias"] = c(get(m.lora_B["default"].bias))
        if m.lora_magnitude_vector and "default" in m.lora_magnitude_vector:
            out[f"{prefix}.{path}.magnitude"] = c(get(m.lora_magnitude_vector["default"].weight))
    return out


def perturb(layers, seed: int, a=False, b=True, bias=True, magnitude=True) -> None:
    """Move the adapter away from its start, as training would (B = 0 would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in sorted(layers.items()):
            if a:
                w = m.lora_A["default"].weight
                w.add_(0.2 * torch.randn(w.shape, generator=g))
            if b:
                w = m.lora_B["default"].weight
                w.add_(0.2 * torch.randn(w.shape, generator=g))
            if bias and m.lora_B["default"].bias is not None:
                bb = m.lora_B["default"].bias
                bb.copy_(0.3 * torch.randn(bb.shape, generator=g))
            if magnitude and m.lora_magnitude_vector and "default" in m.lora_magnitude_vector:
                mv = m.lora_magnitude_vector["default"].weight
                mv.mul_(1.0 + 0.2 * torch.randn(mv.shape, generator=g))


def run(model, inputs, labels, use_tt: bool):
    kw = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    if use_tt:
        kw["token_type_ids"] = inputs["token_type_ids"]
    out = model(**kw)
    loss = F.cross_entropy(out.logits, labels)
    return out.logits, loss


# --------------------------------------------------------------------------------------
# Part A.1: golden parity cases
# --------------------------------------------------------------------------------------
GOLDEN_CASES = {
    "distilbert-dora": dict(base="tiny-distilbert", seed=11, config=dict(r=4, lora_alpha=8, target_modules=["q_lin", "v_lin", "lin1"], use_dora=True)),
    "bert-dora-patterns": dict(
        base="tiny-bert",
        seed=12,
        config=dict(
            r=4,
            lora_alpha=8,
            target_modules=["query", "value", "intermediate.dense"],
            use_dora=True,
            rank_pattern={"query": 2, r"layer\.1\.intermediate\.dense": 6},
            alpha_pattern={"value": 3},
        ),
    ),
    "distilbert-pissa": dict(base="tiny-distilbert", seed=13, config=dict(r=4, lora_alpha=8, target_modules=["q_lin", "k_lin", "out_lin", "lin2"], init_lora_weights="pissa")),
    "bert-olora": dict(base="tiny-bert", seed=14, config=dict(r=4, lora_alpha=8, target_modules=["query", "value", "output.dense"], init_lora_weights="olora")),
    "distilbert-dora-pissa": dict(base="tiny-distilbert", seed=15, config=dict(r=3, lora_alpha=6, target_modules=["v_lin", "lin1"], init_lora_weights="pissa", use_dora=True)),
    "distilbert-lora-bias": dict(base="tiny-distilbert", seed=16, config=dict(r=4, lora_alpha=8, target_modules=["q_lin", "v_lin", "lin2"], lora_bias=True)),
    "bert-gaussian-layers": dict(
        base="tiny-bert",
        seed=17,
        config=dict(r=4, lora_alpha=4, target_modules=["query", "key", "value", "dense"], init_lora_weights="gaussian", layers_to_transform=[1], layers_pattern="layer"),
    ),
    "distilbert-dora-loraplus": dict(
        base="tiny-distilbert", seed=18, config=dict(r=4, lora_alpha=8, target_modules=["q_lin", "v_lin"], use_dora=True), loraplus=dict(lr=1e-2, ratio=8.0, steps=3)
    ),
    # Decoders: the tiny Llama of make_decoder_golden.py (GQA, no biases) with its batch and a fresh
    # 3-class score head; task_type SEQ_CLS, so score trains in full beside the adapter (grad.score.weight).
    "llama-dora-qv-down": dict(base="tiny-llama", seed=19, config=dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], use_dora=True)),
    "llama-pissa-dora-patterns": dict(
        base="tiny-llama",
        seed=20,
        config=dict(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "k_proj", "o_proj", "up_proj"],
            init_lora_weights="pissa",
            use_dora=True,
            rank_pattern={"k_proj": 2},
            alpha_pattern={r"layers\.1\..*": 4},
        ),
    ),
}
DECODER_BASES = {"tiny-llama": "llama"}


def golden_case(name: str, spec: dict, inputs) -> dict:
    decoder = spec["base"] in DECODER_BASES
    if decoder:
        base = make_decoder_golden.load(DECODER_BASES[spec["base"]], "cls", score_seed=spec["seed"] + 2)
        inputs = make_decoder_golden.make_inputs()
        score = c(base.score.weight)
    else:
        base = load_tiny(spec["base"])
    use_tt = spec["base"] == "tiny-bert"
    labels = torch.tensor(make_decoder_golden.CLS_LABELS) if decoder else B_LABELS if use_tt else D_LABELS
    before = {k: v.clone() for k, v in base.state_dict().items()}
    torch.manual_seed(spec["seed"])
    task_type = "SEQ_CLS" if decoder else None
    pm = get_peft_model(base, LoraConfig(lora_dropout=0.0, bias="none", task_type=task_type, **spec["config"]))
    layers = lora_layers(pm)
    tensors = module_tensors(layers, "init")
    if decoder:
        tensors["param.score.weight"] = score
    # The base weight after the init (PiSSA / OLoRA turn it into the residual).
    init = spec["config"].get("init_lora_weights", True)
    for path, m in layers.items():
        w = m.get_base_layer().weight
        if isinstance(init, str) and init in ("pissa", "olora"):
            tensors[f"residual.{path}.weight"] = c(w)
            assert not torch.equal(w, before[f"{path}.weight"]), path
        else:
            assert torch.equal(w, before[f"{path}.weight"]), path
    if init not in ("pissa", "olora"):
        perturb(layers, spec["seed"] + 1)
    elif spec["config"].get("use_dora"):
        perturb(layers, spec["seed"] + 1, b=False)
    pm.eval()
    tensors.update(module_tensors(layers, "lora"))
    meta = {
        "base": spec["base"],
        "head": "score" if decoder else "bert" if use_tt else "distilbert",
        "num_labels": make_decoder_golden.NUM_LABELS if decoder else 2,
        "peft_config": spec["config"],
        "modules": sorted(layers),
        "scales": {p: m.scaling["default"] for p, m in sorted(layers.items())},
        "ranks": {p: m.r["default"] for p, m in sorted(layers.items())},
    }
    if "loraplus" in spec:
        lp = spec["loraplus"]
        opt = create_loraplus_optimizer(pm, torch.optim.Adam, lr=lp["lr"], loraplus_lr_ratio=lp["ratio"])
        for step in range(1, lp["steps"] + 1):
            opt.zero_grad()
            logits, loss = run(pm, inputs, labels, use_tt)
            if step == 1:
                tensors["logits"], tensors["loss"] = c(logits), c(loss.reshape(1))
                loss.backward()
                tensors.update(module_tensors(layers, "grad", grads=True))
            else:
                loss.backward()
            opt.step()
            tensors.update(module_tensors(layers, f"step{step}"))
        meta["loraplus"] = lp
    else:
        logits, loss = run(pm, inputs, labels, use_tt)
        loss.backward()
        tensors["logits"], tensors["loss"] = c(logits), c(loss.reshape(1))
        tensors.update(module_tensors(layers, "grad", grads=True))
    if decoder:
        # modules_to_save's trainable copy of score.
        (w,) = [p_ for n_, p_ in pm.named_parameters() if p_.requires_grad and "score" in n_]
        tensors["grad.score.weight"] = c(w.grad)
    with torch.no_grad():
        for m in layers.values():
            m.merge(safe_merge=True)
        tensors["merged_logits"] = c(run(pm, inputs, labels, use_tt)[0])
    diff = (tensors["merged_logits"] - tensors["logits"]).abs().max().item() if "loraplus" not in spec else float("nan")
    tensors["input_ids"], tensors["attention_mask"], tensors["labels"] = inputs["input_ids"], inputs["attention_mask"], labels
    if use_tt:
        tensors["token_type_ids"] = inputs["token_type_ids"]
    for k, v in tensors.items():
        if k.startswith("grad."):
            assert torch.isfinite(v).all() and v.abs().max() > 1e-5, f"{name}: {k} is (nearly) zero"
    if init == "gaussian":
        a = torch.cat([tensors[f"init.{p}.A"].flatten() for p in layers])
        meta["init_a_std"] = a.std().item()
        assert abs(meta["init_a_std"] - 1 / spec["config"]["r"]) < 0.05, meta["init_a_std"]
    (OUT / "golden").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT / "golden" / f"{name}.safetensors", metadata={"case": name})
    (OUT / "golden" / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"  golden {name:26s} {len(layers)} modules, loss {tensors['loss'].item():.6f}, |merged - unmerged| {diff:.2e}")
    return meta


# --------------------------------------------------------------------------------------
# Part A.2: adapters written by PEFT
# --------------------------------------------------------------------------------------
PEFT_CASES = {
    "distilbert-dora": dict(base="tiny-distilbert", seed=21, config=dict(r=4, lora_alpha=8, target_modules=["q_lin", "v_lin", "lin1"], use_dora=True)),
    "bert-pissa": dict(base="tiny-bert", seed=22, config=dict(r=4, lora_alpha=8, target_modules=["query", "value", "intermediate.dense"], init_lora_weights="pissa")),
    "bert-pissa-converted": dict(
        base="tiny-bert", seed=23, convert=True, config=dict(r=4, lora_alpha=8, target_modules=["query", "value", "intermediate.dense"], init_lora_weights="pissa")
    ),
    "distilbert-olora-dora": dict(base="tiny-distilbert", seed=24, config=dict(r=4, lora_alpha=4, target_modules=["k_lin", "out_lin"], init_lora_weights="olora", use_dora=True)),
    "bert-patterns-bias": dict(
        base="tiny-bert",
        seed=25,
        config=dict(
            r=4,
            lora_alpha=8,
            target_modules=["query", "value", "output.dense"],
            rank_pattern={"query": 2},
            alpha_pattern={r"layer\.1\..*": 2},
            lora_bias=True,
            layers_to_transform=[1],
        ),
    ),
    # The tiny Llama with task_type SEQ_CLS (its fresh score head saved as modules_to_save).
    "llama-dora": dict(base="tiny-llama", seed=26, config=dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj"], use_dora=True)),
}


def peft_case(name: str, spec: dict, inputs) -> dict:
    decoder = spec["base"] in DECODER_BASES
    if decoder:
        inputs = make_decoder_golden.make_inputs()

        def fresh():
            return make_decoder_golden.load(DECODER_BASES[spec["base"]], "cls", score_seed=spec["seed"] + 2)
    else:

        def fresh():
            return load_tiny(spec["base"])

    base_logits = run(fresh(), inputs, D_LABELS, False)[0].detach()
    torch.manual_seed(spec["seed"])
    pm = get_peft_model(fresh(), LoraConfig(lora_dropout=0.0, bias="none", task_type="SEQ_CLS" if decoder else None, **spec["config"]))
    folder = OUT / "peft" / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    init_dir = None
    if spec.get("convert"):
        # PEFT's recipe: save the initial adapter with init_lora_weights=True, then convert against it.
        tmp = Path(tempfile.mkdtemp(prefix="lora-family-init-"))
        init_dir = tmp / "pissa_init"
        pm.peft_config["default"].init_lora_weights = True
        pm.save_pretrained(init_dir)
        pm.peft_config["default"].init_lora_weights = spec["config"]["init_lora_weights"]
    layers = lora_layers(pm)
    perturb(layers, spec["seed"] + 1, a=True)
    pm.eval()
    with torch.no_grad():
        logits = run(pm, inputs, D_LABELS, False)[0].detach().clone()
    if init_dir is not None:
        pm.save_pretrained(folder, path_initial_model_for_weight_conversion=str(init_dir))
        shutil.rmtree(init_dir.parent)
    else:
        pm.save_pretrained(folder)
    (folder / "README.md").unlink(missing_ok=True)
    cfg_path = folder / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("target_modules", "modules_to_save"):
        if isinstance(cfg.get(key), list):
            cfg[key] = sorted(cfg[key])
    # The decoder loader names its folder by an absolute path; the fixture keeps it repo-relative.
    cfg["base_model_name_or_path"] = re.sub(r"^.*/(tests/fixtures/golden/)", r"\1", cfg["base_model_name_or_path"])
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    save_file({"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "logits": c(logits), "base_logits": c(base_logits)}, folder / "expected.safetensors")
    # PEFT itself must reproduce the logits from the folder (PiSSA: by re-running the SVD on load).
    again = PeftModel.from_pretrained(fresh(), folder).eval()
    with torch.no_grad():
        back = run(again, inputs, D_LABELS, False)[0]
    reload_diff = (back - logits).abs().max().item()
    assert reload_diff < 1e-5, (name, reload_diff)
    effect = (logits - base_logits).abs().max().item()
    assert effect > 0.1, (name, effect)
    print(f"  peft   {name:26s} {len(layers)} modules, rank {cfg['r']}, init {cfg['init_lora_weights']}, PEFT reload |diff| {reload_diff:.1e}, effect {effect:.3f}")
    return {"case": name, "modules": sorted(layers), "config": spec["config"], "saved_r": cfg["r"], "reload_diff": reload_diff}


# --------------------------------------------------------------------------------------
# Part B: lowrank -> PEFT and transformers
# --------------------------------------------------------------------------------------
COMMON = ["--epochs", "1", "--batch-size", "8", "--lr", "5e-3", "--checkpoint-every", "1000", "--max-length", "16"]
RUNS = [
    dict(name="distilbert-dora", base="tiny-distilbert", args=["--dora", "--scaling", "peft", "--lora-r", "4", "--lora-alpha", "8", "--target-modules", "q_lin,v_lin,lin1"]),
    dict(name="bert-pissa", base="tiny-bert", args=["--init", "pissa", "--scaling", "peft", "--lora-r", "4", "--lora-alpha", "8", "--lora-query", "--lora-value", "--lora-mlp"]),
    dict(name="bert-olora-dora", base="tiny-bert", args=["--init", "olora", "--dora", "--scaling", "peft", "--lora-r", "4", "--lora-alpha", "4", "--target-modules", "key,attention.output.dense"]),
    dict(name="distilbert-pissa-niter-rslora", base="tiny-distilbert", args=["--init", "pissa_niter_2", "--scaling", "rslora", "--lora-r", "4", "--lora-alpha", "4", "--target-modules", "q_lin,k_lin,v_lin"]),
    dict(
        name="bert-patterns-bias-layers",
        base="tiny-bert",
        args=["--scaling", "peft", "--lora-r", "4", "--lora-alpha", "8", "--target-modules", "query,value,intermediate.dense", "--rank-pattern", "query=2,intermediate.dense=6", "--alpha-pattern", "value=3", "--lora-bias", "--layers-to-transform", "1"],
    ),
    dict(name="bert-dora-raschka-loraplus", base="tiny-bert", args=["--dora", "--scaling", "raschka", "--lora-r", "4", "--lora-alpha", "1", "--loraplus-lr-ratio", "8", "--lora-query", "--lora-value"]),
]


def synthetic_model(tmp: Path, base: str) -> Path:
    d = tmp / base
    shutil.copytree(GOLDEN / base, d)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, 100)]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return d


def synthetic_data(path: Path, n: int, seed: int, classes: int) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for _ in range(n):
            label = rng.randrange(classes)
            width = 95 // classes
            ids = [5 + width * label + rng.randrange(width) if rng.random() < 0.6 else rng.randrange(5, 100) for _ in range(rng.randrange(3, 12))]
            w.writerow([" ".join(f"w{i}" for i in ids), label])


def lowrank(binary: Path, *args) -> str:
    p = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"lowrank {' '.join(map(str, args[:3]))} ... exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    return p.stdout


def batch_texts(inputs) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    texts, rows = [], []
    for i, n in enumerate(make_golden.LENGTHS):
        ids = inputs["input_ids"][i, 1:n].tolist()
        texts.append(" ".join(f"w{t}" for t in ids))
        rows.append([2] + ids + [3])
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return texts, ids, mask


def part_b(binary: Path, inputs) -> list[dict]:
    results = []
    texts, ids, mask = batch_texts(inputs)
    with tempfile.TemporaryDirectory(prefix="lora-family-b-") as tmp:
        tmp = Path(tmp)
        for base, classes in (("tiny-distilbert", 2), ("tiny-bert", 3)):
            synthetic_data(tmp / f"{base}.csv", 96, 7, classes)
        for spec in RUNS:
            r = {"run": spec["name"], "base": spec["base"], "args": spec["args"]}
            try:
                model = synthetic_model(tmp, spec["base"]) if not (tmp / spec["base"]).exists() else tmp / spec["base"]
                out = tmp / spec["name"]
                lowrank(binary, "train", "--model", model, "--data", tmp / f"{spec['base']}.csv", "--out", out, "--head", "bert" if spec["base"] == "tiny-bert" else "distilbert", *COMMON, *spec["args"])
                adapter = out / "adapter"
                cfg = json.loads((adapter / "adapter_config.json").read_text())
                rows = [json.loads(line) for line in lowrank(binary, "predict", "--model", model, "--adapter", adapter, "--json", *sum((["--text", t] for t in texts), [])).splitlines() if line.startswith("{")]
                got = torch.tensor([row["logits"] for row in rows])
                cls = BertForSequenceClassification if spec["base"] == "tiny-bert" else DistilBertForSequenceClassification
                base = cls.from_pretrained(model, attn_implementation="eager", num_labels=got.shape[1], ignore_mismatched_sizes=True).float().eval()
                pm = PeftModel.from_pretrained(base, adapter).eval()
                with torch.no_grad():
                    want = pm(input_ids=ids, attention_mask=mask).logits
                    with pm.disable_adapter():
                        lora_effect = (want - pm(input_ids=ids, attention_mask=mask).logits).abs().max().item()
                merged = tmp / f"{spec['name']}-merged"
                lowrank(binary, "merge", "--model", model, "--adapter", adapter, "--out", merged)
                hf = AutoModelForSequenceClassification.from_pretrained(merged, attn_implementation="eager").float().eval()
                with torch.no_grad():
                    merged_logits = hf(input_ids=ids, attention_mask=mask).logits
                r.update(
                    saved={k: cfg.get(k) for k in ("r", "lora_alpha", "use_dora", "lora_bias", "use_rslora", "init_lora_weights", "rank_pattern", "alpha_pattern")},
                    peft_max_abs_diff=(got - want).abs().max().item(),
                    merged_max_abs_diff=(got - merged_logits).abs().max().item(),
                    lora_effect=lora_effect,
                )
                r["pass"] = r["peft_max_abs_diff"] <= TOL and r["merged_max_abs_diff"] <= TOL and lora_effect > 1e-3
            except Exception as e:  # noqa: BLE001 - recorded verbatim
                r.update({"pass": False, "error": f"{type(e).__name__}: {e}"})
            results.append(r)
            print(f"  lowrank->PEFT {spec['name']:30s} " + (f"PEFT |diff| {r['peft_max_abs_diff']:.1e}, merged |diff| {r['merged_max_abs_diff']:.1e}, LoRA effect {r['lora_effect']:.3f}" if "error" not in r else r["error"]) + ("  PASS" if r["pass"] else "  FAIL"))
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["a", "b", "ab"], default="ab")
    ap.add_argument("--binary", type=Path, default=Path("target/release/lowrank"))
    ap.add_argument("--golden", nargs="*", help="part A: only these golden cases (and no PEFT-written adapters)")
    ap.add_argument("--peft", nargs="*", help="part A: only these PEFT-written adapters (and no golden cases)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    inputs = make_golden.make_inputs()
    report = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__, "machine": platform.processor() or platform.machine()}
    if "a" in args.part:
        print("Part A: golden cases and PEFT-written adapters")
        if not args.peft:
            report["golden"] = [golden_case(n, s, inputs) for n, s in GOLDEN_CASES.items() if not args.golden or n in args.golden]
        if not args.golden:
            report["peft_to_lowrank"] = [peft_case(n, s, inputs) for n, s in PEFT_CASES.items() if not args.peft or n in args.peft]
    if "b" in args.part:
        print("Part B: lowrank -> PEFT / transformers")
        report["lowrank_to_peft"] = part_b(args.binary, inputs)
        path = OUT / "interop-report.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        old.update(report)
        path.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
        failed = [r["run"] for r in report["lowrank_to_peft"] if not r["pass"]]
        if failed:
            sys.exit(f"lowrank -> PEFT failed for {failed}")


if __name__ == "__main__":
    main()
