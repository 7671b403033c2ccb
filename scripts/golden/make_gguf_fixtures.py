#!/usr/bin/env python3
"""Golden GGUF file for lowrank's GGUF reader and dequantizer (src/gguf).

Run from the repository root (gguf-py 0.19, numpy, safetensors; e.g. `pip install gguf safetensors`):

    python scripts/golden/make_gguf_fixtures.py

Writes, under tests/fixtures/gguf/:
  types.gguf             GGUF v3 written by gguf-py's GGUFWriter: one tensor per ggml type lowrank
                         dequantizes and metadata of every value type (see METADATA below).
  expected.safetensors   for each tensor, its values dequantized by gguf-py's
                         `gguf.quants.dequantize`, float32, in PyTorch order (shape as numpy has it).
  types.json             gguf-py's GGML_QUANT_SIZES and GGMLQuantizationType codes (for the type
                         table test), and for each tensor its type, numpy shape and GGUF dims.

Tensors whose type gguf-py can quantize (BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) are quantized from
random normal values with `gguf.quants.quantize`; F32 and F16 are stored as they are; the K-quants
(Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K), which gguf-py only dequantizes, are random bytes with finite
f16 (Q8_K: f32) scales. gguf-py has no Q8_K dequantizer, so its expected values are computed here
from ggml's definition (y = d * q, see `q8_k_reference`); every other expected value is gguf-py's.

`--check-file PATH` instead reads a GGUF file (e.g. one written by lowrank's GgufWriter) with
gguf-py's GGUFReader and prints its metadata and tensors, failing on any inconsistency.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

OUT = Path("tests/fixtures/gguf")

# (key, value, value type, sub type for arrays) -- the Rust test checks each of these.
METADATA = [
    ("test.u8", 200, V.UINT8, None),
    ("test.i8", -100, V.INT8, None),
    ("test.u16", 60000, V.UINT16, None),
    ("test.i16", -30000, V.INT16, None),
    ("test.u32", 4000000000, V.UINT32, None),
    ("test.i32", -2000000000, V.INT32, None),
    ("test.f32", 0.1, V.FLOAT32, None),
    ("test.bool_true", True, V.BOOL, None),
    ("test.bool_false", False, V.BOOL, None),
    ("test.string", "héllo wörld 🙂", V.STRING, None),
    ("test.empty_string", "", V.STRING, None),
    ("test.u64", 18000000000000000000, V.UINT64, None),
    ("test.i64", -9000000000000000000, V.INT64, None),
    ("test.f64", 0.1, V.FLOAT64, None),
    ("test.array_string", ["a", "", "Ġhello", "<|im_start|>", "日本"], V.ARRAY, V.STRING),
    ("test.array_i32", [1, -2, 3, 2147483647], V.ARRAY, V.INT32),
    ("test.array_f32", [0.5, -1.25, 3.0e38], V.ARRAY, V.FLOAT32),
    ("test.array_u8", [0, 1, 255], V.ARRAY, V.UINT8),
    ("test.array_bool", [True, False, True], V.ARRAY, V.BOOL),
    ("test.array_u64", [0, 18446744073709551615], V.ARRAY, V.UINT64),
    ("test.array_f64", [1.0e-300, -2.5], V.ARRAY, V.FLOAT64),
    ("test.array_nested", [[1, 2], [3]], V.ARRAY, V.ARRAY),
]

QK_K = 256


def random_k_blocks(rng: np.random.Generator, qtype: T, n_blocks: int) -> np.ndarray:
    """Random bytes for `n_blocks` blocks of a K-quant, with finite scales where the format has them."""
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)

    def f16(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, size=(n_blocks, 1)).astype(np.float16).view(np.uint8)

    if qtype == T.Q2_K:  # scales[16] qs[64] d dmin
        blocks[:, 80:82], blocks[:, 82:84] = f16(-0.05, 0.05), f16(-0.05, 0.05)
    elif qtype == T.Q3_K:  # hmask[32] qs[64] scales[12] d
        blocks[:, 108:110] = f16(-0.01, 0.01)
    elif qtype in (T.Q4_K, T.Q5_K):  # d dmin scales[12] ...
        blocks[:, 0:2], blocks[:, 2:4] = f16(-0.01, 0.01), f16(-0.01, 0.01)
    elif qtype == T.Q6_K:  # ql[128] qh[64] scales[16] d
        blocks[:, 208:210] = f16(-0.001, 0.001)
    elif qtype == T.Q8_K:  # d f32, qs[256], bsums[16] i16
        blocks[:, 0:4] = rng.uniform(-0.01, 0.01, size=(n_blocks, 1)).astype(np.float32).view(np.uint8)
    return blocks


def q8_k_reference(raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """ggml's dequantize_row_q8_K: y[j] = d * qs[j], d an f32 (gguf-py has no Q8_K dequantizer)."""
    blocks = raw.reshape(-1, 292)
    d = blocks[:, 0:4].copy().view(np.float32)
    qs = blocks[:, 4:260].view(np.int8).astype(np.float32)
    return (d * qs).reshape(shape)


def build(out: Path) -> None:
    rng = np.random.default_rng(20261201)
    writer = gguf.GGUFWriter(out / "types.gguf", arch="llama")
    for key, value, vtype, sub in METADATA:
        writer.add_key_value(key, value, vtype, sub_type=sub)

    expected: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}

    def add(name: str, qtype: T, values: np.ndarray | None, shape: tuple[int, ...], raw: np.ndarray | None = None) -> None:
        if raw is None:
            raw = gguf.quants.quantize(values, qtype)
        if qtype == T.Q8_K:
            want = q8_k_reference(raw, shape)
        else:
            want = gguf.quants.dequantize(raw, qtype)
        want = np.ascontiguousarray(want, dtype=np.float32).reshape(shape)
        if qtype in (T.F32, T.F16):
            writer.add_tensor(name, raw)
        else:
            writer.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qtype)
        expected[name] = want
        info[name] = {"type": qtype.name, "shape": list(shape), "dims": list(reversed(shape))}

    # Plain types. F32 is 3-D to pin down the dimension order; F16 covers subnormals, ±0 and the max.
    f32 = rng.standard_normal((2, 3, 32)).astype(np.float32)
    add("t.f32", T.F32, None, f32.shape, raw=f32)
    f16 = rng.standard_normal((4, 32)).astype(np.float16)
    f16.flat[:6] = [0.0, -0.0, 6.0e-8, -6.1e-5, 65504.0, -65504.0]
    add("t.f16", T.F16, None, f16.shape, raw=f16)
    bf = rng.standard_normal((4, 32)).astype(np.float32) * 1000
    add("t.bf16", T.BF16, bf, bf.shape)

    # 32-element block quants, quantized by gguf-py.
    for qtype in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        x = rng.standard_normal((4, 64)).astype(np.float32)
        add(f"t.{qtype.name.lower()}", qtype, x, x.shape)

    # K-quants: random valid blocks, 2 rows of 512 (4 super-blocks).
    for qtype in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_K):
        raw = random_k_blocks(rng, qtype, 4).reshape(2, -1)
        add(f"t.{qtype.name.lower()}", qtype, None, (2, 512), raw=raw)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    for name, want in expected.items():
        assert np.isfinite(want).all(), name
    save_file(expected, str(out / "expected.safetensors"))
    sizes = {t.name: [int(t), *gguf.GGML_QUANT_SIZES[t]] for t in T}
    (out / "types.json").write_text(json.dumps({"quant_sizes": sizes, "tensors": info}, indent=1) + "\n")
    check_file(out / "types.gguf", quiet=True)
    size = (out / "types.gguf").stat().st_size
    print(f"wrote {out}/types.gguf ({size} bytes, {len(expected)} tensors, {len(METADATA)} test keys)")


def check_file(path: Path, quiet: bool = False) -> None:
    """Reads `path` with gguf-py's GGUFReader and prints what it holds."""
    reader = gguf.GGUFReader(path)
    for key, field in reader.fields.items():
        kinds = "/".join(t.name for t in field.types)
        value = field.contents()
        if not quiet:
            print(f"{key} [{kinds}] = {value!r:.100}")
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type) if t.tensor_type != T.Q8_K else None
        if not quiet:
            head = [] if values is None else np.asarray(values).ravel()[:4].tolist()
            print(f"tensor {t.name} {t.tensor_type.name} dims={t.shape.tolist()} offset={t.data_offset} first={head}")
    if not quiet:
        print(f"ok: gguf-py read {len(reader.fields)} fields and {len(reader.tensors)} tensors from {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-file", type=Path, help="read this GGUF file with gguf-py and print it")
    args = ap.parse_args()
    if args.check_file:
        check_file(args.check_file)
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    build(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
