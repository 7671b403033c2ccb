#!/usr/bin/env python3
"""bf16 mixed-precision golden fixtures for the `lowrank` engine: PyTorch's CPU autocast next to fp32.

Run from the repository root after make_golden.py and make_decoder_golden.py (it reads their models and
cases, and changes none of them; CPU only, a few seconds):

    .venv-golden/bin/python scripts/golden/make_bf16_golden.py

For each case in ``CASES`` it rebuilds the PEFT model of the fp32 case of the same name (same model folder,
same LoraConfig, same input batch and labels) and loads that case's ``lora.*`` tensors into it, so that every
value is identical to the fp32 fixture; then it runs forward + ``loss.backward()`` twice in eval mode:

* fp32: plain float32 (the values must equal the fp32 fixture's to 1e-6 relative, which is checked);
* bf16: the forward under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (master weights and LoRA tensors
  stay float32; autocast casts the inputs of matmul-like ops (Linear, matmul, bmm, baddbmm) to bfloat16, each
  such op accumulates in float32 and rounds its output to bfloat16; the backward runs outside the context, as
  a training loop does, and every gradient lands in float32 on the float32 leaves).

It writes tests/fixtures/golden/bf16-<case>.safetensors + bf16-<case>.json for

* ``bf16-distilbert-lora-peft`` (tiny-distilbert, from make_golden.py's ``distilbert-lora-peft``),
* ``bf16-bert-lora-peft`` (tiny-bert with token_type_ids, from ``bert-lora-peft``),
* ``bf16-llama-cls-lora`` and ``bf16-llama-lm-lora`` (tiny-llama, from make_decoder_golden.py's cases).

Keys of ``bf16-<case>.safetensors`` (the fp32 case's key format):

* ``input_ids``, ``attention_mask``, ``labels`` (and ``token_type_ids`` for bert), copied from the fp32 case.
* ``lora.<module path>.A`` [in, r] / ``.B`` [r, out] f32 and (llama-cls) ``param.score.weight``: copied from the
  fp32 case (identical values).
* ``logits``, ``loss`` [1] and ``grad.<...>`` (LoRA gradients in the engine layout [in, r] / [r, out], and
  ``grad.score.weight`` for llama-cls whose head trains): the bf16-autocast values, stored as float32 (the
  logits come out of the last Linear as bfloat16 and are widened exactly; the loss is float32).
* ``fp32.logits``, ``fp32.loss``, ``fp32.grad.<...>``: the plain float32 values, for comparison.

Keys of ``bf16-<case>.json``: ``source_case`` (the fp32 case file it was rebuilt from), ``model``, ``task``
(cls | lm), ``lora`` (the fp32 case's), ``autocast`` ({device "cpu", dtype "bfloat16"}), ``output_dtypes``
(module class -> dtypes of its outputs under autocast, observed with forward hooks), ``trainable`` (the grad keys),
``fp32_vs_source_case_rel`` (worst max|fp32 - source case| / max|source case| over logits, loss and grads: how
well this run reproduced the fp32 fixture), ``stats``: for every stored bf16 tensor name (``logits``, ``loss``,
each ``grad.*``), ``max_abs_diff`` = max |bf16 - fp32|, ``max_abs_fp32`` = max |fp32|, ``rel`` = their ratio;
``description``. For bf16-distilbert-lora-peft
also ``relu_flips`` (head ReLU units whose pre-activation changes sign under bf16: sequence, unit, fp32 and bf16
values), ``stats_vs_fp32_with_bf16_relu_mask`` (the same statistics against an fp32 run whose flipped
pre-activations are moved to their bf16 values) and ``note``: one such flip makes the LoRA gradients of that case
differ from fp32 by up to ~80% of their max, far beyond round-off.

Everything is deterministic (fixed values, CPU, one thread).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import transformers

import peft
from peft import LoraConfig, get_peft_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_decoder_golden as dec  # noqa: E402
import make_golden as enc  # noqa: E402

OUT = enc.OUT

torch.set_default_dtype(torch.float32)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

# bf16 case -> (fp32 source case, family)
CASES = {
    "bf16-distilbert-lora-peft": ("distilbert-lora-peft", "distilbert"),
    "bf16-bert-lora-peft": ("bert-lora-peft", "bert"),
    "bf16-llama-cls-lora": ("llama-cls-lora", "llama"),
    "bf16-llama-lm-lora": ("llama-lm-lora", "llama"),
}


def build(source: str, family: str):
    """The PEFT model of the fp32 case ``source`` with its exact LoRA (and head) values; plus the case data."""
    meta = json.loads((OUT / f"{source}.json").read_text())
    fx = load_file(OUT / f"{source}.safetensors")
    lora = meta["lora"]
    if family in ("distilbert", "bert"):
        model = enc.load_distilbert() if family == "distilbert" else enc.load_bert()
        task, task_type, fifo = "cls", None, False
    else:
        task = meta["task"]
        model = dec.load("llama", task, score_seed=meta["seed"] + 2 if task == "cls" else None)
        task_type, fifo = lora["task_type"], lora["fan_in_fan_out"]
    if "param.score.weight" in fx:
        assert torch.equal(model.score.weight.detach(), fx["param.score.weight"])
    config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        target_modules=lora["peft_target_modules"],
        lora_dropout=0.0,
        bias="none",
        fan_in_fan_out=fifo,
        task_type=task_type,
    )
    pm = get_peft_model(model, config)
    layers = dec.peft_layers(pm)
    assert sorted(layers) == sorted(lora["modules"]), sorted(layers)
    with torch.no_grad():
        for path, m in layers.items():
            assert abs(m.scaling["default"] - lora["scale"]) < 1e-12
            m.lora_A["default"].weight.copy_(fx[f"lora.{path}.A"].t())
            m.lora_B["default"].weight.copy_(fx[f"lora.{path}.B"].t())
    pm.eval()
    return pm, layers, meta, fx, task


def run(pm, layers, fx, task, autocast: bool):
    pm.zero_grad(set_to_none=True)
    kwargs = {"input_ids": fx["input_ids"], "attention_mask": fx["attention_mask"], "labels": fx["labels"]}
    if "token_type_ids" in fx:
        kwargs["token_type_ids"] = fx["token_type_ids"]
    dtypes = defaultdict(set)
    hooks = []
    if autocast:
        for m in pm.modules():
            def hook(mod, _inp, out, name=type(m).__name__):
                o = out[0] if isinstance(out, tuple) else out
                if isinstance(o, torch.Tensor):
                    dtypes[name].add(str(o.dtype).replace("torch.", ""))
            hooks.append(m.register_forward_hook(hook))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = pm(**kwargs)
    for h in hooks:
        h.remove()
    assert out.loss.dtype == torch.float32, out.loss.dtype
    out.loss.backward()
    if autocast:
        assert out.logits.dtype == torch.bfloat16, out.logits.dtype
    t = {"logits": out.logits.detach().float().contiguous(), "loss": out.loss.detach().float().reshape(1).clone()}
    for path, m in layers.items():
        for ab, mod in (("A", m.lora_A["default"]), ("B", m.lora_B["default"])):
            g = mod.weight.grad
            assert g.dtype == torch.float32
            t[f"grad.{path}.{ab}"] = g.detach().t().contiguous().clone()
    for name, p in pm.named_parameters():
        if p.requires_grad and ".modules_to_save.default." in name:
            key = name[len("base_model.model."):].replace(".modules_to_save.default.", ".")
            t[f"grad.{key}"] = p.grad.detach().clone().contiguous()
    return t, {k: sorted(v) for k, v in sorted(dtypes.items())}


def relu_flips(pm, layers, fx, task, fp32, bf16):
    """DistilBERT's head is pre_classifier -> ReLU -> classifier. A pre-activation close to 0 can change sign
    under bf16, which switches that unit's gradient path on or off: the LoRA gradients then move far more than
    bf16 round-off. Find the flips and re-run fp32 with those pre-activations moved (by a detached shift) to
    their bf16 values, to show that the remaining bf16 - fp32 difference is round-off."""
    head = pm.base_model.model.pre_classifier
    seen = []
    h = head.register_forward_hook(lambda m, i, o: seen.append(o.detach().float()))
    run(pm, layers, fx, task, autocast=False)
    run(pm, layers, fx, task, autocast=True)
    h.remove()
    a, c = seen
    flip = (a > 0) != (c > 0)
    flips = [{"sequence": int(i), "unit": int(j), "fp32": a[i, j].item(), "bf16": c[i, j].item()}
             for i, j in flip.nonzero().tolist()]
    if not flips:
        return flips, None

    def shift(m, i, o):
        d = torch.zeros_like(o)
        d[flip] = (c[flip] - a[flip]).to(o.dtype)
        return o + d.detach()

    h = head.register_forward_hook(shift)
    shifted, _ = run(pm, layers, fx, task, autocast=False)
    h.remove()
    stats = {}
    for k in sorted(bf16):
        d = (bf16[k] - shifted[k]).abs().max().item()
        m = fp32[k].abs().max().item()
        stats[k] = {"max_abs_diff": d, "max_abs_fp32": m, "rel": d / m}
    return flips, stats


def make_case(name: str, source: str, family: str) -> dict:
    pm, layers, meta, fx, task = build(source, family)
    fp32, _ = run(pm, layers, fx, task, autocast=False)
    bf16, dtypes = run(pm, layers, fx, task, autocast=True)
    flips, flip_stats = relu_flips(pm, layers, fx, task, fp32, bf16) if family == "distilbert" else ([], None)
    assert set(fp32) == set(bf16)
    expected_grads = sorted(k for k in fx if k.startswith("grad."))
    assert sorted(k for k in fp32 if k.startswith("grad.")) == expected_grads, name
    # The rebuilt fp32 run reproduces the fp32 fixture (to float32 round-off: the fixture may come from
    # another CPU, whose kernels sum in another order).
    reproduced = 0.0
    for k, v in fp32.items():
        ref = fx[k]
        reproduced = max(reproduced, ((v - ref).abs().max() / (ref.abs().max() + 1e-6)).item())
    assert reproduced < 1e-5, (name, reproduced)
    tensors = {k: v.clone() for k, v in fx.items() if not k.startswith("grad.") and k not in ("logits", "loss")}
    stats = {}
    for k in sorted(bf16):
        tensors[k] = bf16[k]
        tensors[f"fp32.{k}"] = fp32[k]
        d = (bf16[k] - fp32[k]).abs().max().item()
        m = fp32[k].abs().max().item()
        stats[k] = {"max_abs_diff": d, "max_abs_fp32": m, "rel": d / m}
        assert torch.isfinite(bf16[k]).all(), k
    out_meta = {
        "source_case": source,
        "model": meta["model"],
        "task": task,
        "lora": meta["lora"],
        "autocast": {"device": "cpu", "dtype": "bfloat16"},
        "output_dtypes": dtypes,
        "trainable": expected_grads,
        "fp32_vs_source_case_rel": reproduced,
        "stats": stats,
        **({"relu_flips": flips, "stats_vs_fp32_with_bf16_relu_mask": flip_stats,
            "note": "pre_classifier pre-activation(s) listed in relu_flips change sign under bf16, which turns "
            "the ReLU of that unit on/off: the LoRA gradients then differ from fp32 by up to ~80% of their max "
            "(stats). With those pre-activations moved to their bf16 values in an fp32 run the difference is "
            "bf16 round-off again (stats_vs_fp32_with_bf16_relu_mask, <= ~3%). Logits and loss are unaffected. "
            "A bf16 engine may or may not flip the same unit: compare its gradients loosely here."}
           if family == "distilbert" else {}),
        "description": f"The fp32 case {source} (same model, LoRA values, batch, labels) with its forward under "
        "torch.autocast('cpu', dtype=torch.bfloat16); backward outside autocast; gradients on the float32 "
        "leaves. Unprefixed keys: bf16-autocast values (as float32); fp32.*: plain float32 values.",
    }
    save_file(tensors, OUT / f"{name}.safetensors", metadata={"case": name})
    with open(OUT / f"{name}.json", "w") as f:
        json.dump(out_meta, f, indent=2)
        f.write("\n")
    return stats


def main() -> None:
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    total = 0
    print(f"{'case':28} {'tensor':64} {'max|bf16-fp32|':>14} {'max|fp32|':>10} {'rel':>8}")
    for name, (source, family) in CASES.items():
        stats = make_case(name, source, family)
        worst = max((k for k in stats if k.startswith("grad.")), key=lambda k: stats[k]["rel"])
        for k in ("logits", "loss", worst):
            s = stats[k]
            print(f"{name:28} {k:64} {s['max_abs_diff']:14.3e} {s['max_abs_fp32']:10.3e} {s['rel']:8.2e}")
        total += (OUT / f"{name}.safetensors").stat().st_size + (OUT / f"{name}.json").stat().st_size
    print(f"total bf16 fixture size: {total} bytes")


if __name__ == "__main__":
    main()
