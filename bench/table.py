#!/usr/bin/env python3
"""Markdown comparison table from a bench .jsonl (stdlib only).

Usage:
  table.py RESULTS.jsonl              print the torch-vs-lowrank table
  table.py record IMPL ROUND FLAGS... (used by compare.sh) read one run's stdout on stdin and its
                                      exit status / stderr tail from $RC / $ERR_FILE, print one
                                      JSON line: the run's object, or an error record ($SKIP set:
                                      a "skipped: $SKIP" record)

Each line of the .jsonl is one run: either the object `torch_reference.py` / `lowrank bench`
printed (plus "round"), or {"impl", "error", <workload fields>} when a run failed. Runs are grouped
by workload (config, batch, seq, mode, targets, lora_r, precision, threads, infer, task — "cls" when a
record has no task field, as the encoder records do); s/step is the
median over rounds of each run's median step time, peak RSS the largest over rounds.
"""

import json
import statistics
import sys

KEY = ("config", "batch", "seq", "mode", "targets", "lora_r", "precision", "threads", "infer", "task")


def is_infer(rec):
    if "infer" in rec:
        return bool(rec["infer"])
    # Older records without the field: inference runs have no backward.
    return "step_s" in rec and rec.get("backward_s") is None


def key(rec):
    return tuple(is_infer(rec) if k == "infer" else (rec.get(k) or "cls") if k == "task" else rec.get(k) for k in KEY)


def label(k):
    d = dict(zip(KEY, k))
    what = "infer" if d["infer"] else d["mode"] + (f"-{d['targets']} r{d['lora_r']}" if d["mode"] == "lora" else "")
    task = "" if d["task"] == "cls" else f" {d['task']}"
    return f"{d['config']}{task} b{d['batch']} s{d['seq']} {what} {d['precision']} t{d['threads']}"


def fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def ratio(a, b):
    return a / b if a is not None and b else None


def table(path):
    groups = {}
    for n, line in enumerate(open(path), 1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            print(f"{path}:{n}: not JSON, skipped", file=sys.stderr)
            continue
        groups.setdefault(key(rec), {}).setdefault(rec.get("impl", "?"), []).append(rec)

    rows = [
        "| workload | torch s/step | lowrank s/step | ratio torch/lowrank | torch peak RSS MB | lowrank peak RSS MB | RSS ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for k in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        cells = {}
        for impl in ("torch", "lowrank"):
            recs = groups[k].get(impl, [])
            ok = [r for r in recs if "step_s" in r]
            errs = {}
            for r in recs:
                if "error" in r:
                    errs.setdefault(r["error"], []).append(str(r.get("round", "?")))
            for e, rounds in errs.items():
                what = e if e.startswith("skipped") else f"failed (round {', '.join(rounds)}): {e}"
                notes.append(f"- {label(k)}: {impl} {what}")
            step = statistics.median(r["step_s"]["median"] for r in ok) if ok else None
            rss = max(r["peak_rss_mb"] for r in ok) if ok else None
            cells[impl] = (step, rss, len(ok))
        (ts, tr, tn), (ls, lr, ln) = cells["torch"], cells["lowrank"]
        rows.append(
            f"| {label(k)} | {fmt(ts, '.3f')} | {fmt(ls, '.3f')} | {fmt(ratio(ts, ls), '.2f')} "
            f"| {fmt(tr, '.0f')} | {fmt(lr, '.0f')} | {fmt(ratio(tr, lr), '.2f')} |"
        )
    print("\n".join(rows))
    print("\ns/step: median over rounds of each run's median step time (inference: one batch forward). "
          "Ratios are torch / lowrank (> 1: lowrank is faster / smaller). Peak RSS: largest over rounds.")
    if notes:
        print("\nFailures:")
        print("\n".join(notes))


def record(impl, rnd, flags):
    """Turn one run's stdout (stdin) into a .jsonl line; see the module docstring."""
    import os

    rc = int(os.environ.get("RC", "0"))
    out = sys.stdin.read()
    obj = None
    for line in reversed(out.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
                break
            except json.JSONDecodeError:
                pass
    skip = os.environ.get("SKIP")
    if not skip and rc == 0 and obj is not None and "step_s" in obj:
        obj["round"] = rnd
        # A run that does not echo its task (older lowrank bench) is filed under the one it was asked for.
        if "task" not in obj and "--task" in flags:
            obj["task"] = flags[flags.index("--task") + 1]
        print(json.dumps(obj))
        return
    err = ""
    if os.environ.get("ERR_FILE"):
        try:
            lines = [l for l in open(os.environ["ERR_FILE"], errors="replace").read().splitlines() if l.strip()]
            err = " | ".join(lines[-3:])
        except OSError:
            pass
    # Workload fields from the flags, with torch_reference.py's defaults.
    w = {"config": "distilbert-base", "batch": 8, "seq": 256, "mode": "lora", "targets": "all", "lora_r": 8,
         "precision": "fp32", "threads": 2, "infer": False, "task": "cls"}
    it = iter(flags)
    for f in it:
        if f == "--infer":
            w["infer"] = True
        elif f.startswith("--") and f[2:].replace("-", "_") in w:
            v = next(it, "")
            name = f[2:].replace("-", "_")
            w[name] = int(v) if isinstance(w[name], int) and not isinstance(w[name], bool) and v.isdigit() else v
    msg = f"skipped: {skip}" if skip else f"exit {rc}: {err[-400:] or 'no JSON on stdout'}"
    w.update({"impl": impl, "round": rnd, "error": msg})
    print(json.dumps(w))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "record":
        record(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
    elif len(sys.argv) == 2 and not sys.argv[1].startswith("-"):
        table(sys.argv[1])
    else:
        sys.exit(__doc__)
