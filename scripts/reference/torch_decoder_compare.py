#!/usr/bin/env python3
"""PyTorch + transformers reference for the seed's comparison on a decoder (SmolLM2-135M-Instruct).

The protocol of ../shared/reference/pytorch-reference.md, transplanted from all-MiniLM-L6-v2 to the real
decoder SmolLM2-135M-Instruct (GGUF Q4_1, dequantized to fp32 by transformers; see
../shared/reference/decoders.md), so that `lowrank compare --model <the GGUF> ...` has a peer to be checked
against:

- Model: ``AutoModelForSequenceClassification.from_pretrained(dir, gguf_file=name, num_labels=2,
  dtype=torch.float32)``, a LlamaForSequenceClassification whose ``score`` linear (576 -> 2, no bias) is freshly
  initialised normal(0, 0.02) by transformers; ``torch.manual_seed(123)`` right before building each model (so
  the score and the seed-code LoRA A matrices come from that stream). SDPA attention (transformers' default);
  the model has no dropout (attention_dropout 0), so train and eval mode compute the same function.
- Pooling (transformers' own): the score of the rightmost token that is not the pad token. Pad token = the
  tokenizer's (id 2, ``<|im_end|>``), also set as ``model.config.pad_token_id``; right padding.
- Data: the reference split (train 8,926 / val 1,275 / test 2,551; columns text,label,...) and the 1,000 UCI
  IMDb sentences (text,label). Tokenizer ``AutoTokenizer.from_pretrained(dir, gguf_file=name)`` (byte-level BPE
  from the GGUF metadata; no BOS / EOS added to plain text), truncation 128, dynamic padding per batch.
- Optimisation: Adam lr 5e-5, no weight decay, no schedule, batch 12, shuffled with drop_last (each epoch's
  order is ``torch.randperm(n, generator=torch.Generator().manual_seed(123 + epoch))``, so a resumed run sees the
  same order), 3 epochs, validation accuracy after every epoch, the best-validation checkpoint kept (ties keep
  the earlier epoch). Train accuracy of that checkpoint in eval mode over the whole train split; test and UCI
  accuracy of it. 2 threads.

Runs (``--runs a,b,...``; trainable counts for SmolLM2-135M are printed and recorded):
  lora-default  the seed's LoRA code on q_proj and v_proj (A = randn(in, r)/sqrt(r), B = 0, output
                alpha·(x@A@B); r = 8, alpha = 16); base frozen; ``score`` trains in full (as PEFT's SEQ_CLS
                modules_to_save does): 460,800 + 1,152 = 461,952 trainable.
  last-layers   score + the last decoder layer + the final norm train.
  lora-best     the seed's LoRA, r = 8, alpha = 1, on q_proj, v_proj, gate_proj, up_proj, down_proj; score trains.
  full          every parameter trains.

Run from the repository root (the heavy part is the training: about 1.5-3 hours for lora-default on 2 shared
cores; do NOT hold the machine's CPU lock for it, run it niced in the background):

    nohup nice -n 19 /work/venv/bin/python scripts/reference/torch_decoder_compare.py --runs lora-default \\
        > runs/torch-decoder-reference/lora-default.log 2>&1 &
    # clean throughput, a short run under the CPU lock (no accuracy; does not touch the full run's state):
    /work/bin/cpu /work/venv/bin/python scripts/reference/torch_decoder_compare.py --runs lora-default --speed-steps 30
    # smoke test (seconds of training):
    /work/bin/cpu /work/venv/bin/python scripts/reference/torch_decoder_compare.py --runs lora-default \\
        --limit-train 48 --limit-eval 24 --epochs 1 --out /tmp/tdc-smoke

Outputs, under ``--out`` (default runs/torch-decoder-reference/):
  <run>.progress.jsonl  one line per logged step and per epoch (loss, val accuracy, elapsed seconds)
  <run>.ckpt.pt         resumable state (trainable tensors, Adam state, position, best so far), written atomically
                        every --checkpoint-every steps and at every epoch's end; re-running the same command
                        continues from it (delete it to start over)
  <run>.best.safetensors the best checkpoint's trainable tensors (names as in transformers' model; seed-LoRA
                        tensors as <module>.lora.A [in, r] and <module>.lora.B [r, out])
  <run>.json            the result: trainable count, train/val/test/UCI accuracy, best epoch, per-epoch history,
                        train examples/s, wall time, CPU model and flags, versions, the command
  <run>.md              its Markdown table row; results.md collects every finished run's row

Timing: ``train_examples_per_s`` = examples trained / seconds spent in training steps (evaluation excluded);
``wall_s`` = the whole run including loading and evaluation. A niced run on a shared machine is slowed by the
other jobs: its figures are recorded with the load average, and ``--speed-steps N`` gives a clean figure (N
steps of epoch 1 in the same protocol, after 2 untimed steps; intended to run under /work/bin/cpu).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GGUF = ROOT / "assets" / "SmolLM2-135M-Instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_SPLIT = ROOT / "assets" / "rotten-tomatoes" / "split"
DEFAULT_UCI = ROOT / "assets" / "imdb-uci" / "imdb_uci.csv"
DEFAULT_OUT = ROOT / "runs" / "torch-decoder-reference"

SEED = 123
LR = 5e-5
BATCH = 12
EPOCHS = 3
MAX_LENGTH = 128
EVAL_BATCH = 32

RUNS = {
    "lora-default": dict(kind="lora", r=8, alpha=16.0, targets=["q_proj", "v_proj"],
                         label="LoRA default: r=8, alpha=16, q+v (+ score)"),
    "last-layers": dict(kind="last-layers", label="last-layers (score + last decoder layer + final norm)"),
    "lora-best": dict(kind="lora", r=8, alpha=1.0, targets=["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"],
                      label="LoRA best: r=8, alpha=1, q+v+mlp (+ score)"),
    "full": dict(kind="full", label="full fine-tuning"),
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# The seed's LoRA code ("Code LoRA From Scratch"), unchanged but for the names of the base linears.
# --------------------------------------------------------------------------------------------------
def seed_lora_classes():
    import torch
    from torch import nn

    class LoRALayer(nn.Module):
        def __init__(self, in_dim, out_dim, rank, alpha):
            super().__init__()
            std_dev = 1 / torch.sqrt(torch.tensor(rank).float())
            self.A = nn.Parameter(torch.randn(in_dim, rank) * std_dev)
            self.B = nn.Parameter(torch.zeros(rank, out_dim))
            self.alpha = alpha

        def forward(self, x):
            return self.alpha * (x @ self.A @ self.B)

    class LinearWithLoRA(nn.Module):
        def __init__(self, linear, rank, alpha):
            super().__init__()
            self.linear = linear
            self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha)

        def forward(self, x):
            return self.linear(x) + self.lora(x)

    return LoRALayer, LinearWithLoRA


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def read_csv(path: Path, limit: int | None = None) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            texts.append(row["text"])
            labels.append(int(row["label"]))
            if limit is not None and len(texts) >= limit:
                break
    return texts, labels


def encode(tok, texts: list[str]) -> list[list[int]]:
    enc = tok(texts, truncation=True, max_length=MAX_LENGTH, add_special_tokens=True)
    return [list(ids) for ids in enc["input_ids"]]


def pad_batch(seqs: list[list[int]], pad_id: int):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(seqs), width), dtype=torch.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.int64)
        mask[i, : len(s)] = 1
    return ids, mask


def accuracy(model, seqs: list[list[int]], labels: list[int], pad_id: int) -> float:
    """Accuracy in eval mode; batches of similar length (right padding does not change a causal model's
    hidden states at the real tokens, so the batching does not change the predictions)."""
    import torch

    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    correct = 0
    with torch.no_grad():
        for start in range(0, len(order), EVAL_BATCH):
            idx = order[start : start + EVAL_BATCH]
            ids, mask = pad_batch([seqs[i] for i in idx], pad_id)
            pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
            correct += sum(int(p) == labels[i] for p, i in zip(pred.tolist(), idx))
    return 100.0 * correct / len(seqs)


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------
def build(spec: dict, gguf: Path, pad_id: int):
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(
        gguf.parent, gguf_file=gguf.name, num_labels=2, dtype=torch.float32
    )
    model.config.pad_token_id = pad_id
    for p in model.parameters():
        p.requires_grad_(False)
    kind = spec["kind"]
    if kind == "lora":
        _, LinearWithLoRA = seed_lora_classes()
        for layer in model.model.layers:  # the seed's loop: layer by layer, in the flags' order
            for name in spec["targets"]:
                parent = layer.self_attn if name in ("q_proj", "k_proj", "v_proj", "o_proj") else layer.mlp
                setattr(parent, name, LinearWithLoRA(getattr(parent, name), spec["r"], spec["alpha"]))
        trainable_modules = [model.score]
    elif kind == "last-layers":
        trainable_modules = [model.score, model.model.layers[-1], model.model.norm]
    elif kind == "full":
        trainable_modules = [model]
    else:
        raise ValueError(kind)
    for m in trainable_modules:
        for p in m.parameters():
            p.requires_grad_(True)
    return model


def trainable_state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model, state: dict) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in state.items():
            params[n].copy_(v)


# --------------------------------------------------------------------------------------------------
# Bookkeeping
# --------------------------------------------------------------------------------------------------
def cpu_info() -> dict:
    fields, flags = {}, []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                if key == "flags" and not flags:
                    flags = value.split()
    except OSError:
        pass
    wanted = [f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma", "avx_vnni")]
    return {"model_name": fields.get("model name", platform.processor()), "cpu_family": fields.get("cpu family"),
            "model": fields.get("model"), "flags": sorted(wanted), "logical_cpus": os.cpu_count()}


def versions() -> dict:
    import peft
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}


def atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def append_jsonl(path: Path, obj: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")


def md_row(res: dict) -> str:
    a = res["accuracy"]
    cpu = res["cpu"]
    flags = "+".join(f for f in cpu["flags"] if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")) or "-"
    return (f"| {res['label']} | {res['trainable_params']:,} | {a['train']:.2f} | {a['val']:.2f} | {a['test']:.2f} | "
            f"{a['uci']:.1f} | {res['best_epoch']} | {res['train_examples_per_s']:.1f} | {res['wall_s'] / 60:.1f} min | "
            f"{cpu['model_name']} ({flags}), {res['threads']} threads |")


MD_HEADER = ("| run | trainable | train | val | test | UCI IMDb | best epoch | train ex/s | wall | CPU |\n"
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")


# --------------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------------
def run_one(name: str, args, tok, data: dict) -> dict | None:
    import torch
    from safetensors.torch import save_file

    spec = RUNS[name]
    out = args.out
    prog = out / f"{name}.progress.jsonl"
    ckpt_path = out / f"{name}.ckpt.pt"
    pad_id = tok.pad_token_id
    t_start = time.perf_counter()

    model = build(spec, args.gguf, pad_id)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log(f"[{name}] trainable {trainable:,} of {total:,}; build {time.perf_counter() - t_start:.1f} s")
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.Adam(params, lr=LR)

    train_ids, train_y = data["train"]
    n_train = len(train_ids)
    steps_per_epoch = n_train // BATCH  # drop_last

    def order(epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(SEED + epoch)
        return torch.randperm(n_train, generator=g).tolist()

    def train_step(idx: list[int]) -> float:
        model.train()
        ids, mask = pad_batch([train_ids[i] for i in idx], pad_id)
        y = torch.tensor([train_y[i] for i in idx], dtype=torch.int64)
        optim.zero_grad(set_to_none=True)
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        optim.step()
        return loss.item()

    if args.speed_steps:
        perm = order(1)
        times = []
        for s in range(args.speed_steps + 2):
            idx = perm[s * BATCH : (s + 1) * BATCH]
            t0 = time.perf_counter()
            loss = train_step(idx)
            dt = time.perf_counter() - t0
            if s >= 2:
                times.append(dt)
            log(f"[{name}] speed step {s}: {dt:.3f} s loss {loss:.4f}{' (untimed)' if s < 2 else ''}")
        res = {"run": name, "trainable_params": trainable, "speed_steps": args.speed_steps, "batch": BATCH,
               "step_s_median": statistics.median(times), "step_s_mean": statistics.fmean(times),
               "train_examples_per_s": BATCH * len(times) / sum(times),
               "tokens_per_step_mean": statistics.fmean(
                   sum(len(train_ids[i]) for i in perm[s * BATCH : (s + 1) * BATCH]) for s in range(2, args.speed_steps + 2)),
               "threads": args.threads, "cpu": cpu_info(), "versions": versions(),
               "loadavg_at_end": os.getloadavg(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "command": " ".join(sys.argv)}
        (out / f"{name}.speed.json").write_text(json.dumps(res, indent=1) + "\n")
        log(f"[{name}] {res['train_examples_per_s']:.1f} train examples/s over {len(times)} steps "
            f"(median step {res['step_s_median']:.3f} s)")
        print(json.dumps(res), flush=True)
        return res

    state = {"epoch": 1, "step": 0, "history": [], "best": None, "train_s": 0.0, "wall_before_s": 0.0,
             "examples_trained": 0, "loss_sum": 0.0, "loss_n": 0}
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        assert ck["run"] == name and ck["trainable_params"] == trainable, "checkpoint of another run"
        assert ck["limits"] == [args.limit_train, args.limit_eval, args.epochs], \
            f"checkpoint made with other --limit-train/--limit-eval/--epochs {ck['limits']}: delete {ckpt_path}"
        load_trainable(model, ck["trainable"])
        optim.load_state_dict(ck["optim"])
        state = ck["state"]
        log(f"[{name}] resumed from {ckpt_path}: epoch {state['epoch']} step {state['step']}")
        append_jsonl(prog, {"event": "resume", "epoch": state["epoch"], "step": state["step"], "time": time.time()})
    wall_mark = time.perf_counter()

    def save_ckpt():
        st = dict(state)
        st["wall_before_s"] = state["wall_before_s"] + (time.perf_counter() - wall_mark)
        blob = {"run": name, "trainable_params": trainable, "limits": [args.limit_train, args.limit_eval, args.epochs],
                "trainable": trainable_state(model), "optim": optim.state_dict(), "state": st}
        atomic_write(ckpt_path, lambda p: torch.save(blob, p))

    while state["epoch"] <= args.epochs:
        epoch = state["epoch"]
        perm = order(epoch)
        while state["step"] < steps_per_epoch:
            s = state["step"]
            t0 = time.perf_counter()
            loss = train_step(perm[s * BATCH : (s + 1) * BATCH])
            state["train_s"] += time.perf_counter() - t0
            state["examples_trained"] += BATCH
            state["loss_sum"] += loss
            state["loss_n"] += 1
            state["step"] = s + 1
            if not math.isfinite(loss):
                log(f"[{name}] non-finite loss at epoch {epoch} step {s + 1}")
            if state["step"] % args.log_every == 0 or state["step"] == steps_per_epoch:
                rec = {"event": "step", "epoch": epoch, "step": state["step"], "of": steps_per_epoch,
                       "loss_mean": state["loss_sum"] / state["loss_n"], "last_loss": loss,
                       "train_s": round(state["train_s"], 2),
                       "train_examples_per_s": state["examples_trained"] / state["train_s"],
                       "loadavg": os.getloadavg(), "time": time.time()}
                append_jsonl(prog, rec)
                log(f"[{name}] epoch {epoch} step {state['step']}/{steps_per_epoch} loss(mean) {rec['loss_mean']:.4f} "
                    f"{rec['train_examples_per_s']:.1f} ex/s")
                state["loss_sum"], state["loss_n"] = 0.0, 0
            if args.checkpoint_every and state["step"] % args.checkpoint_every == 0 and state["step"] < steps_per_epoch:
                save_ckpt()
        val = accuracy(model, *data["val"], pad_id)
        rec = {"event": "epoch", "epoch": epoch, "val_acc": val, "train_s": round(state["train_s"], 2),
               "time": time.time(), "loadavg": os.getloadavg()}
        state["history"].append({"epoch": epoch, "val": val})
        if state["best"] is None or val > state["best"]["val"]:
            state["best"] = {"epoch": epoch, "val": val, "trainable": trainable_state(model)}
            rec["best"] = True
        append_jsonl(prog, rec)
        log(f"[{name}] epoch {epoch}: val {val:.2f}{' (best)' if rec.get('best') else ''}")
        state["epoch"] = epoch + 1
        state["step"] = 0
        save_ckpt()

    best = state["best"]
    load_trainable(model, best["trainable"])
    acc = {"val": best["val"]}
    t_eval = time.perf_counter()
    for split in ("test", "uci", "train"):
        acc[split] = accuracy(model, *data[split], pad_id)
        log(f"[{name}] best checkpoint (epoch {best['epoch']}): {split} {acc[split]:.2f}")
    eval_s = time.perf_counter() - t_eval
    save_file({k: v.contiguous() for k, v in best["trainable"].items()}, str(out / f"{name}.best.safetensors"))
    wall = state["wall_before_s"] + (time.perf_counter() - wall_mark) + (wall_mark - t_start)
    res = {
        "run": name,
        "label": spec["label"],
        "spec": {k: v for k, v in spec.items() if k != "label"},
        "trainable_params": trainable,
        "total_params": total,
        "accuracy": acc,
        "best_epoch": best["epoch"],
        "history": state["history"],
        "train_examples_per_s": state["examples_trained"] / state["train_s"],
        "train_s": state["train_s"],
        "final_eval_s": eval_s,
        "wall_s": wall,
        "sizes": {k: len(v[0]) for k, v in data.items()},
        "protocol": {"seed": SEED, "lr": LR, "batch": BATCH, "epochs": args.epochs, "max_length": MAX_LENGTH,
                     "optimizer": "Adam (no weight decay, no schedule)", "drop_last": True,
                     "pad_token_id": pad_id, "padding": "right, dynamic per batch",
                     "pooling": "transformers: rightmost token != pad_token_id",
                     "attn_implementation": model.config._attn_implementation},
        "model": str(args.gguf.relative_to(ROOT) if args.gguf.is_relative_to(ROOT) else args.gguf),
        "threads": args.threads,
        "cpu": cpu_info(),
        "loadavg_at_end": os.getloadavg(),
        "versions": versions(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "note": "train_examples_per_s counts training steps only; a niced run on a shared machine is slowed by "
                "other jobs (see loadavg in the progress log); --speed-steps under the CPU lock gives a clean figure.",
    }
    (out / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / f"{name}.md").write_text(MD_HEADER + "\n" + md_row(res) + "\n")
    log(MD_HEADER + "\n" + md_row(res))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--runs", default="lora-default", help=f"comma-separated, of {', '.join(RUNS)}")
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="folder with train.csv, val.csv, test.csv")
    ap.add_argument("--uci", type=Path, default=DEFAULT_UCI)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--limit-train", type=int, default=None, help="first N training rows only (smoke tests)")
    ap.add_argument("--limit-eval", type=int, default=None, help="first N rows of val / test / UCI only")
    ap.add_argument("--checkpoint-every", type=int, default=100, help="steps between resumable checkpoints (0: epochs only)")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--speed-steps", type=int, default=0, help="only time N training steps (after 2 untimed ones)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    bad = [n for n in names if n not in RUNS]
    if bad:
        ap.error(f"unknown run(s) {bad}: choose from {list(RUNS)}")
    args.gguf = args.gguf.resolve()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)

    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name)
    assert tok.pad_token_id == 2, f"expected the tokenizer's pad token <|im_end|> = 2, got {tok.pad_token_id}"
    tok.padding_side = "right"
    data = {}
    for split, path, limit in (("train", args.split / "train.csv", args.limit_train),
                               ("val", args.split / "val.csv", args.limit_eval),
                               ("test", args.split / "test.csv", args.limit_eval),
                               ("uci", args.uci, args.limit_eval)):
        texts, labels = read_csv(path, limit)
        ids = encode(tok, texts)
        assert all(ids_ and tok.pad_token_id not in ids_ for ids_ in ids), f"{split}: empty text or pad token inside"
        data[split] = (ids, labels)
        lens = [len(s) for s in ids]
        log(f"{split}: {len(ids)} examples, tokens mean {statistics.fmean(lens):.1f} max {max(lens)} "
            f"(truncated: {sum(n >= MAX_LENGTH for n in lens)})")

    results = []
    for name in names:
        res = run_one(name, args, tok, data)
        if res is not None and not args.speed_steps:
            results.append(res)
    if not args.speed_steps:
        rows = []
        for name in RUNS:  # every finished run in this folder, in the table's order
            p = args.out / f"{name}.json"
            if p.exists():
                rows.append(md_row(json.loads(p.read_text())))
        (args.out / "results.md").write_text(MD_HEADER + "\n" + "\n".join(rows) + "\n")
        print(json.dumps([{k: r[k] for k in ("run", "trainable_params", "accuracy", "best_epoch",
                                             "train_examples_per_s", "wall_s")} for r in results]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
