#!/usr/bin/env python3
"""Checks lowrank's llama.cpp exports by hand with a real llama.cpp build (nothing of llama.cpp is
committed or needed by CI; ../shared/reference/decoders.md says how to build it here).

For a finished causal-LM chat run on a GGUF base it (1) exports the adapter with
`lowrank export --format gguf` and merges it with `lowrank merge --format gguf` (F16); (2) renders
the first N conversations of DATA with the GGUF's own chat template (jinja2, as transformers
does) and generates greedy answers with `lowrank generate` (base, and base + the run's adapter);
(3) gives the same prompts to `llama-completion` (base; base + `--lora` of the exported adapter;
the merged F16 GGUF) and compares prompt token ids and generated texts; writes OUT.

    /work/venv/bin/python scripts/llama_cpp_check.py --llama-bin DIR/build/bin --run RUN \\
        --data runs/sc/test.jsonl --n 20 --out results/llama-cpp-check/result.json
(the venv needs gguf and jinja2: pip install gguf jinja2)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
from pathlib import Path

import jinja2
from gguf import GGUFReader


def chat_template(gguf: Path) -> jinja2.Template:
    f = GGUFReader(str(gguf)).fields["tokenizer.chat_template"]
    return jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(bytes(f.parts[f.data[0]]).decode())


def llama(bin_dir: Path, model: Path, prompt: str, new: int, lora: Path | None) -> tuple[list[int], str]:
    cmd = [str(bin_dir / "llama-completion"), "-m", str(model), "-p", prompt, "-n", str(new), "--temp", "0", "-t", "2",
           "-no-cnv", "--no-display-prompt", "--no-warmup", "--simple-io", "--verbose-prompt"]
    if lora:
        cmd += ["--lora", str(lora)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    ids = [int(m.group(1)) for m in re.finditer(r"I +(\d+) -> '", r.stderr)]
    return ids, r.stdout.replace("[end of text]", "").strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-bin", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--lowrank", default="target/release/lowrank")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("runs/llama-cpp-check"), help="where the exported files go (not committed)")
    a = ap.parse_args()
    base = Path(json.loads((a.run / "config.json").read_text())["model"])
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    adapter_gguf, merged = work / "adapter.gguf", work / "merged-f16.gguf"
    subprocess.run([a.lowrank, "export", "--run", str(a.run), "--format", "gguf", "--out", str(adapter_gguf), "--force"], check=True)
    subprocess.run([a.lowrank, "merge", "--model", str(base), "--adapter", str(a.run / "adapter"), "--format", "gguf",
                    "--out", str(merged), "--force"], check=True)
    tmpl = chat_template(base)
    convs = [json.loads(l)["messages"] for l in a.data.read_text().splitlines()[: a.n]]
    prompts = [tmpl.render(messages=m[:-1], add_generation_prompt=True) for m in convs]
    answers = [m[-1]["content"] for m in convs]
    requests = work / "prompts.jsonl"
    requests.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))

    def lowrank(adapter: bool) -> list[dict]:
        cmd = [a.lowrank, "generate", "--model", str(base), "--file", str(requests), "--max-new-tokens", str(a.new_tokens), "--json"]
        if adapter:
            cmd += ["--adapter", str(a.run / "adapter")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return [json.loads(l) for l in out.splitlines()]

    mine = {"base": lowrank(False), "adapter": lowrank(True)}
    report = {}
    for name, model, lora, ref in (("base", base, None, "base"), ("adapter (--lora)", base, adapter_gguf, "adapter"),
                                   ("merged F16 GGUF", merged, None, "adapter")):
        rows = []
        for p, ans, m in zip(prompts, answers, mine[ref]):
            ids, text = llama(a.llama_bin, model, p, a.new_tokens, lora)
            rows.append({"answer": ans, "llama_cpp": text, "lowrank": m["text"].strip(), "same_prompt_ids": ids == m["prompt_ids"]})
        report[name] = {
            "prompts": len(rows),
            "same_prompt_ids": sum(r["same_prompt_ids"] for r in rows),
            "same_greedy_text": sum(r["llama_cpp"] == r["lowrank"] for r in rows),
            "exact_match_llama_cpp": sum(r["llama_cpp"] == r["answer"] for r in rows),
            "exact_match_lowrank": sum(r["lowrank"] == r["answer"] for r in rows),
            "rows": rows,
        }
        print(f"{name}: prompt ids equal {report[name]['same_prompt_ids']}/{len(rows)}, same greedy text "
              f"{report[name]['same_greedy_text']}/{len(rows)}, exact match llama.cpp {report[name]['exact_match_llama_cpp']} / lowrank {report[name]['exact_match_lowrank']}")
    report["meta"] = {
        "run": str(a.run), "base": str(base), "data": str(a.data), "new_tokens": a.new_tokens,
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
