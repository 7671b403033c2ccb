#!/usr/bin/env bash
# The committed sweep (results/sweep): 24 trials = scaling {raschka, peft} x r {1, 4, 16} x
# alpha {1, 8} x mlp on/off (query + value always on), all-MiniLM-L6-v2 with the DistilBERT-style
# head, on the first 3,000 training / 600 validation / 600 test examples of the reference Rotten
# Tomatoes split, 1 epoch at lr 2e-4, the seed's other hyperparameters (Adam, batch 12).
# Resumable: run it again after an interruption. Extra arguments go to `lowrank sweep`
# (e.g. --storage URL, --workers N).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/fetch-assets.sh
cargo build --release --quiet
sub=runs/sweep-data
mkdir -p "$sub"
for spec in train:3000 val:600 test:600; do
  part=${spec%%:*}; n=${spec##*:}
  python3 - "$part" "$n" "$sub" <<'PY'
import csv, sys
part, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(f"assets/rotten-tomatoes/split/{part}.csv", newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
with open(f"{out}/{part}.csv", "w", newline="", encoding="utf-8") as f:
    csv.writer(f).writerows(rows[: n + 1])
PY
done
exec target/release/lowrank sweep --model assets/all-MiniLM-L6-v2 --head distilbert \
  --train "$sub/train.csv" --val "$sub/val.csv" --test "$sub/test.csv" \
  --max-length 128 --epochs 1 --space experiments/sweep-minilm-rt.toml --out runs/sweep "$@"
