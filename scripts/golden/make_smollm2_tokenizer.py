#!/usr/bin/env python3
"""Reference token ids of the SmolLM2-135M-Instruct GGUF tokenizer, as transformers builds it.

Run from the repository root with the reference stack (transformers 5.24, gguf 0.19), once
assets/SmolLM2-135M-Instruct/ holds the file (needs ../shared/reference/rt-split/test.csv):

    python scripts/golden/make_smollm2_tokenizer.py [--gguf PATH] [--rt-test PATH]

`AutoTokenizer.from_pretrained(dir, gguf_file=name)` builds the tokenizer from the file's
metadata alone. For each text (the first 20 rows of the reference test split, accents, emoji,
digit runs, runs of spaces, newlines and tabs, a ChatML conversation rendered by the file's chat
template, the empty text) it records the pre-tokenizer's pieces (`pre_tokenize_str`, in the
byte-level alphabet), the ids and the decoded text (with and without special tokens) into tests/fixtures/smollm2/tokenizer-ids.json, under "cases".

"variants" holds the same for the texts after the 20 review rows (where pre-tokenizers differ)
with the metadata changed, each loaded from a
temporary copy of the file's metadata (no tensors) written with gguf-py: `tokenizer.ggml.pre` set
to each pre-tokenizer family transformers knows ("llama-bpe", "qwen2", "qwen35", "tekken",
"gpt-4o") and to "gpt-2", and `tokenizer.ggml.add_bos_token` / `add_eos_token` set to true.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import tempfile
from pathlib import Path

import gguf
import transformers
from transformers import AutoTokenizer

DEFAULT = Path("assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
RT_TEST = Path("../shared/reference/rt-split/test.csv")
OUT = Path("tests/fixtures/smollm2/tokenizer-ids.json")

EXTRA = [
    "",
    " ",
    "Crème brûlée, naïve façade, São Paulo, Ærø, Straße, Ångström.",
    "Emoji: 🙂👍🏽 🇫🇷 👨‍👩‍👧 ❤️ and 🤖!",
    "Digits: 1 12 123 1234 12345 3.14159 2026-12-01 1,000,000 ١٢٣",
    "Spaces:  two   three    four     five and trailing   ",
    "Line one\nLine two\r\nLine three\n\n\nTabs\there\t\tand\t \tmixed \n \t",
    "Contractions: I'm, you're, it's, we've, they'll, he'd, DON'T, Can't.",
    "日本語のテキスト、中文文本，한국어 텍스트. Русский текст. Ελληνικά. עברית. العربية.",
    "Code: fn main() { let x = vec![1, 2, 3]; println!(\"{x:?}\"); } // done",
    "<|im_start|>user\nHi<|im_end|> <|endoftext|><|im_end|><|im_start|>",
    "Combining: e\u0301 a\u0300 n\u0303, zero width\u200bspace, nbsp\u00a0here.",
    "CamelCaseWords HTTPServer iPhone's XMLHttpRequest; x = a+b;\r\n\r\n// c ok!!!\n\n...",
    "नमस्ते दुनिया, สวัสดีครับ, Tiếng Việt có dấu, ÿ̈x̧̌ ḁ̈",
]

CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Is this review positive? \"A  gorgeous, witty film.\""},
    {"role": "assistant", "content": "Yes: it calls the film gorgeous and witty."},
]

VARIANTS = [
    ("pre=llama-bpe", {"tokenizer.ggml.pre": "llama-bpe"}),
    ("pre=qwen2", {"tokenizer.ggml.pre": "qwen2"}),
    ("pre=qwen35", {"tokenizer.ggml.pre": "qwen35"}),
    ("pre=tekken", {"tokenizer.ggml.pre": "tekken"}),
    ("pre=gpt-4o", {"tokenizer.ggml.pre": "gpt-4o"}),
    ("pre=gpt-2", {"tokenizer.ggml.pre": "gpt-2"}),
    ("add_bos_token", {"tokenizer.ggml.add_bos_token": True}),
    ("add_eos_token", {"tokenizer.ggml.add_eos_token": True}),
]


def record(tok, texts: list[str]) -> list[dict]:
    out = []
    for text in texts:
        ids = tok(text)["input_ids"]
        pieces = [p for p, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)]
        out.append(
            {
                "text": text,
                "pieces": pieces,
                "ids": ids,
                "decoded": tok.decode(ids),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            }
        )
    return out


def copy_metadata(src: Path, dst: Path, overrides: dict) -> None:
    """Writes `dst` with every metadata key of `src` (values as stored), `overrides` applied, no tensors."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch=arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in overrides:
            continue
        sub = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub)
    for key, value in overrides.items():
        vtype = gguf.GGUFValueType.BOOL if isinstance(value, bool) else gguf.GGUFValueType.STRING
        writer.add_key_value(key, value, vtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=DEFAULT)
    ap.add_argument("--rt-test", type=Path, default=RT_TEST)
    args = ap.parse_args()
    sha = hashlib.sha256(args.gguf.read_bytes()).hexdigest()

    tok = AutoTokenizer.from_pretrained(str(args.gguf.parent), gguf_file=args.gguf.name)
    with args.rt_test.open(newline="") as f:
        rt = [row["text"] for _, row in zip(range(20), csv.DictReader(f))]
    chat = tok.apply_chat_template(CHAT, tokenize=False)
    chat_default_system = tok.apply_chat_template(CHAT[1:2], tokenize=False, add_generation_prompt=True)
    texts = rt + EXTRA + [chat, chat_default_system]

    out = {
        "source": f"{args.gguf.name} sha256 {sha}",
        "made_by": f"scripts/golden/make_smollm2_tokenizer.py, transformers {transformers.__version__}",
        "special": {
            "bos_id": tok.bos_token_id,
            "eos_id": tok.eos_token_id,
            "pad_id": tok.pad_token_id,
            "unk_id": tok.unk_token_id,
            "vocab_size_with_added": len(tok),
        },
        "chat_template": tok.chat_template,
        "cases": record(tok, texts),
        "variants": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for label, overrides in VARIANTS:
            path = Path(tmp) / f"{label.replace('=', '-')}.gguf"
            copy_metadata(args.gguf, path, overrides)
            variant = AutoTokenizer.from_pretrained(tmp, gguf_file=path.name)
            out["variants"][label] = {"overrides": overrides, "cases": record(variant, texts[len(rt):])}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}: {len(texts)} texts, {len(VARIANTS)} variants")


if __name__ == "__main__":
    main()
