#!/usr/bin/env python3
"""Checks lowrank's GGUF export for llama.cpp with gguf-py's own reader (run by hand; needs gguf,
numpy, safetensors, as in /work/venv):

    lowrank export --model BASE.gguf --adapter PEFT_DIR --format gguf --out adapter.gguf
    lowrank merge  --model BASE.gguf --adapter PEFT_DIR --format gguf --out merged.gguf
    python scripts/golden/check_gguf_export.py --base BASE.gguf --peft PEFT_DIR \
        --adapter adapter.gguf [--merged merged.gguf]

1. The adapter: general.type "adapter", adapter.type "lora", general.architecture equal to the
   base's, adapter.lora.alpha an F32 with alpha / r (float32, as llama.cpp's get_scale computes
   it) equal to PEFT's scale; every PEFT lora_A / lora_B pair present as
   blk.N.<tensor>.weight.lora_a / .lora_b, F32, GGUF shapes [in, r] / [r, out], values equal to
   PEFT's, lora_b's rows of attn_q / attn_k in the order of llama.cpp's converter (rows viewed as
   [n_head, 2, head_dim / 2], the last two axes swapped), and nothing else.
2. The merged model (optional): the base's metadata keys and values in the same order (except
   general.file_type), its tensors in the same order with the same shapes; each equal to the
   dequantized base plus (alpha / r) * lora_b @ lora_a, rounded to f16 (one f16 step of slack),
   vectors kept F32.

Exits with status 1 and a list of failures when anything differs.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType
from gguf.quants import dequantize
from safetensors.numpy import load_file

# Hugging Face module suffix -> llama.cpp tensor infix (llama / qwen2 families).
LAYER = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
    return ok


def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else (f.types[0], f.contents())


def gguf_name(module):
    if module == "lm_head":
        return "output"
    parts = module.split(".")
    assert parts[0] == "model" and parts[1] == "layers", module
    return f"blk.{parts[2]}.{LAYER['.'.join(parts[3:])]}"


def llama_cpp_rows(m, n_head):
    """Row order of llama.cpp's converter for attn_q / attn_k: [n_head, 2, hd/2, ...] -> swap."""
    rows = m.shape[0]
    return m.reshape(n_head, 2, rows // n_head // 2, *m.shape[1:]).swapaxes(1, 2).reshape(m.shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="the base GGUF")
    ap.add_argument("--peft", type=Path, required=True, help="the PEFT adapter folder")
    ap.add_argument("--adapter", type=Path, required=True, help="lowrank's GGUF adapter")
    ap.add_argument("--merged", type=Path, help="lowrank's merged GGUF")
    a = ap.parse_args()

    base = GGUFReader(a.base)
    arch = field(base, "general.architecture")[1]
    n_head = int(field(base, f"{arch}.attention.head_count")[1])
    n_kv = int(field(base, f"{arch}.attention.head_count_kv")[1])
    permutes = arch == "llama"
    cfg = json.loads((a.peft / "adapter_config.json").read_text())
    r = cfg["r"]
    peft_scale = np.float32(cfg["lora_alpha"]) / np.float32(np.sqrt(r) if cfg.get("use_rslora") else r)
    peft = load_file(a.peft / "adapter_model.safetensors")

    ad = GGUFReader(a.adapter)
    check(field(ad, "general.type") == (GGUFValueType.STRING, "adapter"), "general.type must be 'adapter'")
    check(field(ad, "adapter.type") == (GGUFValueType.STRING, "lora"), "adapter.type must be 'lora'")
    check(field(ad, "general.architecture") == (GGUFValueType.STRING, arch), f"general.architecture must be {arch!r}")
    alpha_type, alpha = field(ad, "adapter.lora.alpha")
    check(alpha_type == GGUFValueType.FLOAT32, "adapter.lora.alpha must be FLOAT32 (llama.cpp reads it with gguf_get_val_f32)")
    scale = np.float32(alpha) / np.float32(r)
    check(scale == peft_scale, f"llama.cpp's scale alpha / r = {scale} differs from PEFT's {peft_scale}")
    tensors = {t.name: t for t in ad.tensors}
    seen = set()
    deltas = {}
    for key in sorted(k for k in peft if k.endswith(".lora_A.weight")):
        module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        name = gguf_name(module) + ".weight"
        A = peft[key]
        B = peft[f"base_model.model.{module}.lora_B.weight"]
        ta, tb = tensors.get(name + ".lora_a"), tensors.get(name + ".lora_b")
        if not check(ta is not None and tb is not None, f"{name}: lora_a / lora_b missing"):
            continue
        seen.update({ta.name, tb.name})
        check(list(ta.shape) == [A.shape[1], r] and list(tb.shape) == [r, B.shape[0]], f"{name}: GGUF shapes {list(ta.shape)} / {list(tb.shape)}")
        check(ta.tensor_type == GGMLQuantizationType.F32 and tb.tensor_type == GGMLQuantizationType.F32, f"{name}: not F32")
        want_b = B
        if permutes and ".attn_q." in name:
            want_b = llama_cpp_rows(B, n_head)
        elif permutes and ".attn_k." in name:
            want_b = llama_cpp_rows(B, n_kv)
        ga, gb = np.asarray(ta.data).reshape(A.shape), np.asarray(tb.data).reshape(B.shape)
        check(np.array_equal(ga, A), f"{name}.lora_a differs from PEFT's lora_A.weight")
        check(np.array_equal(gb, want_b), f"{name}.lora_b differs from PEFT's lora_B.weight in llama.cpp's row order")
        deltas[name] = scale * (gb.astype(np.float32) @ ga.astype(np.float32))
    check(seen == set(tensors), f"adapter has extra tensors: {sorted(set(tensors) - seen)}")
    print(f"adapter {a.adapter}: {len(deltas)} modules, alpha {alpha} (scale {scale} = PEFT's), {arch}, permuted q/k rows: {permutes}")

    if a.merged:
        m = GGUFReader(a.merged)
        bkeys = [k for k in base.fields if not k.startswith("GGUF.") and k != "general.alignment"]
        mkeys = [k for k in m.fields if not k.startswith("GGUF.")]
        check(bkeys == mkeys, "merged metadata keys differ from the base's")
        for k in bkeys:
            if k != "general.file_type":
                check(field(m, k) == field(base, k), f"metadata {k} differs")
        check([t.name for t in m.tensors] == [t.name for t in base.tensors], "merged tensor order differs")
        worst = 0.0
        for bt, mt in zip(base.tensors, m.tensors):
            check(list(bt.shape) == list(mt.shape), f"{bt.name}: shape {list(mt.shape)} vs {list(bt.shape)}")
            vector = len(bt.shape) == 1
            check(mt.tensor_type == (GGMLQuantizationType.F32 if vector else GGMLQuantizationType.F16) or field(m, "general.file_type")[1] == 0, f"{bt.name}: type {mt.tensor_type.name}")
            base_w = dequantize(bt.data, bt.tensor_type).astype(np.float32).reshape(-1)
            delta = deltas[bt.name].reshape(-1) if bt.name in deltas else np.zeros_like(base_w)
            want = base_w + delta
            got = dequantize(mt.data, mt.tensor_type).astype(np.float32).reshape(-1)
            if mt.tensor_type == GGMLQuantizationType.F16:
                rounded = want.astype(np.float16).astype(np.float32)
                step = np.maximum(np.abs(want) / 1024, 6e-8)
                err = np.abs(got - rounded) / step
            else:
                # f32 sums in another order: a few ulps of the larger of base and delta.
                err = np.abs(got - want) / (1e-6 * (np.abs(base_w) + np.abs(delta)) + 1e-30)
            worst = max(worst, float(err.max(initial=0.0)))
            check(err.max(initial=0.0) <= 1.0, f"{bt.name}: merged differs from base + delta by {err.max():.2f} steps")
        print(f"merged {a.merged}: {len(m.tensors)} tensors = base + delta (worst {worst:.3f} f16 steps / f32 ppm)")

    if failures:
        print(f"{len(failures)} failures:", *failures, sep="\n  ")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
