#!/usr/bin/env python3
"""lowrank -> PEFT for causal-LM adapters, recorded for CI (tests/peft_interop_lm.rs).

Run from the repository root with the reference stack (torch 2.15, transformers 5.24, peft 0.21.2; CPU) and a
built lowrank:

    /work/venv/bin/python scripts/golden/make_peft_interop_lm.py [--lowrank target/release/lowrank]

Writes tests/fixtures/peft-decoder/lowrank-made/:

  model/          the tiny random Llama of tests/fixtures/golden/tiny-llama (config.json, model.safetensors)
                  with a character-level tokenizer (a-z, space, newline, digits and .,?!' one token each, then
                  <|im_start|>, <|im_end|> = eos, <|endoftext|> = bos; concatenating decoder; ChatML template)
  chats.jsonl     120 conversations: the user names a word, the assistant spells it backwards
  <case>/         for each case in CASES: `lowrank train --model model --data chats.jsonl <args>` (a seeded
                  causal-LM LoRA run), the adapter files it wrote (adapter_config.json, adapter_model.safetensors),
                  and expected.json: train_args, cpu_features (of this machine: with the same features the test
                  requires the same bytes), input_ids (3 sequences), and peft_logits: the last position's logits
                  [3][97] of PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(model), adapter) in eval
                  mode, each sequence alone; base_logits without the adapter; max_abs_peft_minus_base.

Before writing, PEFT must hold every tensor of the adapter file unchanged. The Rust test trains the same runs
with the build under test, requires the same files and that lowrank's logits are PEFT's within 1e-5 (another
CPU: the tensors and logits within 1e-3 of their scale).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM
from peft import PeftModel

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/peft-decoder/lowrank-made"
TINY = ROOT / "tests/fixtures/golden/tiny-llama"
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
          " + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
ALL7 = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
COMMON = ["--max-length", "64", "--batch-size", "8", "--seed", "5", "--epochs", "2", "--lr", "1e-2"]
CASES = {
    "lm-qv": COMMON + ["--scaling", "peft", "--lora-r", "4", "--lora-alpha", "8", "--target-modules", "q_proj,v_proj"],
    "lm-all-rslora-dropout": COMMON + ["--scaling", "rslora", "--lora-r", "4", "--lora-alpha", "4", "--lora-dropout",
                                       "0.1", "--target-modules", ALL7],
}
INPUT_IDS = [[46, 10, 0, 19, 26, 0, 47, 44, 45], [46, 3, 14, 6], [46, 20, 14, 13, 26, 11, 4, 24, 26, 0, 18, 47, 44]]
FEATURES = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_bf16"]


def write_model(model: Path):
    model.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copyfile(TINY / f, model / f)
    chars = list("abcdefghijklmnopqrstuvwxyz \n0123456789.,?!'")
    n = len(chars)

    def special(i, content):
        return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True}

    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [special(n, "<|im_start|>"), special(n + 1, "<|im_end|>"), special(n + 2, "<|endoftext|>")],
        "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": {"type": "Fuse"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": {c: i for i, c in enumerate(chars)}, "merges": []},
    }
    (model / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False, sort_keys=True) + "\n")
    config = {"eos_token": "<|im_end|>", "bos_token": "<|endoftext|>", "chat_template": CHATML}
    (model / "tokenizer_config.json").write_text(json.dumps(config, sort_keys=True) + "\n")


def write_chats(path: Path):
    words = ["cat", "dog", "sun", "map", "red", "box", "pen", "cup", "hat", "key", "owl", "jam"]
    with path.open("w") as f:
        for i in range(120):
            w = words[i % 12] if i % 2 == 0 else f"{words[i % 12]} {words[(i // 2) % 12]}"
            chat = [{"role": "user", "content": w}, {"role": "assistant", "content": w[::-1]}]
            f.write(json.dumps({"messages": chat}) + "\n")


def cpu_features() -> list[str]:
    flags = next((l.split(":", 1)[1] for l in open("/proc/cpuinfo") if l.startswith("flags")), "").split()
    return sorted(f for f in flags if f in FEATURES)


def last_logits(model) -> list[list[float]]:
    with torch.no_grad():
        return [model(torch.tensor([ids])).logits[0, -1].tolist() for ids in INPUT_IDS]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lowrank", default=str(ROOT / "target/release/lowrank"))
    a = ap.parse_args()
    model_dir, chats = OUT / "model", OUT / "chats.jsonl"
    write_model(model_dir)
    write_chats(chats)
    base = LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    base_logits = last_logits(base)
    for name, args in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            cmd = [a.lowrank, "train", "--model", str(model_dir), "--data", str(chats), *args, "--out", str(run)]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            case = OUT / name
            shutil.rmtree(case, ignore_errors=True)
            case.mkdir(parents=True)
            for f in ("adapter_config.json", "adapter_model.safetensors"):
                shutil.copyfile(run / "adapter" / f, case / f)
        peft_model = PeftModel.from_pretrained(
            LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="eager"), case).eval()
        held = peft_model.state_dict()
        for k, v in load_file(case / "adapter_model.safetensors").items():
            key = k.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
            assert key in held and torch.equal(held[key], v), f"{name}: PEFT does not hold {k} as saved"
        logits = last_logits(peft_model)
        delta = max(abs(x - y) for r, s in zip(logits, base_logits) for x, y in zip(r, s))
        assert delta > 1e-2, f"{name}: the adapter barely changes the logits ({delta})"
        expected = {"case": name, "train_args": args, "cpu_features": cpu_features(), "input_ids": INPUT_IDS,
                    "peft_logits": logits, "base_logits": base_logits, "max_abs_peft_minus_base": delta,
                    "versions": {"torch": torch.__version__, "peft": __import__("peft").__version__,
                                 "transformers": __import__("transformers").__version__}}
        (case / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
        print(f"{name}: PEFT loaded lowrank's adapter; max |logits - base| {delta:.4f}")


if __name__ == "__main__":
    sys.exit(main())
