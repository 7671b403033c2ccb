#!/usr/bin/env python3
"""PEFT <-> lowrank interoperability on decoder adapters: fixtures (PEFT -> lowrank) and a check (lowrank -> PEFT).

Run from the repository root with the reference stack (torch 2.15, transformers 5.24, peft 0.21.2; CPU):

    /work/venv/bin/python scripts/golden/make_peft_interop_decoder.py                 # part A: fixtures (seconds)
    /work/venv/bin/python scripts/golden/make_peft_interop_decoder.py --check DIR     # part B: check a lowrank adapter
    /work/venv/bin/python scripts/golden/make_peft_interop_decoder.py --check DIR --base PATH [--report FILE]

Part A: PEFT-written adapters -> lowrank (committed fixtures; deterministic: two runs give identical bytes)
--------------------------------------------------------------------------------------------------------
Nothing is trained. On the tiny random Llama of tests/fixtures/golden/tiny-llama (make_decoder_golden.py: hidden 32,
2 layers, 4 heads / 2 KV heads, head_dim 8, vocab 97, llama3 rope, pad id 0), for each case in ``CASES``:

  llama-qvo     LlamaForSequenceClassification(num_labels=2) + PEFT ``LoraConfig(task_type="SEQ_CLS", r=4,
                lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], lora_dropout=0)``: scale 8 / 4 = 2.
                PEFT's SEQ_CLS puts ``score`` in modules_to_save, so the adapter file holds
                ``base_model.model.score.weight`` [2, 32] (whole) beside the LoRA factors.
  llama-lm-all  LlamaForCausalLM + PEFT ``LoraConfig(task_type="CAUSAL_LM", r=2, lora_alpha=2, use_rslora=True,
                target_modules=[all seven projections])``: scale 2 / sqrt(2) (rsLoRA); logits of every position.

The fresh ``score`` of llama-qvo is N(0, 0.2^2) from ``torch.Generator().manual_seed(505)``; every lora_A and
lora_B is then overwritten with N(0, 0.3^2) values (``torch.Generator().manual_seed(<case seed> + 1)``, module order)
and the saved copy of ``score`` is perturbed by N(0, 0.3^2), so that the adapter's LoRA factors AND its score
matter (a loader that ignores either fails). ``PeftModel.save_pretrained`` writes
tests/fixtures/peft-decoder/<case>/ (adapter_config.json with target_modules / modules_to_save sorted — PEFT writes
them in Python-set order —, adapter_model.safetensors; the generated README.md is deleted), and ``expected.json``:

    case, base ("tests/fixtures/golden/tiny-llama"), class, task_type, num_labels (cls), pad_token_id (0),
    scale, lora_modules (module paths), tensors (the adapter file's keys), tolerance (1e-5),
    input_ids [4][12]  lengths [9, 5, 12, 3], right-padded with the pad id 0; real ids in 3..96
                       (make_decoder_golden.make_inputs: torch.Generator().manual_seed(4321))
    attention_mask [4][12]
    logits       cls: [4][2], the PeftModel in eval mode (eager attention), pooled at each sequence's last real
                 token (transformers: the rightmost id != pad_token_id); lm: [4][12][97], every position (padded
                 positions included; compare real ones: attention_mask 1)
    base_logits  the same without the adapter (cls: with the seeded, unperturbed score)
    max_abs_logits_minus_base

Every fixture is re-loaded with ``PeftModel.from_pretrained`` and must give the same logits bit for bit. The Rust
side loads ``tests/fixtures/golden/tiny-llama`` with ``--adapter tests/fixtures/peft-decoder/<case>`` (num_labels
from the adapter's score), runs ``input_ids`` (each row's real tokens; batching and padding must not matter) and
compares with ``logits`` (|diff| <= 1e-5).

Part B: lowrank-written adapters -> PEFT (``--check DIR``; a check, nothing committed)
---------------------------------------------------------------------------------------
DIR is a lowrank adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, keys
``base_model.model.<module>.lora_A.weight`` [r, in] / ``.lora_B.weight`` [out, r], saved modules as
``base_model.model.score.weight``) or a lowrank merged model folder (``config.json`` + ``model.safetensors``), with
a ``logits.json`` beside it (or ``--logits FILE``):

    {"input_ids": [[...], ...], "logits": [[...], ...]}      optional "attention_mask": [[...], ...]

Rows of input_ids may differ in length (each row is one unpadded sequence; with an attention_mask, the ids where
it is 0 are dropped). SEQ_CLS: logits [rows][num_labels]. CAUSAL_LM: [rows][vocab] (the last token's) or
[rows][tokens][vocab] (every position). The base is ``--base PATH`` or the adapter's ``base_model_name_or_path``
(resolved against the working directory, the repository root, DIR, and assets/*/ for a bare *.gguf name): a
Hugging Face folder, or a GGUF file, loaded with ``from_pretrained(parent, gguf_file=name, dtype=torch.float32)``.
Classification: ``AutoModelForSequenceClassification`` with num_labels = the adapter's score rows (or labels.json);
pad_token_id = the base config's, else the GGUF tokenizer's (SmolLM2: 2). Then ``PeftModel.from_pretrained(base,
DIR)``; every tensor of the adapter file must be in the PeftModel unchanged; each row runs alone (batch 1, no
padding, eval mode, SDPA attention), and the script prints max |Delta logit| (pass: <= --tol, default 1e-4), the
LoRA's own effect (max |logits - logits with every LoRA scaling 0|) and writes a JSON report with --report.
Exit status 0 = pass, 1 = fail, 2 = bad input.

The exact steps, SmolLM2-135M-Instruct (GGUF) classification adapter:

    B=target/release/lowrank; G=assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
    $B train --model $G --train assets/rotten-tomatoes/split/train.csv --val assets/rotten-tomatoes/split/val.csv \\
        --test assets/rotten-tomatoes/split/val.csv --limit-train 48 --epochs 1 --lr 1e-3 --out /tmp/smol-run
    $B predict --model $G --adapter /tmp/smol-run/adapter --json --text "A gorgeous, witty movie." \\
        --text "Flat and dull." > /tmp/smol-run/predict.jsonl
    # logits.json = {"input_ids": the token ids lowrank ran (its tokenizer = transformers'), "logits": the rows}
    # beside the adapter (the lead's `lowrank predict --json` writes the ids; --ids-from-texts below fills them
    # in with transformers' tokenizer from the "text" fields of a predict .jsonl instead):
    /work/venv/bin/python scripts/golden/make_peft_interop_decoder.py --check /tmp/smol-run/adapter \\
        --predict-jsonl /tmp/smol-run/predict.jsonl
    # and the merged model:
    $B merge --model $G --adapter /tmp/smol-run/adapter --out /tmp/smol-merged
    /work/venv/bin/python scripts/golden/make_peft_interop_decoder.py --check /tmp/smol-merged \\
        --logits /tmp/smol-run/adapter/logits.json

Tiny Llama: the same with ``--model tests/fixtures/golden/tiny-llama`` (``base_model_name_or_path`` is that folder).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import transformers
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaForCausalLM, \
    LlamaForSequenceClassification

import peft
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_decoder_golden as golden  # noqa: E402  (the decoder fixtures' batch)

ROOT = Path(__file__).resolve().parents[2]
BASE = Path("tests/fixtures/golden/tiny-llama")  # relative: it ends up in base_model_name_or_path
OUT = Path("tests/fixtures/peft-decoder")
FIXTURE_TOL = 1e-5
CHECK_TOL = 1e-4
SCORE_SEED = 505
ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

CASES = {
    "llama-qvo": dict(task="cls", seed=606,
                      config=dict(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"])),
    "llama-lm-all": dict(task="lm", seed=707,
                         config=dict(task_type="CAUSAL_LM", r=2, lora_alpha=2, use_rslora=True, target_modules=ALL7)),
}
STD = 0.3
MIN_EFFECT = 0.1

torch.set_default_dtype(torch.float32)


# --------------------------------------------------------------------------------------------------
# Part A
# --------------------------------------------------------------------------------------------------
def load_tiny(task: str):
    if task == "cls":
        m = LlamaForSequenceClassification.from_pretrained(BASE, num_labels=2, attn_implementation="eager")
        g = torch.Generator().manual_seed(SCORE_SEED)
        with torch.no_grad():
            m.score.weight.copy_(0.2 * torch.randn(m.score.weight.shape, generator=g))
    else:
        m = LlamaForCausalLM.from_pretrained(BASE, attn_implementation="eager")
    m = m.float().eval()
    on_disk = load_file(BASE / "model.safetensors")
    sd = m.state_dict()
    for k, v in on_disk.items():
        if task == "cls" and k.startswith("lm_head."):
            continue
        assert torch.equal(sd[k], v), f"{k} differs after from_pretrained"
    assert m.config.pad_token_id == golden.PAD
    return m


def lora_layers(pm) -> dict[str, LoraLayer]:
    prefix = "base_model.model."
    return {n[len(prefix):]: m for n, m in pm.named_modules() if isinstance(m, LoraLayer)}


def randomise(pm, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in sorted(lora_layers(pm).items()):
            for w in (m.lora_A["default"].weight, m.lora_B["default"].weight):
                w.copy_(STD * torch.randn(w.shape, generator=g))
        for _, m in sorted(pm.named_modules()):
            if type(m).__name__ == "ModulesToSaveWrapper":
                for _, p in sorted(m.modules_to_save["default"].named_parameters()):
                    p.add_(STD * torch.randn(p.shape, generator=g))


@torch.no_grad()
def logits_of(model, inputs) -> torch.Tensor:
    return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.float().contiguous()


def make_case(name: str, spec: dict, inputs) -> dict:
    base = load_tiny(spec["task"])
    base_logits = logits_of(base, inputs)
    torch.manual_seed(spec["seed"])
    pm = get_peft_model(base, LoraConfig(lora_dropout=0.0, bias="none", **spec["config"]))
    randomise(pm, spec["seed"] + 1)
    pm.eval()
    logits = logits_of(pm, inputs)
    folder = OUT / name
    if folder.exists():
        shutil.rmtree(folder)
    pm.save_pretrained(folder)
    (folder / "README.md").unlink(missing_ok=True)
    cfg_path = folder / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("target_modules", "modules_to_save"):
        if isinstance(cfg.get(key), list):
            cfg[key] = sorted(cfg[key])
    assert cfg["base_model_name_or_path"] == str(BASE), cfg["base_model_name_or_path"]
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]

    # PEFT itself reloads the files to the same logits (bit for bit).
    re = PeftModel.from_pretrained(load_tiny(spec["task"]), folder).eval()
    again = logits_of(re, inputs)
    assert torch.equal(again, logits), (name, (again - logits).abs().max())
    mask = inputs["attention_mask"].bool()
    if spec["task"] == "cls":
        effect = (logits - base_logits).abs().max().item()
        # Padding changes nothing: each sequence alone gives the same logits.
        for i, n in enumerate(golden.LENGTHS):
            one = {"input_ids": inputs["input_ids"][i : i + 1, :n], "attention_mask": inputs["attention_mask"][i : i + 1, :n]}
            assert torch.allclose(logits_of(pm, one)[0], logits[i], atol=FIXTURE_TOL, rtol=0), (name, i)
    else:
        effect = (logits - base_logits)[mask].abs().max().item()
    assert effect > MIN_EFFECT, f"{name}: the adapter barely changes the logits ({effect})"
    layers = lora_layers(pm)
    scales = {m.scaling["default"] for m in layers.values()}
    assert len(scales) == 1
    tensors = sorted(load_file(folder / "adapter_model.safetensors"))
    doc = {
        "description": "PEFT-written decoder adapter on tests/fixtures/golden/tiny-llama "
                       "(scripts/golden/make_peft_interop_decoder.py). logits: the PeftModel in eval mode on input_ids "
                       "(right-padded with pad_token_id; attention_mask 1 on real tokens). lowrank with this adapter "
                       "must reproduce them within tolerance.",
        "case": name,
        "base": str(BASE),
        "class": type(base).__name__,
        "task_type": spec["config"]["task_type"],
        "num_labels": logits.shape[1] if spec["task"] == "cls" else None,
        "pad_token_id": golden.PAD,
        "r": spec["config"]["r"],
        "lora_alpha": spec["config"]["lora_alpha"],
        "use_rslora": bool(spec["config"].get("use_rslora", False)),
        "scale": scales.pop(),
        "lora_modules": sorted(layers),
        "modules_to_save": sorted(cfg.get("modules_to_save") or []),
        "tensors": tensors,
        "tolerance": FIXTURE_TOL,
        "lengths": golden.LENGTHS,
        "input_ids": inputs["input_ids"].tolist(),
        "attention_mask": inputs["attention_mask"].tolist(),
        "logits": logits.tolist(),
        "base_logits": base_logits.tolist(),
        "max_abs_logits_minus_base": effect,
        "versions": {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
                     "peft": peft.__version__},
    }
    # The lm logits (4 x 12 x 97) are written compactly; the small cls file stays readable.
    text = json.dumps(doc, indent=1) if spec["task"] == "cls" else json.dumps(doc, separators=(",", ":"))
    (folder / "expected.json").write_text(text + "\n")
    return doc


def part_a() -> int:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    inputs = golden.make_inputs()
    for name, spec in CASES.items():
        d = make_case(name, spec, inputs)
        size = sum(p.stat().st_size for p in (OUT / name).iterdir())
        print(f"{name:13s} {d['task_type']:9s} {len(d['lora_modules']):2d} LoRA modules, modules_to_save "
              f"{d['modules_to_save']}, scale {d['scale']:.4g}, {len(d['tensors'])} tensors, "
              f"max|logits - base| {d['max_abs_logits_minus_base']:.3f}, {size / 1024:.1f} KiB")
    return 0


# --------------------------------------------------------------------------------------------------
# Part B
# --------------------------------------------------------------------------------------------------
class BadInput(Exception):
    pass


def resolve_base(name: str, folder: Path) -> Path:
    p = Path(name)
    cands = [p] if p.is_absolute() else [Path.cwd() / p, ROOT / p, folder / p]
    if not p.is_absolute() and p.suffix == ".gguf" and len(p.parts) == 1:
        cands += sorted((ROOT / "assets").glob(f"*/{p.name}"))
    for c in cands:
        if c.exists():
            return c.resolve()
    raise BadInput(f"base model {name!r} not found (tried {', '.join(map(str, cands))}): pass --base PATH")


def load_base(path: Path, task: str, num_labels: int | None):
    """transformers' model (fp32, SDPA), and the pad id it is given."""
    kw = dict(dtype=torch.float32)
    if path.suffix == ".gguf":
        kw["gguf_file"] = path.name
        where = path.parent
    else:
        where = path
    if task == "cls":
        model = AutoModelForSequenceClassification.from_pretrained(where, num_labels=num_labels, **kw)
    else:
        model = AutoModelForCausalLM.from_pretrained(where, **kw)
    pad = model.config.pad_token_id
    if pad is None and path.suffix == ".gguf":
        from transformers import AutoTokenizer

        pad = AutoTokenizer.from_pretrained(where, gguf_file=path.name).pad_token_id
    model.config.pad_token_id = pad
    # dtype=float32 above already gives fp32 weights; `.float()` is refused on a model loaded from a GGUF
    # (transformers marks it quantized even though it dequantized every tensor).
    assert all(p.dtype == torch.float32 for p in model.parameters()), "the base did not load as fp32"
    return model.eval(), pad


def read_logits(path: Path) -> tuple[list[list[int]], list]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BadInput(f"{path}: {e}")
    if not isinstance(doc, dict) or "input_ids" not in doc or "logits" not in doc:
        raise BadInput(f"{path}: expected {{\"input_ids\": [[...]], \"logits\": [[...]]}}")
    ids, logits = doc["input_ids"], doc["logits"]
    if len(ids) != len(logits) or not ids:
        raise BadInput(f"{path}: {len(ids)} rows of input_ids but {len(logits)} rows of logits")
    if "attention_mask" in doc:
        ids = [[t for t, m in zip(row, mrow) if m] for row, mrow in zip(ids, doc["attention_mask"])]
    return ids, logits


def logits_from_predict(adapter_dir: Path, jsonl: Path, base: Path, max_length: int) -> Path:
    """Writes DIR/logits.json from a `lowrank predict --json` file, tokenizing its texts with transformers'."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base.parent, gguf_file=base.name) if base.suffix == ".gguf" \
        else AutoTokenizer.from_pretrained(base)
    rows = [json.loads(l) for l in jsonl.read_text().splitlines() if l.strip().startswith("{")]
    if not rows:
        raise BadInput(f"{jsonl}: no JSON lines")
    ids = [tok(r["text"], truncation=True, max_length=max_length)["input_ids"] for r in rows]
    out = adapter_dir / "logits.json"
    out.write_text(json.dumps({"input_ids": ids, "logits": [r["logits"] for r in rows],
                               "note": f"ids by transformers' tokenizer from {jsonl.name}"}) + "\n")
    return out


def loaded_state_problem(pm, adapter_dir: Path) -> str | None:
    want = load_file(adapter_dir / "adapter_model.safetensors")
    have = get_peft_model_state_dict(pm, save_embedding_layers=False)
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    differ = sorted(k for k in set(want) & set(have) if not torch.equal(want[k].float(), have[k].float()))
    if missing or extra or differ:
        return f"adapter tensors not loaded as written: missing {missing[:5]}, unexpected {extra[:5]}, different {differ[:5]}"
    return None


@torch.no_grad()
def run_rows(model, rows: list[list[int]], task: str, shapes: list) -> list[torch.Tensor]:
    out = []
    for ids, want in zip(rows, shapes):
        x = torch.tensor([ids], dtype=torch.int64)
        lg = model(input_ids=x, attention_mask=torch.ones_like(x)).logits.float()
        if task == "cls":
            out.append(lg[0])
        elif want.dim() == 1:  # the last token's
            out.append(lg[0, -1])
        else:
            out.append(lg[0])
    return out


def check(args) -> int:
    folder = args.check.resolve()
    is_adapter = (folder / "adapter_config.json").exists()
    is_model = (folder / "config.json").exists() and not is_adapter
    if not (is_adapter or is_model):
        raise BadInput(f"{folder}: neither an adapter folder (adapter_config.json) nor a model folder (config.json)")
    cfg = json.loads((folder / ("adapter_config.json" if is_adapter else "config.json")).read_text())
    base_name = args.base or (cfg.get("base_model_name_or_path") if is_adapter else str(folder))
    if not base_name:
        raise BadInput("the adapter names no base_model_name_or_path: pass --base PATH")
    base_path = resolve_base(str(base_name), folder)
    if args.predict_jsonl:
        logits_path = logits_from_predict(folder, args.predict_jsonl, base_path, args.max_length)
    else:
        logits_path = args.logits or folder / "logits.json"
    if not logits_path.exists():
        raise BadInput(f"{logits_path} not found: write lowrank's logits there (or pass --logits / --predict-jsonl)")
    rows, want_rows = read_logits(logits_path)
    want = [torch.tensor(w, dtype=torch.float32) for w in want_rows]

    task_type = cfg.get("task_type") if is_adapter else None
    if is_model:
        arch = (cfg.get("architectures") or [""])[0]
        task = "lm" if arch.endswith("ForCausalLM") else "cls"
    elif task_type in ("SEQ_CLS", "CAUSAL_LM"):
        task = "cls" if task_type == "SEQ_CLS" else "lm"
    else:
        task = "cls" if want[0].dim() == 1 and want[0].numel() <= 64 else "lm"
    num_labels = None
    if task == "cls":
        if is_adapter:
            sd = load_file(folder / "adapter_model.safetensors")
            score = [v for k, v in sd.items() if k.endswith(".score.weight") or k.endswith(".score.modules_to_save.weight")]
            if score:
                num_labels = score[0].shape[0]
            elif (folder / "labels.json").exists():
                num_labels = len(json.loads((folder / "labels.json").read_text()))
        num_labels = num_labels or want[0].numel()
        if any(w.numel() != num_labels for w in want):
            raise BadInput(f"logits rows are not all of length num_labels = {num_labels}")

    model, pad = load_base(base_path if is_adapter else folder, task, num_labels)
    report: dict = {"dir": str(folder), "kind": "adapter" if is_adapter else "merged model", "base": str(base_path),
                    "task": task, "num_labels": num_labels, "pad_token_id": pad, "rows": len(rows),
                    "tokens": [len(r) for r in rows], "tolerance": args.tol,
                    "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                 "peft": peft.__version__}}
    problem = None
    if is_adapter:
        pm = PeftModel.from_pretrained(model, folder).eval()
        problem = loaded_state_problem(pm, folder)
        report["lora_modules"] = len(lora_layers(pm))
        got = run_rows(pm, rows, task, want)
        layers = list(lora_layers(pm).values())
        saved = [dict(m.scaling) for m in layers]
        for m in layers:
            for k in m.scaling:
                m.scaling[k] = 0.0
        off = run_rows(pm, rows, task, want)
        for m, s in zip(layers, saved):
            m.scaling.update(s)
        report["lora_effect"] = max((a - b).abs().max().item() for a, b in zip(got, off)) if layers else None
    else:
        got = run_rows(model, rows, task, want)
    diffs = []
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            raise BadInput(f"row {i}: transformers gives logits of shape {list(g.shape)}, logits.json {list(w.shape)}")
        diffs.append((g - w).abs().max().item())
    report["max_abs_diff"] = max(diffs)
    report["max_abs_diff_per_row"] = diffs
    report["max_abs_logit"] = max(w.abs().max().item() for w in want)
    report["error"] = problem
    report["passed"] = report["max_abs_diff"] <= args.tol and problem is None and all(map(math.isfinite, diffs))
    if args.report:
        args.report.write_text(json.dumps(report, indent=1) + "\n")
    effect = report.get("lora_effect")
    print(f"{report['kind']} {folder}: {len(rows)} rows on {base_path.name} ({task}); max |Δlogit| = "
          f"{report['max_abs_diff']:.3g} (tolerance {args.tol:g}); "
          + (f"LoRA effect {effect:.3g}; " if effect is not None else "")
          + ("PASS" if report["passed"] else f"FAIL{': ' + problem if problem else ''}"))
    return 0 if report["passed"] else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--check", type=Path, help="part B: a lowrank adapter (or merged model) folder to check with PEFT")
    ap.add_argument("--base", help="base model folder or .gguf file (default: the adapter's base_model_name_or_path)")
    ap.add_argument("--logits", type=Path, help="lowrank's logits (default: DIR/logits.json)")
    ap.add_argument("--predict-jsonl", type=Path,
                    help="write DIR/logits.json from a `lowrank predict --json` file (ids by transformers' tokenizer)")
    ap.add_argument("--max-length", type=int, default=512, help="truncation for --predict-jsonl (lowrank's default 512)")
    ap.add_argument("--tol", type=float, default=CHECK_TOL)
    ap.add_argument("--report", type=Path, help="write the check's JSON report here")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.check is None:
        os.chdir(ROOT)
        return part_a()
    torch.set_num_threads(args.threads)
    try:
        return check(args)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
