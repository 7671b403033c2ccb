#!/usr/bin/env bash
# The "beyond the seed" search (results/beyond) on the reference protocol (full Rotten Tomatoes
# split, max length 128, batch 12, best-validation checkpoint), each trial also evaluated on the
# UCI IMDb sentences. Stage 1: experiments/beyond-seed.toml (3 epochs, constant lr) into
# runs/beyond; stage 2: experiments/beyond-seed-decay.toml (4 epochs, warmup + linear decay) into
# runs/beyond-decay. Resumable: run it again after an interruption.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/fetch-assets.sh
cargo build --release --quiet
common=(--model assets/all-MiniLM-L6-v2 --head distilbert
  --train assets/rotten-tomatoes/split/train.csv --val assets/rotten-tomatoes/split/val.csv
  --test assets/rotten-tomatoes/split/test.csv --max-length 128)
target/release/lowrank sweep "${common[@]}" --space experiments/beyond-seed.toml --out runs/beyond "$@"
target/release/lowrank sweep "${common[@]}" --linear-decay --space experiments/beyond-seed-decay.toml \
  --out runs/beyond-decay "$@"
for run in runs/beyond/trials/*/ runs/beyond-decay/trials/*/; do
  [ -f "$run/eval-imdb_uci.json" ] || target/release/lowrank eval --run "$run" --data assets/imdb-uci/imdb_uci.csv >/dev/null
done
