#!/usr/bin/env python3
"""PyTorch + transformers + PEFT reference for `lowrank bench`.

Runs one fine-tuning (or inference) workload on a randomly initialised sequence-classification
encoder, or a decoder (llama: SmolLM2-135M's shape) for sequence classification or causal-LM loss,
and prints ONE JSON object to stdout; everything else goes to stderr. The flags and the
JSON field names are the same as `lowrank bench`'s, so bench/compare.sh can run both with the
same arguments and bench/table.py can compare their output.

Workload: random token ids in [1000, vocab), every sequence full length (no padding), attention
mask all ones, random labels in {0, 1} (--task cls), or labels = the input ids (--task causal-lm:
transformers' shifted next-token cross-entropy, mean over batch*(seq-1) positions, through the tied
lm_head over the whole vocabulary; decoders only). A training step is zero_grad + forward + cross-entropy
loss + backward + Adam (lr 5e-5) over the trainable parameters only, in train mode (dropout on).
`--infer` times forward passes instead, in eval mode under torch.inference_mode(), with LoRA
merged into the base weights (merge_and_unload).

What trains (same as lowrank's TrainPlan):
  lora         base frozen, PEFT LoRA (dropout 0) on --targets; the head is frozen too
               (no task_type, so PEFT adds no modules_to_save).
  last-layers  only the head's two linears (pre_classifier + classifier, or pooler + classifier);
               decoders (cls only): score + the last decoder layer + the final norm.
  full         every parameter.

Decoders (config model_type llama, e.g. --config smollm2-135m = bench/configs/smollm2-135m.json):
LlamaForSequenceClassification (score 576->2, no bias; pooled at the last token, config.pad_token_id
2 never occurs in the random ids) or LlamaForCausalLM (tied embeddings), built with from_config in
fp32. --targets qv = q_proj + v_proj, all = the seven projections q/k/v/o/gate/up/down (PEFT list
semantics). SmolLM2-135M, r = 8: qv 460,800 and all 2,442,240 LoRA parameters. --precision bf16 runs
forward + loss under torch.autocast("cpu", dtype=torch.bfloat16) (weights and Adam stay fp32).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import random
import resource
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PRESETS = {
    "distilbert-base": HERE / "configs" / "distilbert-base.json",
    "bert-base": HERE / "configs" / "bert-base.json",
    "minilm-l6": HERE / "configs" / "minilm-l6.json",
    "smollm2-135m": HERE / "configs" / "smollm2-135m.json",
}

# LoRA target module names (PEFT list semantics: equal to, or ending with "." + entry).
TARGETS = {
    "distilbert": {
        "qv": ["q_lin", "v_lin"],
        "all": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    },
    # Plain "dense" would also match bert.pooler.dense; these suffixes name the encoder's only.
    "bert": {
        "qv": ["query", "value"],
        "all": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    },
    "llama": {
        "qv": ["q_proj", "v_proj"],
        "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    },
}
DECODERS = {"llama"}

# Which encoder linears the --targets choice puts LoRA on, as keys of `linear_shapes`.
TARGET_ROLES = {"qv": ["q", "v"], "all": ["q", "k", "v", "o", "ffn_in", "ffn_out"]}
DECODER_TARGET_ROLES = {"qv": ["q", "v"], "all": ["q", "k", "v", "o", "gate", "up", "down"]}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def dims(cfg: dict) -> dict:
    """Width C, feed-forward width F, layer count L, head count H and vocab of a config.json dict."""
    if cfg["model_type"] == "distilbert":
        return dict(C=cfg["dim"], F=cfg["hidden_dim"], L=cfg["n_layers"], H=cfg["n_heads"], V=cfg["vocab_size"])
    if cfg["model_type"] in DECODERS:
        H = cfg["num_attention_heads"]
        hd = cfg.get("head_dim") or cfg["hidden_size"] // H
        return dict(
            C=cfg["hidden_size"],
            F=cfg["intermediate_size"],
            L=cfg["num_hidden_layers"],
            H=H,
            KV=cfg.get("num_key_value_heads") or H,
            D=hd,
            V=cfg["vocab_size"],
        )
    return dict(
        C=cfg["hidden_size"],
        F=cfg["intermediate_size"],
        L=cfg["num_hidden_layers"],
        H=cfg["num_attention_heads"],
        V=cfg["vocab_size"],
    )


def flop_count(C, F, L, batch, seq, mode, targets, r, infer=False, num_labels=2):
    """Analytic count of the matrix-product FLOPs of one step (elementwise ops ignored).

    This counts only the multiply-adds of matrix products (2 FLOPs each): no embeddings lookups,
    LayerNorm, GELU, softmax, dropout, bias adds, loss or optimizer arithmetic. lowrank computes
    the same formula, so "gflops" is comparable between the two; it is a lower bound on the
    arithmetic actually done.

    With N = batch*seq tokens, C width, F feed-forward width, T = seq, r LoRA rank, per encoder layer:
      forward   linears   2*N*C*C*4 (q, k, v, out) + 2*N*C*F*2 (ffn in, ffn out)
                attention 2*batch*T*T*C*2 (scores Q.K^T and context P.V, all heads together)
                LoRA      2*N*r*(in + out) for each targeted linear (x.A then (xA).B)
      head      2*batch*(C*C + C*num_labels) (pre_classifier/pooler and classifier, [CLS] rows only)
    Backward, relative to the forward cost of each part:
      frozen base linear 1x (input gradient only), trainable base linear 2x (input + weight
      gradients), attention 2x, LoRA 2x. In last-layers mode nothing below the head trains, so
      the backward is the head's only (2x); in lora and full modes every layer is backpropagated.
    Training step = forward + backward. Inference (infer=True) = forward only, with LoRA merged
    into the base weights, so no LoRA term.
    """
    N = batch * seq
    T = seq
    lin = {"q": (C, C), "k": (C, C), "v": (C, C), "o": (C, C), "ffn_in": (C, F), "ffn_out": (F, C)}
    lin_fwd = sum(2 * N * i * o for i, o in lin.values())
    attn_fwd = 2 * batch * T * T * C * 2
    head_fwd = 2 * batch * (C * C + C * num_labels)
    lora_fwd = 0
    if mode == "lora" and not infer:
        lora_fwd = sum(2 * N * r * (lin[k][0] + lin[k][1]) for k in TARGET_ROLES[targets])
    fwd = L * (lin_fwd + attn_fwd + lora_fwd) + head_fwd
    if infer:
        return fwd
    if mode == "last-layers":
        bwd = 2 * head_fwd
    else:
        base_mult = 2 if mode == "full" else 1
        head_mult = 2 if mode == "full" else 1
        bwd = L * (base_mult * lin_fwd + 2 * attn_fwd + 2 * lora_fwd) + head_mult * head_fwd
    return fwd + bwd


def decoder_flop_count(d, batch, seq, mode, targets, r, task="cls", infer=False, num_labels=2):
    """Analytic matrix-product FLOPs of one decoder step, by the same rules as `flop_count`.

    With N = batch*seq tokens, C width, F MLP width, H query heads, KV key/value heads, D head width,
    per decoder layer:
      forward   linears   2*N*(C*H*D (q) + 2*C*KV*D (k, v) + H*D*C (o) + 3*C*F (gate, up, down))
                attention 2*batch*T*T*H*D*2 (scores and context over the full T x T square, as
                          lowrank's analytic_flops counts it, although a causal kernel may skip half)
                LoRA      2*N*r*(in + out) for each targeted projection
      head      cls: 2*batch*C*num_labels (score, last-token rows only);
                causal-lm: 2*N*C*V (the tied lm_head over every position)
    Backward: frozen linear 1x (input gradient), trained linear 2x, attention 2x, LoRA 2x. In
    last-layers mode (cls) only the head and the last layer are backpropagated.
    """
    C, F, L, H, KV, D, V = (d[k] for k in ("C", "F", "L", "H", "KV", "D", "V"))
    N = batch * seq
    T = seq
    lin = {"q": (C, H * D), "k": (C, KV * D), "v": (C, KV * D), "o": (H * D, C), "gate": (C, F), "up": (C, F), "down": (F, C)}
    lin_fwd = sum(2 * N * i * o for i, o in lin.values())
    attn_fwd = 2 * batch * T * T * H * D * 2
    head_fwd = 2 * batch * C * num_labels if task == "cls" else 2 * N * C * V
    lora_fwd = 0
    if mode == "lora" and not infer:
        lora_fwd = sum(2 * N * r * (lin[k][0] + lin[k][1]) for k in DECODER_TARGET_ROLES[targets])
    fwd = L * (lin_fwd + attn_fwd + lora_fwd) + head_fwd
    if infer:
        return fwd
    if mode == "last-layers":
        bwd = 2 * (lin_fwd + attn_fwd) + 2 * head_fwd
    else:
        base_mult = 2 if mode == "full" else 1
        bwd = L * (base_mult * lin_fwd + 2 * attn_fwd + 2 * lora_fwd) + base_mult * head_fwd
    return fwd + bwd


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="distilbert-base", help="distilbert-base | bert-base | minilm-l6 | smollm2-135m | path to config.json")
    p.add_argument("--task", choices=["cls", "causal-lm"], default="cls", help="sequence classification, or causal-LM loss (decoders)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--mode", choices=["lora", "last-layers", "full"], default="lora")
    p.add_argument("--targets", choices=["qv", "all"], default="all")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--infer", action="store_true", help="time inference forward passes instead of training")
    # torch-only: lowrank has no equivalent; compare.sh does not pass it.
    p.add_argument("--attn-impl", choices=["eager", "sdpa"], default="sdpa", help="transformers attention implementation (torch only)")
    return p.parse_args(argv)


class Workload:
    """A built model and batch, ready to step (see `build`)."""


def build(args):
    """Builds the model (random weights), applies the fine-tuning mode and makes the batch."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
    import peft

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    if args.config in PRESETS:
        cfg_path, cfg_name = PRESETS[args.config], args.config
    else:
        cfg_path = Path(args.config)
        cfg_name = cfg_path.stem if cfg_path.name != "config.json" else cfg_path.parent.name
    raw = json.loads(Path(cfg_path).read_text())
    kind = raw.get("model_type")
    if kind not in TARGETS:
        sys.exit(f"unsupported model_type {kind!r}: use distilbert, bert or llama")
    decoder = kind in DECODERS
    if args.task == "causal-lm" and not decoder:
        sys.exit("--task causal-lm needs a decoder config (model_type llama)")
    if args.task == "causal-lm" and args.mode == "last-layers":
        sys.exit("--mode last-layers is for --task cls only")
    if args.seq > raw.get("max_position_embeddings", 512):
        sys.exit(f"--seq {args.seq} exceeds max_position_embeddings")
    d = dims(raw)

    fields = {k: v for k, v in raw.items() if k not in ("architectures", "transformers_version", "model_type")}
    config = AutoConfig.for_model(kind, **fields)
    config.num_labels = 2
    auto = AutoModelForCausalLM if args.task == "causal-lm" else AutoModelForSequenceClassification
    model = auto.from_config(config, attn_implementation=args.attn_impl)
    if decoder and raw.get("tie_word_embeddings") and args.task == "causal-lm":
        assert model.lm_head.weight is model.model.embed_tokens.weight, "lm_head not tied"
    model.to(torch.float32)

    if args.mode == "lora":
        lcfg = peft.LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=0.0,
            target_modules=TARGETS[kind][args.targets],
            bias="none",
        )
        model = peft.get_peft_model(model, lcfg)
    else:
        for p_ in model.parameters():
            p_.requires_grad_(args.mode == "full")
        if args.mode == "last-layers":
            if decoder:
                head = [model.score, model.model.layers[-1], model.model.norm]
            else:
                head = [model.classifier] + ([model.pre_classifier] if kind == "distilbert" else [model.bert.pooler.dense])
            for m in head:
                for p_ in m.parameters():
                    p_.requires_grad_(True)

    w = Workload()
    w.cfg_name, w.kind, w.dims = cfg_name, kind, d
    w.trainable = sum(p_.numel() for p_ in model.parameters() if p_.requires_grad)
    g = torch.Generator().manual_seed(args.seed)
    w.ids = torch.randint(1000, d["V"], (args.batch, args.seq), generator=g)
    w.mask = torch.ones_like(w.ids)
    w.labels = torch.randint(0, 2, (args.batch,), generator=g)
    w.task = args.task
    if decoder:
        assert not (w.ids == config.pad_token_id).any()
    w.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")

    if args.infer:
        if args.mode == "lora":
            model = model.merge_and_unload()
        model.eval()
    else:
        model.train()
        w.optim = torch.optim.Adam([p_ for p_ in model.parameters() if p_.requires_grad], lr=5e-5)
    w.model = model
    w.total = sum(p_.numel() for p_ in model.parameters())
    log(
        f"torch {torch.__version__} threads={torch.get_num_threads()} config={cfg_name} task={args.task} mode={args.mode} "
        f"targets={args.targets} precision={args.precision} attn={args.attn_impl} infer={args.infer} "
        f"trainable={w.trainable} total={w.total}"
    )
    return w


def step(w, args):
    """One timed step: returns (step, forward, backward, optimizer) seconds (the last two None for --infer)."""
    import torch

    if args.infer:
        with torch.inference_mode():
            t0 = time.perf_counter()
            with w.autocast():
                w.model(input_ids=w.ids, attention_mask=w.mask).logits
            t1 = time.perf_counter()
        return t1 - t0, t1 - t0, None, None
    t0 = time.perf_counter()
    w.optim.zero_grad(set_to_none=True)
    with w.autocast():
        if w.task == "causal-lm":
            loss = w.model(input_ids=w.ids, attention_mask=w.mask, labels=w.ids).loss
        else:
            logits = w.model(input_ids=w.ids, attention_mask=w.mask).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), w.labels)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    w.optim.step()
    t3 = time.perf_counter()
    w.last_loss = loss.item()
    return t3 - t0, t1 - t0, t2 - t1, t3 - t2


def report(w, args, times):
    """The JSON object for a list of `step` results (timed steps only)."""
    import torch
    import transformers
    import peft

    steps = [t[0] for t in times]
    med = statistics.median(steps)
    if w.kind in DECODERS:
        gflop = decoder_flop_count(w.dims, args.batch, args.seq, args.mode, args.targets, args.lora_r, task=args.task, infer=args.infer) / 1e9
    else:
        gflop = flop_count(w.dims["C"], w.dims["F"], w.dims["L"], args.batch, args.seq, args.mode, args.targets, args.lora_r, infer=args.infer) / 1e9
    return {
        "impl": "torch",
        "version": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "config": w.cfg_name,
        "task": args.task,
        "mode": args.mode,
        "targets": args.targets,
        "lora_r": args.lora_r,
        "precision": args.precision,
        "batch": args.batch,
        "seq": args.seq,
        "threads": args.threads,
        "steps": args.steps,
        "warmup": args.warmup,
        "infer": args.infer,
        "attn_impl": args.attn_impl,
        "step_s": {"median": med, "min": min(steps), "max": max(steps)},
        "forward_s": statistics.median(t[1] for t in times),
        "backward_s": None if args.infer else statistics.median(t[2] for t in times),
        "optimizer_s": None if args.infer else statistics.median(t[3] for t in times),
        "examples_per_s": args.batch / med,
        "tokens_per_s": args.batch * args.seq / med,
        "gflop_per_step": gflop,
        "gflops": gflop / med,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable_params": w.trainable,
        "total_params": w.total,
        "cpu": cpu_model(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def describe(i, t, w, args):
    warm = " (warmup)" if i < args.warmup else ""
    if t[2] is None:
        return f"step {i}: {t[0]:.3f}s{warm}"
    return f"step {i}: {t[0]:.3f}s (fwd {t[1]:.3f} bwd {t[2]:.3f} opt {t[3]:.4f}) loss {w.last_loss:.4f}{warm}"


def main(argv=None):
    args = parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.seq < 1 or args.threads < 1:
        sys.exit("--steps, --batch, --seq, --threads must be >= 1 and --warmup >= 0")
    w = build(args)
    times = []
    for i in range(args.warmup + args.steps):
        t = step(w, args)
        log(describe(i, t, w, args))
        if i >= args.warmup:
            times.append(t)
    print(json.dumps(report(w, args, times)), flush=True)


if __name__ == "__main__":
    main()
