#!/usr/bin/env python3
"""Checks lowrank's GGUF export for llama.cpp with gguf-py's own reader (run by hand; needs gguf,
numpy, safetensors, as in /work/venv; CI needs none of them: it checks that lowrank still writes
the bytes checked here, by the CRC-32 in the reports).

    lowrank export --model BASE.gguf --adapter PEFT_DIR --format gguf --out adapter.gguf
    lowrank merge  --model BASE.gguf --adapter PEFT_DIR --format gguf --out merged.gguf
    python scripts/golden/check_gguf_export.py --base BASE.gguf --peft PEFT_DIR \
        --adapter adapter.gguf [--merged merged.gguf]... [--report REPORT.json]

The committed reports tests/fixtures/gguf-export/*.check.json come from the files the tests in
tests/gguf_export.rs write (they leave them in LOWRANK_GGUF_EXPORT_OUT/<case>):

    LOWRANK_GGUF_EXPORT_OUT=/tmp/gx cargo test --release --test gguf_export
    D=/tmp/gx/tiny-llama-lm-all; python scripts/golden/check_gguf_export.py --base $D/base.gguf \
        --peft tests/fixtures/peft-decoder/llama-lm-all --adapter $D/adapter.gguf \
        --merged $D/merged-f32.gguf --merged $D/merged-f16.gguf \
        --report tests/fixtures/gguf-export/tiny-llama-lm-all.check.json
    D=/tmp/gx/smollm2-adapter-qv; python scripts/golden/check_gguf_export.py \
        --base assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf \
        --peft tests/fixtures/smollm2/adapter-qv --adapter $D/adapter.gguf \
        --merged $D/merged-f16.gguf --report tests/fixtures/gguf-export/smollm2-adapter-qv.check.json

1. The adapter: general.type "adapter", adapter.type "lora", general.architecture equal to the
   base's, adapter.lora.alpha an F32 with alpha / r (float32, as llama.cpp's get_scale computes
   it) within one float32 step of PEFT's scale; every PEFT lora_A / lora_B pair present as
   blk.N.<tensor>.weight.lora_a / .lora_b, F32, GGUF shapes [in, r] / [r, out], values equal to
   PEFT's, lora_b's rows of attn_q / attn_k in the order of llama.cpp's converter (rows viewed as
   [n_head, 2, head_dim / 2], the last two axes swapped), and nothing else; and the shape checks
   of llama.cpp's llama_adapter_lora_init: the base tensor exists, its ne[0] is lora_a's ne[0],
   its ne[1] lora_b's ne[1], and lora_a's ne[1] is lora_b's ne[0].
2. The merged models (optional): the base's metadata keys and values in the same order (except
   general.file_type, and general.alignment dropped), its tensors in the same order with the same
   shapes; each equal to the dequantized base plus (alpha / r) * lora_b @ lora_a, rounded to f16
   (one f16 step of slack) or f32 (a few ppm), vectors kept F32.

Exits with status 1 and a list of failures when anything differs; --report writes the results
(and the size and CRC-32 of every file read) as JSON either way.
"""

import argparse
import json
import math
import sys
import zlib
from importlib.metadata import version
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


def file_id(path):
    data = path.read_bytes()
    return {"bytes": len(data), "crc32": f"{zlib.crc32(data):08x}"}


def ulps(a, b):
    """Distance in float32 steps between two finite float32 of the same sign."""
    return abs(int(np.float32(a).view(np.int32)) - int(np.float32(b).view(np.int32)))


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
    ap.add_argument("--merged", type=Path, action="append", default=[], help="lowrank's merged GGUF (repeatable)")
    ap.add_argument("--report", type=Path, help="write the results as JSON here")
    a = ap.parse_args()

    base = GGUFReader(a.base)
    arch = field(base, "general.architecture")[1]
    n_head = int(field(base, f"{arch}.attention.head_count")[1])
    n_kv = int(field(base, f"{arch}.attention.head_count_kv")[1])
    permutes = arch == "llama"
    cfg = json.loads((a.peft / "adapter_config.json").read_text())
    r = cfg["r"]
    # PEFT computes the factor in Python floats, then multiplies float32 tensors by it.
    peft_scale = np.float32(cfg["lora_alpha"] / (math.sqrt(r) if cfg.get("use_rslora") else r))
    peft = load_file(a.peft / "adapter_model.safetensors")

    ad = GGUFReader(a.adapter)
    check(field(ad, "general.type") == (GGUFValueType.STRING, "adapter"), "general.type must be 'adapter'")
    check(field(ad, "adapter.type") == (GGUFValueType.STRING, "lora"), "adapter.type must be 'lora'")
    check(field(ad, "general.architecture") == (GGUFValueType.STRING, arch), f"general.architecture must be {arch!r}")
    alpha_type, alpha = field(ad, "adapter.lora.alpha")
    check(alpha_type == GGUFValueType.FLOAT32, "adapter.lora.alpha must be FLOAT32 (llama.cpp reads it with gguf_get_val_f32)")
    scale = np.float32(alpha) / np.float32(r)
    scale_ulps = ulps(scale, peft_scale)
    check(scale_ulps <= 1, f"llama.cpp's scale alpha / r = {scale} is {scale_ulps} float32 steps from PEFT's {peft_scale}")
    base_tensors = {t.name: t for t in base.tensors}
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
        shapes = f"{name}: GGUF shapes {list(ta.shape)} / {list(tb.shape)}, PEFT's [r, in] {list(A.shape)} / [out, r] {list(B.shape)}"
        if not check(list(ta.shape) == [A.shape[1], r] and list(tb.shape) == [r, B.shape[0]], shapes):
            continue
        check(ta.tensor_type == GGMLQuantizationType.F32 and tb.tensor_type == GGMLQuantizationType.F32, f"{name}: not F32")
        # llama_adapter_lora_init's checks (ne[] are GGUF dims, gguf-py's .shape).
        bt = base_tensors.get(name)
        if check(bt is not None, f"{name}: no such tensor in the base, llama.cpp refuses the adapter"):
            check(int(bt.shape[0]) == int(ta.shape[0]) and int(bt.shape[1]) == int(tb.shape[1]), f"{name}: llama.cpp's tensor shape check fails")
        check(int(ta.shape[1]) == int(tb.shape[0]), f"{name}: lora_a's ne[1] is not lora_b's ne[0] (the rank)")
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
    print(f"adapter {a.adapter}: {len(deltas)} modules, alpha {alpha} (scale {scale}, PEFT's {peft_scale}: {scale_ulps} float32 steps), {arch}, permuted q/k rows: {permutes}")
    report = {
        "description": "scripts/golden/check_gguf_export.py: lowrank's GGUF files read with gguf-py and compared with the PEFT adapter",
        "files": {a.base.name: file_id(a.base), a.adapter.name: file_id(a.adapter)},
        "adapter": {"architecture": arch, "modules": len(deltas), "rank": r, "alpha": float(alpha), "scale": float(scale), "peft_scale": float(peft_scale), "scale_float32_steps": scale_ulps, "permuted_qk": permutes},
        "merged": {},
        "versions": {p: version(p) for p in ["gguf", "numpy", "safetensors"]},
    }

    for merged_path in a.merged:
        report["files"][merged_path.name] = file_id(merged_path)
        m = GGUFReader(merged_path)
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
            all_f32 = field(m, "general.file_type")[1] == 0
            want_type = GGMLQuantizationType.F32 if vector or all_f32 else GGMLQuantizationType.F16
            check(mt.tensor_type == want_type, f"{bt.name}: type {mt.tensor_type.name}, want {want_type.name}")
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
        file_type = int(field(m, "general.file_type")[1])
        print(f"merged {merged_path}: {len(m.tensors)} tensors = base + delta (file_type {file_type}; worst {worst:.3f} f16 steps / f32 ppm)")
        report["merged"][merged_path.name] = {"tensors": len(m.tensors), "file_type": file_type, "worst_error_in_steps": worst}

    report["result"] = "failed" if failures else "ok"
    report["failures"] = failures
    if a.report:
        a.report.parent.mkdir(parents=True, exist_ok=True)
        a.report.write_text(json.dumps(report, indent=1) + "\n")
    if failures:
        print(f"{len(failures)} failures:", *failures, sep="\n  ")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
