#!/usr/bin/env python3
"""Generation speed of transformers' `generate` on the real SmolLM2-135M-Instruct: the peer of `lowrank generate`.

Batch 1, greedy (do_sample=False), KV cache on, from a fixed prompt: the ChatML rendering (the tokenizer's chat
template, its default system prompt, add_generation_prompt=True) of --question (default "What is the capital of
France?", 37 tokens), exactly --new-tokens new tokens (default 64: min_new_tokens = max_new_tokens, so an early eos
does not shorten a run). The model is the GGUF dequantized to fp32 by transformers
(``AutoModelForCausalLM.from_pretrained(dir, gguf_file=name, dtype=torch.float32)``); precisions: fp32 and
``torch.autocast("cpu", dtype=torch.bfloat16)`` (weights stay fp32; the matrix products run in bf16).

For each precision: one untimed warm-up generate, then --runs timed ones; median (and min / max) of:
  generate_s             wall time of the whole generate call (prefill of the prompt included);
  tokens_per_s           new tokens / generate_s (the headline figure, as `lowrank generate` prints it);
  prefill_s              one forward of the prompt alone (use_cache=True), timed the same way;
  decode_tokens_per_s    (new tokens - 1) / (generate_s - prefill_s): the per-token rate after the first token
                         (the first new token comes out of the prefill).
Prints ONE JSON object to stdout (everything else goes to stderr), like bench/torch_reference.py:

    /work/bin/cpu /work/venv/bin/python bench/torch_generate.py [--gguf PATH] [--runs 5] [--threads 2] \\
        [--precision fp32,bf16] [--attn-impl sdpa|eager] > generate.json

The generated ids of every run are checked to be identical (greedy decoding is deterministic), and the text is
reported, so a broken model cannot pass for a fast one. Do not run anything else meanwhile.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GGUF = ROOT / "assets" / "SmolLM2-135M-Instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


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


def stats(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--question", default="What is the capital of France?")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5, help="timed runs per precision (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16")
    ap.add_argument("--attn-impl", choices=["sdpa", "eager"], default="sdpa")
    args = ap.parse_args(argv)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if any(p not in ("fp32", "bf16") for p in precisions) or not precisions:
        ap.error("--precision: fp32 and/or bf16")
    if args.runs < 1 or args.new_tokens < 2:
        ap.error("--runs >= 1 and --new-tokens >= 2")

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    gguf = args.gguf.resolve()
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                 attn_implementation=args.attn_impl).eval()
    load_s = time.perf_counter() - t0
    log(f"loaded {gguf.name} in {load_s:.1f} s; torch {torch.__version__} threads {torch.get_num_threads()} "
        f"attn {model.config._attn_implementation}")

    msgs = [{"role": "user", "content": args.question}]
    rendered = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    prompt = tok(rendered, add_special_tokens=False)["input_ids"]
    x = torch.tensor([prompt], dtype=torch.int64)
    mask = torch.ones_like(x)
    n_new = args.new_tokens

    results = {}
    for prec in precisions:
        def ctx():
            return torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16")

        def prefill():
            with torch.inference_mode(), ctx():
                model(input_ids=x, attention_mask=mask, use_cache=True)

        def gen():
            with torch.inference_mode(), ctx():
                out = model.generate(input_ids=x, attention_mask=mask, do_sample=False, max_new_tokens=n_new,
                                     min_new_tokens=n_new, use_cache=True, pad_token_id=tok.pad_token_id)
            new = out[0, x.shape[1]:].tolist()
            assert len(new) == n_new, len(new)
            return new

        first = gen()  # warm-up
        prefill()
        gen_s, pre_s = [], []
        for i in range(args.runs):
            t = time.perf_counter()
            new = gen()
            gen_s.append(time.perf_counter() - t)
            assert new == first, f"{prec}: run {i} generated other tokens than the warm-up"
            t = time.perf_counter()
            prefill()
            pre_s.append(time.perf_counter() - t)
            log(f"{prec} run {i}: generate {gen_s[-1]:.3f} s ({n_new / gen_s[-1]:.1f} tokens/s), prefill {pre_s[-1]:.3f} s")
        g, p = statistics.median(gen_s), statistics.median(pre_s)
        results[prec] = {
            "generate_s": stats(gen_s),
            "tokens_per_s": n_new / g,
            "best_tokens_per_s": n_new / min(gen_s),
            "prefill_s": stats(pre_s),
            "prefill_tokens_per_s": len(prompt) / p,
            "decode_tokens_per_s": (n_new - 1) / (g - p) if g > p else None,
            "new_ids": first,
            "text": tok.decode(first, skip_special_tokens=False),
        }
        log(f"{prec}: median {n_new / g:.2f} tokens/s (generate {g:.3f} s, prefill {p:.3f} s)")

    res = {
        "impl": "torch",
        "what": "generate",
        "version": {"torch": torch.__version__, "transformers": transformers.__version__},
        "model": gguf.name,
        "weights": "GGUF dequantized to fp32 by transformers",
        "attn_impl": model.config._attn_implementation,
        "batch": 1,
        "greedy": True,
        "use_cache": True,
        "question": args.question,
        "prompt": "ChatML via the tokenizer's chat template (default system prompt), add_generation_prompt=True",
        "prompt_tokens": len(prompt),
        "new_tokens": n_new,
        "threads": args.threads,
        "runs": args.runs,
        "warmup": 1,
        "load_s": load_s,
        "results": results,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu": cpu_info(),
        "loadavg_at_end": os.getloadavg(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
