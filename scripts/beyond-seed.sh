#!/usr/bin/env bash
# The "beyond the seed" search (results/beyond): experiments/beyond-seed.toml on the reference
# protocol (full Rotten Tomatoes split, max length 128, batch 12, 3 epochs, best-validation
# checkpoint), each trial also evaluated on the UCI IMDb sentences. Resumable.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/fetch-assets.sh
cargo build --release --quiet
target/release/lowrank sweep --model assets/all-MiniLM-L6-v2 --head distilbert \
  --train assets/rotten-tomatoes/split/train.csv --val assets/rotten-tomatoes/split/val.csv \
  --test assets/rotten-tomatoes/split/test.csv --max-length 128 \
  --space experiments/beyond-seed.toml --out runs/beyond "$@"
for run in runs/beyond/trials/*/; do
  [ -f "$run/eval-imdb_uci.json" ] || target/release/lowrank eval --run "$run" --data assets/imdb-uci/imdb_uci.csv >/dev/null
done
