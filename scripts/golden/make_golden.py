#!/usr/bin/env python3
"""Golden fixtures for the `lowrank` engine, produced with PyTorch + transformers + PEFT.

Run from the repository root (CPU only, a few seconds):

    python3 -m venv .venv-golden
    .venv-golden/bin/pip install -r scripts/golden/requirements.txt
    .venv-golden/bin/python scripts/golden/make_golden.py

It (re)writes, under tests/fixtures/golden/:

* ``tiny-distilbert/`` and ``tiny-bert/``: two tiny randomly initialised
  *ForSequenceClassification models (``config.json`` + ``model.safetensors``,
  head included). LayerNorm weights/biases and every Linear bias are
  re-randomised so that bugs in biases or LayerNorm show up.
* ``<case>.safetensors`` + ``<case>.json`` for each case in ``CASES``: the shared
  input batch, the logits and loss of one forward pass in eval mode (dropout off),
  the LoRA tensors and the gradients of every trainable tensor after
  ``loss.backward()``.

Conventions of the case files (see also the ``description`` in each JSON):

* LoRA tensors use the engine's layout, ``A: [in, r]`` and ``B: [r, out]``, with
  ``y = base(x) + scale * (x @ A) @ B``; keys ``lora.<module path>.A`` / ``.B``
  where ``<module path>`` is the module's name in the *ForSequenceClassification
  model (e.g. ``distilbert.transformer.layer.0.attention.q_lin``). PEFT's
  ``lora_A.weight [r, in]`` / ``lora_B.weight [out, r]`` are transposed into it.
* Gradients: ``grad.<module path>.A`` / ``.B`` (same layout) for LoRA tensors and
  ``grad.<state_dict key>`` for trainable base parameters.
* ``logits`` f32 [4, num_labels], ``loss`` f32 [1] (mean cross-entropy),
  ``input_ids`` / ``attention_mask`` i64 [4, 12], ``labels`` i64 [4], and for the
  BERT-headed cases ``token_type_ids`` i64 [4, 12] (sequence 2 uses type 1 on its
  second half).
* Case ``bert-as-distilbert-lora-raschka`` also stores the fresh DistilBERT head as
  ``param.pre_classifier.{weight,bias}`` and ``param.classifier.{weight,bias}``.

Everything is float32 and deterministic (fixed seeds, CPU, eager attention).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import transformers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)
from transformers.activations import GELUActivation

import peft
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "golden"
DISTILBERT_DIR = OUT / "tiny-distilbert"
BERT_DIR = OUT / "tiny-bert"

BATCH, SEQ = 4, 12
LENGTHS = [9, 5, 12, 3]
DISTILBERT_LABELS = [1, 0, 0, 1]  # num_labels = 2
BERT_LABELS = [2, 0, 1, 2]  # num_labels = 3
# transformers' default initializer_range (0.02) makes every Linear of this 32-wide model shrink its input
# ~10x, so logits are ~1e-2 and LoRA/encoder gradients ~1e-4: too weak to catch bugs. With 0.2 each
# Linear is roughly gain-1 and every tensor and gradient is O(0.01..1). (Still transformers' own init.)
INIT_STD = 0.2

torch.set_default_dtype(torch.float32)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


# --------------------------------------------------------------------------------------
# The seed's LoRA code (Sebastian Raschka, "Code LoRA From Scratch"), verbatim in spirit.
# --------------------------------------------------------------------------------------
class LoRALayer(nn.Module):
    def __init__(self, in_dim, out_dim, rank, alpha):
        super().__init__()
        std_dev = 1 / torch.sqrt(torch.tensor(rank).float())
        self.A = nn.Parameter(torch.randn(in_dim, rank) * std_dev)
        self.B = nn.Parameter(torch.zeros(rank, out_dim))
        self.alpha = alpha

    def forward(self, x):
        x = self.alpha * (x @ self.A @ self.B)
        return x


class LinearWithLoRA(nn.Module):
    def __init__(self, linear, rank, alpha):
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha)

    def forward(self, x):
        return self.linear(x) + self.lora(x)


def apply_raschka_lora(model: nn.Module, paths: list[str], rank: int, alpha: float) -> None:
    for path in paths:
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        linear = getattr(parent, attr)
        assert isinstance(linear, nn.Linear), (path, type(linear))
        setattr(parent, attr, LinearWithLoRA(linear, rank, alpha))


# --------------------------------------------------------------------------------------
# Inputs and models
# --------------------------------------------------------------------------------------
def make_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    input_ids = torch.zeros(BATCH, SEQ, dtype=torch.int64)
    attention_mask = torch.zeros(BATCH, SEQ, dtype=torch.int64)
    for i, n in enumerate(LENGTHS):
        input_ids[i, 0] = 2
        input_ids[i, 1:n] = torch.randint(5, 100, (n - 1,), generator=g, dtype=torch.int64)
        attention_mask[i, :n] = 1
    token_type_ids = torch.zeros(BATCH, SEQ, dtype=torch.int64)
    token_type_ids[2, LENGTHS[2] // 2 : LENGTHS[2]] = 1  # second half of the full-length sequence
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def randomise_biases_and_layernorms(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in model.named_modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


def distilbert_config(num_labels: int) -> DistilBertConfig:
    id2label = {i: f"LABEL_{i}" for i in range(num_labels)} if num_labels != 2 else {0: "NEGATIVE", 1: "POSITIVE"}
    return DistilBertConfig(
        vocab_size=100,
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=64,
        max_position_embeddings=64,
        num_labels=num_labels,
        # transformers 5 omits id2label/num_labels from config.json when they equal the default (2 labels);
        # explicit names keep the label count visible to the engine's config reader.
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        activation="gelu",
        pad_token_id=0,
        problem_type="single_label_classification",
        initializer_range=INIT_STD,
        attn_implementation="eager",
    )


def bert_config() -> BertConfig:
    return BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        num_labels=3,
        hidden_act="gelu",
        pad_token_id=0,
        layer_norm_eps=1e-12,
        problem_type="single_label_classification",
        initializer_range=INIT_STD,
        attn_implementation="eager",
    )


def save_model(model: nn.Module, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    try:
        model.save_pretrained(folder, safe_serialization=True)
    except TypeError:  # transformers >= 5 always writes safetensors
        model.save_pretrained(folder)
    # The file on disk must hold exactly the state_dict we use (no key renaming).
    on_disk = load_file(folder / "model.safetensors")
    sd = model.state_dict()
    assert set(on_disk) == set(sd), (set(on_disk) ^ set(sd))
    for k, v in sd.items():
        assert torch.equal(on_disk[k], v), k
        assert on_disk[k].dtype == torch.float32, k


def build_models() -> None:
    torch.manual_seed(0)
    distil = DistilBertForSequenceClassification(distilbert_config(2))
    randomise_biases_and_layernorms(distil, seed=1)
    save_model(distil, DISTILBERT_DIR)

    torch.manual_seed(10)
    bert = BertForSequenceClassification(bert_config())
    randomise_biases_and_layernorms(bert, seed=11)
    save_model(bert, BERT_DIR)


def load_distilbert() -> DistilBertForSequenceClassification:
    m = DistilBertForSequenceClassification.from_pretrained(DISTILBERT_DIR, attn_implementation="eager")
    return check_loaded(m, DISTILBERT_DIR)


def load_bert() -> BertForSequenceClassification:
    m = BertForSequenceClassification.from_pretrained(BERT_DIR, attn_implementation="eager")
    return check_loaded(m, BERT_DIR)


def check_loaded(model, folder):
    model = model.float().eval()
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    assert model.config.problem_type == "single_label_classification"
    on_disk = load_file(folder / "model.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(on_disk[k], v), f"{folder.name}: {k} differs after from_pretrained"
    return model


def check_gelu_is_erf(model: nn.Module) -> None:
    acts = [m for m in model.modules() if isinstance(m, GELUActivation)]
    assert acts, "no GELUActivation found"
    x = torch.linspace(-6, 6, 2001)
    exact = x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    for a in acts:
        assert a.act is F.gelu, a.act
        assert torch.allclose(a(x), exact, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------------------
def forward_backward(model, inputs: dict, labels: torch.Tensor, use_token_types: bool):
    kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "labels": labels}
    if use_token_types:
        kwargs["token_type_ids"] = inputs["token_type_ids"]
    out = model(**kwargs)
    ref = F.cross_entropy(out.logits, labels)
    assert torch.allclose(out.loss, ref, atol=1e-6), (out.loss, ref)
    out.loss.backward()
    return out.logits.detach().clone(), out.loss.detach().reshape(1).clone()


def check_frozen_and_trainable(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"trainable {name} has no grad"
        else:
            assert p.grad is None, f"frozen {name} has a grad"


def base_grads(model: nn.Module, state_keys: set[str], skip_substrings=()) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        if not p.requires_grad or any(s in name for s in skip_substrings):
            continue
        assert name in state_keys, name
        out[f"grad.{name}"] = p.grad.detach().clone().contiguous()
    return out


def raschka_tensors(model: nn.Module, paths: list[str], b_seed: int) -> dict[str, torch.Tensor]:
    """Overwrite B (zero at init) with N(0, 0.2^2) values; return the lora.* tensors."""
    g = torch.Generator().manual_seed(b_seed)
    tensors = {}
    with torch.no_grad():
        for path in paths:
            lora = model.get_submodule(path).lora
            lora.B.copy_(0.2 * torch.randn(lora.B.shape, generator=g))
    for path in paths:
        lora = model.get_submodule(path).lora
        tensors[f"lora.{path}.A"] = lora.A.detach().clone().contiguous()
        tensors[f"lora.{path}.B"] = lora.B.detach().clone().contiguous()
    return tensors


def raschka_grads(model: nn.Module, paths: list[str]) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in paths:
        lora = model.get_submodule(path).lora
        tensors[f"grad.{path}.A"] = lora.A.grad.detach().clone().contiguous()
        tensors[f"grad.{path}.B"] = lora.B.grad.detach().clone().contiguous()
    return tensors


def peft_layers(peft_model) -> dict[str, LoraLayer]:
    prefix = "base_model.model."
    layers = {}
    for name, m in peft_model.named_modules():
        if isinstance(m, LoraLayer):
            assert name.startswith(prefix), name
            layers[name[len(prefix):]] = m
    return layers


def peft_setup(model, r: int, alpha: float, targets: list[str], rslora: bool, b_seed: int, expected_modules):
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=targets,
        lora_dropout=0.0,
        bias="none",
        use_rslora=rslora,
        task_type=None,
    )
    pm = get_peft_model(model, config)
    layers = peft_layers(pm)
    assert sorted(layers) == sorted(expected_modules), (sorted(layers), sorted(expected_modules))
    expected_scale = alpha / math.sqrt(r) if rslora else alpha / r
    g = torch.Generator().manual_seed(b_seed)
    tensors = {}
    with torch.no_grad():
        for path in expected_modules:
            m = layers[path]
            assert isinstance(m.lora_dropout["default"], nn.Identity)
            assert abs(m.scaling["default"] - expected_scale) < 1e-12, (m.scaling, expected_scale)
            wb = m.lora_B["default"].weight  # [out, r]
            wb.copy_(0.2 * torch.randn(wb.shape, generator=g))
    for path in expected_modules:
        m = layers[path]
        tensors[f"lora.{path}.A"] = m.lora_A["default"].weight.detach().t().contiguous().clone()  # [in, r]
        tensors[f"lora.{path}.B"] = m.lora_B["default"].weight.detach().t().contiguous().clone()  # [r, out]
    # Only LoRA parameters train.
    for name, p in pm.named_parameters():
        assert p.requires_grad == ("lora_A" in name or "lora_B" in name), name
    return pm, layers, tensors, expected_scale


def peft_grads(layers, modules) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in modules:
        m = layers[path]
        tensors[f"grad.{path}.A"] = m.lora_A["default"].weight.grad.detach().t().contiguous().clone()
        tensors[f"grad.{path}.B"] = m.lora_B["default"].weight.grad.detach().t().contiguous().clone()
    return tensors


def freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def distil_layer_paths(names: list[str], n_layers: int = 2) -> list[str]:
    sub = {
        "q_lin": "attention.q_lin",
        "k_lin": "attention.k_lin",
        "v_lin": "attention.v_lin",
        "out_lin": "attention.out_lin",
        "lin1": "ffn.lin1",
        "lin2": "ffn.lin2",
    }
    return [f"distilbert.transformer.layer.{i}.{sub[n]}" for i in range(n_layers) for n in names]


def bert_layer_paths(names: list[str], n_layers: int = 2) -> list[str]:
    sub = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attention.output.dense": "attention.output.dense",
        "intermediate.dense": "intermediate.dense",
        "output.dense": "output.dense",
    }
    return [f"bert.encoder.layer.{i}.{sub[n]}" for i in range(n_layers) for n in names]


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------
def case_raschka(model, paths, rank, alpha, inputs, labels, use_tt, seed):
    freeze_all(model)
    torch.manual_seed(seed)  # A = randn(in, r) / sqrt(r)
    apply_raschka_lora(model, paths, rank, alpha)
    tensors = raschka_tensors(model, paths, b_seed=seed + 1)
    model.eval()
    logits, loss = forward_backward(model, inputs, labels, use_tt)
    check_frozen_and_trainable(model)
    tensors.update(raschka_grads(model, paths))
    lora = {"convention": "raschka", "r": rank, "alpha": float(alpha), "scale": float(alpha), "modules": paths}
    return tensors, logits, loss, lora


def case_peft(model, modules, rank, alpha, targets, rslora, inputs, labels, use_tt, seed):
    torch.manual_seed(seed)  # PEFT's kaiming-uniform init of lora_A
    pm, layers, tensors, scale = peft_setup(model, rank, alpha, targets, rslora, seed + 1, modules)
    pm.eval()
    logits, loss = forward_backward(pm, inputs, labels, use_tt)
    check_frozen_and_trainable(pm)
    tensors.update(peft_grads(layers, modules))
    lora = {
        "convention": "rslora" if rslora else "peft",
        "r": rank,
        "alpha": float(alpha),
        "scale": float(scale),
        "modules": modules,
        "peft_target_modules": targets,
    }
    return tensors, logits, loss, lora


def case_base(model, train_prefixes, inputs, labels, use_tt):
    """train_prefixes None = everything trains."""
    for name, p in model.named_parameters():
        p.requires_grad_(train_prefixes is None or any(name.startswith(pre) for pre in train_prefixes))
    model.eval()
    logits, loss = forward_backward(model, inputs, labels, use_tt)
    check_frozen_and_trainable(model)
    tensors = base_grads(model, set(model.state_dict()))
    if train_prefixes is None:
        assert len(tensors) == len(list(model.parameters()))
    return tensors, logits, loss


def convert_bert_to_distilbert(bert: BertForSequenceClassification, inputs) -> DistilBertForSequenceClassification:
    bc = bert.config
    assert bc.layer_norm_eps == 1e-12  # DistilBERT hard-codes eps=1e-12 in every LayerNorm
    cfg = distilbert_config(bc.num_labels)
    cfg.vocab_size, cfg.dim, cfg.n_layers = bc.vocab_size, bc.hidden_size, bc.num_hidden_layers
    cfg.n_heads, cfg.hidden_dim = bc.num_attention_heads, bc.intermediate_size
    cfg.max_position_embeddings = bc.max_position_embeddings
    torch.manual_seed(999)  # irrelevant: every parameter is overwritten below
    dm = DistilBertForSequenceClassification(cfg).float()

    b = bert.state_dict()
    sd = {
        "distilbert.embeddings.word_embeddings.weight": b["bert.embeddings.word_embeddings.weight"],
        "distilbert.embeddings.position_embeddings.weight": b["bert.embeddings.position_embeddings.weight"]
        + b["bert.embeddings.token_type_embeddings.weight"][0][None, :],
        "distilbert.embeddings.LayerNorm.weight": b["bert.embeddings.LayerNorm.weight"],
        "distilbert.embeddings.LayerNorm.bias": b["bert.embeddings.LayerNorm.bias"],
    }
    pairs = {
        "attention.q_lin": "attention.self.query",
        "attention.k_lin": "attention.self.key",
        "attention.v_lin": "attention.self.value",
        "attention.out_lin": "attention.output.dense",
        "sa_layer_norm": "attention.output.LayerNorm",
        "ffn.lin1": "intermediate.dense",
        "ffn.lin2": "output.dense",
        "output_layer_norm": "output.LayerNorm",
    }
    for i in range(bc.num_hidden_layers):
        for d, s in pairs.items():
            for wb in ("weight", "bias"):
                sd[f"distilbert.transformer.layer.{i}.{d}.{wb}"] = b[f"bert.encoder.layer.{i}.{s}.{wb}"]
    # Fresh DistilBERT-style head.
    torch.manual_seed(123)
    h = bc.hidden_size
    sd["pre_classifier.weight"] = torch.empty(h, h).normal_(0.0, 0.02)
    sd["pre_classifier.bias"] = torch.zeros(h)
    sd["classifier.weight"] = torch.empty(bc.num_labels, h).normal_(0.0, 0.02)
    sd["classifier.bias"] = torch.zeros(bc.num_labels)
    sd = {k: v.clone().contiguous() for k, v in sd.items()}
    missing, unexpected = dm.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing), (missing, unexpected)
    dm.eval()

    with torch.no_grad():
        ref = bert.bert(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            token_type_ids=torch.zeros_like(inputs["input_ids"]),
        ).last_hidden_state[:, 0]
        got = dm.distilbert(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state[
            :, 0
        ]
    diff = (ref - got).abs().max().item()
    print(f"bert-as-distilbert: max |CLS(BertModel) - CLS(converted DistilBERT)| = {diff:.3e}")
    assert diff < 1e-5, diff
    return dm


def write_case(name, meta, tensors, logits, loss, inputs, labels, use_tt):
    tensors = dict(tensors)
    tensors["logits"] = logits.float().contiguous()
    tensors["loss"] = loss.float().contiguous()
    tensors["input_ids"] = inputs["input_ids"].clone()
    tensors["attention_mask"] = inputs["attention_mask"].clone()
    tensors["labels"] = labels.clone()
    if use_tt:
        tensors["token_type_ids"] = inputs["token_type_ids"].clone()
    for k, v in tensors.items():
        if k.startswith("grad.") or k.startswith("lora.") or k.startswith("param."):
            assert v.dtype == torch.float32, k
            assert torch.isfinite(v).all(), k
        # The key bias cannot change softmax(q.k) (it shifts every score of a query equally), so its true
        # gradient is 0: the stored values are float32 round-off (~1e-8). Compare those with an abs tolerance.
        if k.startswith("grad.") and not k.endswith(("k_lin.bias", "key.bias")):
            assert v.abs().max() > 1e-4, f"{name}: {k} is (nearly) all zero"
    meta = dict(meta)
    meta["trainable"] = sorted(k for k in tensors if k.startswith("grad."))
    save_file(tensors, OUT / f"{name}.safetensors", metadata={"case": name})
    with open(OUT / f"{name}.json", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


def run_cases(inputs) -> list[str]:
    d_labels = torch.tensor(DISTILBERT_LABELS, dtype=torch.int64)
    b_labels = torch.tensor(BERT_LABELS, dtype=torch.int64)
    names = []

    def emit(name, meta, tensors, logits, loss, labels, use_tt):
        write_case(name, meta, tensors, logits, loss, inputs, labels, use_tt)
        names.append(name)

    # 1. distilbert-lora-raschka
    paths = distil_layer_paths(["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"]) + [
        "pre_classifier",
        "classifier",
    ]
    t, lg, ls, lora = case_raschka(load_distilbert(), paths, 4, 2.0, inputs, d_labels, False, seed=100)
    emit(
        "distilbert-lora-raschka",
        {
            "model": "tiny-distilbert",
            "mode": "lora",
            "head": "distilbert",
            "lora": lora,
            "description": "Seed code (Raschka LoRALayer/LinearWithLoRA, y = linear(x) + alpha*(x@A@B)) on "
            "q_lin,k_lin,v_lin,out_lin,ffn.lin1,ffn.lin2 of every layer plus pre_classifier and classifier "
            "(lora_head); r=4, alpha=2, scale=alpha; base frozen; B overwritten with N(0,0.2^2).",
        },
        t, lg, ls, d_labels, False,
    )

    # 2. distilbert-lora-peft
    mods = distil_layer_paths(["q_lin", "v_lin", "lin1"])
    t, lg, ls, lora = case_peft(load_distilbert(), mods, 4, 8, ["q_lin", "v_lin", "lin1"], False, inputs, d_labels, False, 200)
    emit(
        "distilbert-lora-peft",
        {
            "model": "tiny-distilbert",
            "mode": "lora",
            "head": "distilbert",
            "lora": lora,
            "description": "PEFT LoraConfig(r=4, lora_alpha=8, target_modules=[q_lin,v_lin,lin1], lora_dropout=0, "
            "task_type=None): scale = alpha/r = 2; head frozen; lora_B overwritten with N(0,0.2^2); "
            "A = lora_A.weight^T [in,r], B = lora_B.weight^T [r,out].",
        },
        t, lg, ls, d_labels, False,
    )

    # 3. distilbert-lora-rslora
    mods = distil_layer_paths(["k_lin", "out_lin", "lin2"])
    t, lg, ls, lora = case_peft(load_distilbert(), mods, 4, 8, ["k_lin", "out_lin", "lin2"], True, inputs, d_labels, False, 300)
    emit(
        "distilbert-lora-rslora",
        {
            "model": "tiny-distilbert",
            "mode": "lora",
            "head": "distilbert",
            "lora": lora,
            "description": "PEFT rsLoRA (use_rslora=True, r=4, lora_alpha=8, targets k_lin,out_lin,lin2): "
            "scale = alpha/sqrt(r) = 4; otherwise as distilbert-lora-peft.",
        },
        t, lg, ls, d_labels, False,
    )

    # 4. distilbert-last-layers
    t, lg, ls = case_base(load_distilbert(), ["pre_classifier.", "classifier."], inputs, d_labels, False)
    emit(
        "distilbert-last-layers",
        {
            "model": "tiny-distilbert",
            "mode": "last-layers",
            "head": "distilbert",
            "lora": None,
            "description": "All frozen except pre_classifier and classifier (weight and bias).",
        },
        t, lg, ls, d_labels, False,
    )

    # 5. distilbert-full
    t, lg, ls = case_base(load_distilbert(), None, inputs, d_labels, False)
    emit(
        "distilbert-full",
        {
            "model": "tiny-distilbert",
            "mode": "full",
            "head": "distilbert",
            "lora": None,
            "description": "Every parameter trains; grad.<state_dict key> for all of them.",
        },
        t, lg, ls, d_labels, False,
    )

    # 6. bert-lora-peft
    mods = bert_layer_paths(["query", "value", "attention.output.dense", "intermediate.dense", "output.dense"])
    targets = ["query", "value", "intermediate.dense", "output.dense"]
    t, lg, ls, lora = case_peft(load_bert(), mods, 4, 4, targets, False, inputs, b_labels, True, 600)
    emit(
        "bert-lora-peft",
        {
            "model": "tiny-bert",
            "mode": "lora",
            "head": "bert",
            "lora": lora,
            "description": "PEFT r=4, lora_alpha=4 (scale 1), target_modules=[query,value,intermediate.dense,"
            "output.dense]; 'output.dense' suffix-matches attention.output.dense and layer.N.output.dense but "
            "not bert.pooler.dense; head (pooler + classifier) frozen; uses token_type_ids.",
        },
        t, lg, ls, b_labels, True,
    )

    # 7. bert-lora-raschka
    paths = bert_layer_paths(["query", "value"]) + ["bert.pooler.dense", "classifier"]
    t, lg, ls, lora = case_raschka(load_bert(), paths, 2, 3.0, inputs, b_labels, True, seed=700)
    emit(
        "bert-lora-raschka",
        {
            "model": "tiny-bert",
            "mode": "lora",
            "head": "bert",
            "lora": lora,
            "description": "Seed code LoRA on query and value of every layer plus bert.pooler.dense and classifier; "
            "r=2, alpha=3, scale=alpha; base frozen; uses token_type_ids.",
        },
        t, lg, ls, b_labels, True,
    )

    # 8. bert-last-layers
    t, lg, ls = case_base(load_bert(), ["bert.pooler.dense.", "classifier."], inputs, b_labels, True)
    emit(
        "bert-last-layers",
        {
            "model": "tiny-bert",
            "mode": "last-layers",
            "head": "bert",
            "lora": None,
            "description": "All frozen except bert.pooler.dense and classifier (weight and bias); uses token_type_ids.",
        },
        t, lg, ls, b_labels, True,
    )

    # 9. bert-full
    t, lg, ls = case_base(load_bert(), None, inputs, b_labels, True)
    emit(
        "bert-full",
        {
            "model": "tiny-bert",
            "mode": "full",
            "head": "bert",
            "lora": None,
            "description": "Every parameter trains (incl. token_type_embeddings); uses token_type_ids.",
        },
        t, lg, ls, b_labels, True,
    )

    # 10. bert-as-distilbert-lora-raschka
    dm = convert_bert_to_distilbert(load_bert(), inputs)
    head = {f"param.{k}": v.detach().clone().contiguous() for k, v in dm.state_dict().items()
            if k.startswith("pre_classifier.") or k.startswith("classifier.")}
    assert len(head) == 4
    with torch.no_grad():
        BASE_LOGITS["bert-as-distilbert"] = dm(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    paths = distil_layer_paths(["q_lin", "v_lin"])
    t, lg, ls, lora = case_raschka(dm, paths, 4, 2.0, inputs, b_labels, False, seed=1000)
    t.update(head)
    emit(
        "bert-as-distilbert-lora-raschka",
        {
            "model": "tiny-bert",
            "mode": "lora",
            "head": "distilbert",
            "lora": lora,
            "description": "tiny-bert converted to DistilBertForSequenceClassification: word emb copied; "
            "position_embeddings = bert position_embeddings + token_type_embeddings[0]; embeddings LayerNorm "
            "copied; q/k/v_lin = query/key/value, out_lin = attention.output.dense, sa_layer_norm = "
            "attention.output.LayerNorm, ffn.lin1 = intermediate.dense, ffn.lin2 = output.dense, "
            "output_layer_norm = output.LayerNorm (eps 1e-12); pooler dropped; fresh head under "
            "torch.manual_seed(123): pre_classifier.weight ~ N(0,0.02^2) then classifier.weight ~ N(0,0.02^2), "
            "zero biases, stored as param.*. Seed-code LoRA r=4, alpha=2 on q_lin and v_lin; head frozen; "
            "token types all zero (no token_type_ids).",
        },
        t, lg, ls, b_labels, False,
    )
    return names


# --------------------------------------------------------------------------------------
# Independent re-check: a plain functional forward (what the engine does), driven only by the files
# on disk and the fixture's LoRA convention y = x W^T + b + scale * (x @ A) @ B.
# --------------------------------------------------------------------------------------
D2B = {  # DistilBERT layer module -> BERT layer module (case bert-as-distilbert)
    "attention.q_lin": "attention.self.query",
    "attention.k_lin": "attention.self.key",
    "attention.v_lin": "attention.self.value",
    "attention.out_lin": "attention.output.dense",
    "sa_layer_norm": "attention.output.LayerNorm",
    "ffn.lin1": "intermediate.dense",
    "ffn.lin2": "output.dense",
    "output_layer_norm": "output.LayerNorm",
}


def functional_logits(arch, head, p, lora, scale, ids, mask, tt, n_layers=2, n_heads=4):
    """arch: 'distilbert'|'bert' (weights layout); head: 'distilbert'|'bert'.
    p: name -> tensor (base weights, plus head weights); lora: module path -> (A, B)."""

    def lin(x, path, lora_path=None):
        y = x @ p[path + ".weight"].t() + p[path + ".bias"]
        lp = lora_path or path
        if lp in lora:
            a, b = lora[lp]
            y = y + scale * ((x @ a) @ b)
        return y

    def ln(x, path):
        return F.layer_norm(x, (x.shape[-1],), p[path + ".weight"], p[path + ".bias"], eps=1e-12)

    def attention(h, q, k, v):
        bsz, t, d = h.shape
        dh = d // n_heads
        q, k, v = (z.view(bsz, t, n_heads, dh).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
        scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(bsz, t, d)

    t = ids.shape[1]
    if arch == "distilbert":
        e = "distilbert.embeddings."
        h = p[e + "word_embeddings.weight"][ids] + p[e + "position_embeddings.weight"][:t][None]
        h = ln(h, e + "LayerNorm")
        for i in range(n_layers):
            L = f"distilbert.transformer.layer.{i}."
            a = attention(h, lin(h, L + "attention.q_lin"), lin(h, L + "attention.k_lin"), lin(h, L + "attention.v_lin"))
            h = ln(lin(a, L + "attention.out_lin") + h, L + "sa_layer_norm")
            f = lin(F.gelu(lin(h, L + "ffn.lin1")), L + "ffn.lin2")
            h = ln(f + h, L + "output_layer_norm")
    else:
        e = "bert.embeddings."
        h = (
            p[e + "word_embeddings.weight"][ids]
            + p[e + "token_type_embeddings.weight"][tt]
            + p[e + "position_embeddings.weight"][:t][None]
        )
        h = ln(h, e + "LayerNorm")
        for i in range(n_layers):
            L = f"bert.encoder.layer.{i}."
            # LoRA names in the distilbert-headed conversion case use DistilBERT module paths.
            dn = {v: f"distilbert.transformer.layer.{i}.{k}" for k, v in D2B.items()} if head == "distilbert" else {}
            m = lambda s: (L + s, dn.get(s))  # noqa: E731
            a = attention(h, lin(h, *m("attention.self.query")), lin(h, *m("attention.self.key")),
                          lin(h, *m("attention.self.value")))
            h = ln(lin(a, *m("attention.output.dense")) + h, L + "attention.output.LayerNorm")
            f = lin(F.gelu(lin(h, *m("intermediate.dense"))), *m("output.dense"))
            h = ln(f + h, L + "output.LayerNorm")
    cls = h[:, 0]
    if head == "distilbert":
        return lin(torch.relu(lin(cls, "pre_classifier")), "classifier")
    return lin(torch.tanh(lin(cls, "bert.pooler.dense")), "classifier")


def verify_case(name: str) -> float:
    """Recompute logits, loss and every gradient of a case from the files; return the worst rel. error."""
    meta = json.loads((OUT / f"{name}.json").read_text())
    fx = load_file(OUT / f"{name}.safetensors")
    arch = "distilbert" if meta["model"] == "tiny-distilbert" else "bert"
    p = {k: v.clone() for k, v in load_file(OUT / meta["model"] / "model.safetensors").items()}
    p.update({k[len("param."):]: v.clone() for k, v in fx.items() if k.startswith("param.")})
    lora, scale = {}, 0.0
    if meta["lora"] is not None:
        scale = meta["lora"]["scale"]
        lora = {m: (fx[f"lora.{m}.A"].clone(), fx[f"lora.{m}.B"].clone()) for m in meta["lora"]["modules"]}
    leaves = {}
    for key in meta["trainable"]:
        path = key[len("grad."):]
        if path.endswith((".A", ".B")) and path[:-2] in lora:
            t = lora[path[:-2]][0 if path.endswith(".A") else 1]
        else:
            t = p[path]
        leaves[key] = t.requires_grad_(True)
    tt = fx.get("token_type_ids", torch.zeros_like(fx["input_ids"]))
    logits = functional_logits(arch, meta["head"], p, lora, scale, fx["input_ids"], fx["attention_mask"], tt)
    loss = F.cross_entropy(logits, fx["labels"])
    loss.backward()

    def rel(a, b):
        return ((a - b).abs().max() / (b.abs().max() + 1e-6)).item()

    worst = max(rel(logits.detach(), fx["logits"]), rel(loss.detach().reshape(1), fx["loss"]))
    for key, t in leaves.items():
        if key.endswith(("k_lin.bias", "key.bias")):  # true gradient 0: round-off only
            assert (t.grad - fx[key]).abs().max() < 1e-6, key
            continue
        worst = max(worst, rel(t.grad, fx[key]))
    assert worst < 1e-4, (name, worst)
    return worst


BASE_LOGITS: dict[str, torch.Tensor] = {}


def summary(names: list[str]) -> None:
    """Reload every case file; print its tensor count, max |grad|, loss, (diagnostic) how far the
    logits are from those of the model without LoRA (max |dlogits|; '-' for non-LoRA cases), and the
    worst relative error of the independent functional re-check (verify_case)."""
    for name in names:
        if name.endswith("-last-layers"):
            BASE_LOGITS[name.split("-")[0]] = load_file(OUT / f"{name}.safetensors")["logits"]
    print()
    print(f"{'case':36} {'tensors':>7} {'grads':>5} {'min|g|max':>10} {'max|grad|':>11} {'loss':>10} "
          f"{'max|dlogits|':>12} {'recheck':>8}")
    total = 0
    for name in names:
        path = OUT / f"{name}.safetensors"
        total += path.stat().st_size + (OUT / f"{name}.json").stat().st_size
        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
            grads = [f.get_tensor(k) for k in keys if k.startswith("grad.")]
            loss = f.get_tensor("loss")
            logits = f.get_tensor("logits")
        meta = json.loads((OUT / f"{name}.json").read_text())
        assert sorted(meta["trainable"]) == sorted(k for k in keys if k.startswith("grad."))
        gmax = max(g.abs().max().item() for g in grads)
        gmin = min(g.abs().max().item() for g in grads)  # the weakest gradient tensor
        if meta["lora"] is None:
            dl = "-"
        else:
            base = BASE_LOGITS["bert-as-distilbert" if name.startswith("bert-as-") else name.split("-")[0]]
            dl = f"{(logits - base).abs().max().item():.4e}"
        err = verify_case(name)
        print(f"{name:36} {len(keys):7d} {len(grads):5d} {gmin:10.2e} {gmax:11.4e} {loss.item():10.6f} {dl:>12} "
              f"{err:8.1e}")
    for d in (DISTILBERT_DIR, BERT_DIR):
        total += sum(p.stat().st_size for p in d.iterdir())
    print(f"total fixture size: {total} bytes")
    assert total < 1_500_000, total


def main() -> None:
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    OUT.mkdir(parents=True, exist_ok=True)
    build_models()
    check_gelu_is_erf(load_distilbert())
    check_gelu_is_erf(load_bert())
    inputs = make_inputs()
    names = run_cases(inputs)
    summary(names)


if __name__ == "__main__":
    main()
