#!/usr/bin/env python3
"""The reference split's sentiment task as chat (stdlib only): each review becomes a conversation
whose user turn asks for the review's sentiment and whose assistant turn is the answer,
"positive" or "negative" (label 1 / 0, Rotten Tomatoes' fresh / rotten).

Usage: sentiment_chat.py SPLIT_DIR OUT_DIR [--train-limit N]
Writes OUT_DIR/{train,val,test}.jsonl from SPLIT_DIR/{train,val,test}.csv (text,label columns);
--train-limit keeps the first N training rows (the split's order is already shuffled).
"""

import csv
import json
import sys
from pathlib import Path

QUESTION = "Is the sentiment of this movie review positive or negative? Answer with one word.\n\nReview: {}"
ANSWER = {"0": "negative", "1": "positive"}


def convert(src: Path, dst: Path, limit=None):
    with src.open(newline="", encoding="utf-8") as f, dst.open("w", encoding="utf-8") as out:
        for i, row in enumerate(csv.DictReader(f)):
            if limit is not None and i >= limit:
                break
            chat = [{"role": "user", "content": QUESTION.format(row["text"].strip())},
                    {"role": "assistant", "content": ANSWER[row["label"]]}]
            out.write(json.dumps({"messages": chat}, ensure_ascii=False) + "\n")


def main():
    args = sys.argv[1:]
    limit = None
    if "--train-limit" in args:
        k = args.index("--train-limit")
        limit = int(args[k + 1])
        del args[k:k + 2]
    if len(args) != 2:
        sys.exit(__doc__)
    split, out = Path(args[0]), Path(args[1])
    out.mkdir(parents=True, exist_ok=True)
    for part in ("train", "val", "test"):
        convert(split / f"{part}.csv", out / f"{part}.jsonl", limit if part == "train" else None)


if __name__ == "__main__":
    main()
