#!/usr/bin/env python3
"""The results/lora-family table (stdlib only): one row per run folder copy under DIR (summary.json,
config.json, eval-imdb_uci.json), the PyTorch + PEFT row when DIR/torch-*.json exist, and for each
group of alternatives (PiSSA, LoRA+) the one chosen on validation accuracy, marked.

Usage: lora_family_table.py results/lora-family > results/lora-family/table.md
"""

import json
import sys
from pathlib import Path

GROUPS = {"pissa-beyond": "PiSSA", "loraplus-beyond": "LoRA+"}
SETTING = {
    "dora-seed-best": "DoRA at the seed's LoRA best: raschka scaling, r 8, alpha 1, q+v+mlp, lr 5e-5, 3 epochs",
    "dora-beyond": "DoRA at the beyond setting: peft scaling, r 16, alpha 32, all linears, lr 4e-4, 4 epochs, warmup + decay",
}


def describe(name: str, cfg: dict) -> str:
    if name in SETTING:
        return SETTING[name]
    opt = cfg["optimizer"]
    what = "PiSSA (--init pissa)" if name.startswith("pissa") else f"LoRA+ (--loraplus-lr-ratio {opt['loraplus_lr_ratio']:g})"
    return f"{what} at the beyond setting, lr {opt['lr']:g}"


def main(root: Path) -> None:
    rows, chosen = [], {}
    runs = sorted(p for p in root.iterdir() if (p / "summary.json").exists())
    for d in runs:
        s = json.loads((d / "summary.json").read_text())
        cfg = json.loads((d / "config.json").read_text())
        uci = json.loads((d / "eval-imdb_uci.json").read_text())["metrics"]["accuracy"]
        cpu = (d / "cpu.txt").read_text().strip() if (d / "cpu.txt").exists() else None
        s["cpu"] = cpu
        rows.append((d.name, cfg, s, uci))
        for prefix in GROUPS:
            if d.name.startswith(prefix) and (prefix not in chosen or s["val_acc"] > chosen[prefix][1]):
                chosen[prefix] = (d.name, s["val_acc"])
    order = ["dora-seed-best", "dora-beyond"]
    rows.sort(key=lambda r: (order.index(r[0]) if r[0] in order else 2, r[0]))
    print("| run | val | test | UCI | trainable | wall | train ex/s |")
    print("|---|---|---|---|---|---|---|")
    for name, cfg, s, uci in rows:
        mark = any(chosen.get(p, ("",))[0] == name for p in GROUPS)
        label = describe(name, cfg) + (" **(chosen on validation)**" if mark else "")
        print(
            f"| {label} | {100 * s['val_acc']:.2f} | {100 * s['test_acc']:.2f} | {100 * uci:.1f} | {s['trainable_params']:,} "
            f"| {s['wall_seconds'] / 60:.1f} min | {s['examples_per_s']:.1f} |"
        )
    for t in sorted(root.glob("torch-*.json")):
        r = json.loads(t.read_text())
        print(
            f"| PyTorch + PEFT: {r['what']} | {100 * r['val_acc']:.2f} | {100 * r['test_acc']:.2f} | {100 * r['uci_acc']:.1f} "
            f"| {r['trainable_params']:,} | {r['wall_seconds'] / 60:.1f} min | {r['train_examples_per_s']:.1f} |"
        )
    cpus = {r[2].get("cpu") for r in rows} - {None}
    print(f"\nAccuracy in %, best-validation checkpoint; wall time includes evaluations. Runs: {', '.join(r[0] for r in rows)}.")
    if cpus:
        print(f"CPU: {', '.join(sorted(cpus))}.")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
