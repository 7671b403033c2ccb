#!/usr/bin/env bash
# The seed's comparison on a decoder: SmolLM2-135M-Instruct (Llama architecture, the packaged Q4_1
# GGUF dequantized to f32 at load) with a sequence-classification head (`score`, on the last real
# token, as transformers' LlamaForSequenceClassification), on the PyTorch reference's exact
# Rotten Tomatoes split, max length 128, the seed's hyperparameters (Adam lr 5e-5, batch 12,
# best-validation checkpoint), the four runs: last-layers (score + the last decoder layer + the
# final norm), LoRA default (r 8, alpha 16, q_proj + v_proj), LoRA best (r 8, alpha 1, q_proj +
# v_proj + gate/up/down_proj), full fine-tuning; each also evaluated on the 1,000 UCI IMDb
# sentences. One epoch by default (EPOCHS=3 for the seed's three: about three times as long);
# PRECISION=auto (bf16 where the CPU has AVX512_BF16, else fp32). Interrupt it at any time and run
# it again to continue. Results: runs/decoder-reference/comparison.{md,json,png,svg}.
# Its PyTorch + transformers peer: scripts/reference/torch_decoder_compare.py (same split, same
# protocol). Extra arguments go to `lowrank compare` (e.g. --runs lora-default).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/fetch-assets.sh
cargo build --release --quiet
exec target/release/lowrank compare \
  --model assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf \
  --train assets/rotten-tomatoes/split/train.csv \
  --val assets/rotten-tomatoes/split/val.csv \
  --test assets/rotten-tomatoes/split/test.csv \
  --max-length 128 --epochs "${EPOCHS:-1}" --precision "${PRECISION:-auto}" \
  --eval-data assets/imdb-uci/imdb_uci.csv \
  --out "${OUT:-runs/decoder-reference}" "$@"
