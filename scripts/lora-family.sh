#!/usr/bin/env bash
# LoRA's family on the reference protocol (results/lora-family): DoRA at the seed's LoRA-best
# setting and at the beyond-the-seed setting, PiSSA and LoRA+ at the beyond setting (two
# learning-rate / ratio choices each, the better one chosen on validation accuracy only), each run
# also evaluated on the UCI IMDb sentences; then the table (scripts/lora_family_table.py).
#
#   scripts/lora-family.sh                  every run not done yet, then the table
#   scripts/lora-family.sh dora-seed-best   only the named runs (then the table)
#
# Resumable: an interrupted run continues with --resume. Each run takes 7-15 minutes on 2 cores.
# Environment: LOWRANK (binary, default target/release/lowrank; built when missing), OUT (run
# folders, default runs/lora-family).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOWRANK="${LOWRANK:-target/release/lowrank}"
OUT="${OUT:-runs/lora-family}"
scripts/fetch-assets.sh --check >/dev/null 2>&1 || scripts/fetch-assets.sh
[[ -x "$LOWRANK" ]] || cargo build --release --quiet

common=(--model assets/all-MiniLM-L6-v2 --head distilbert --max-length 128
  --train assets/rotten-tomatoes/split/train.csv --val assets/rotten-tomatoes/split/val.csv
  --test assets/rotten-tomatoes/split/test.csv)
# The seed's LoRA best (raschka scaling, scale = alpha = 1; Adam 5e-5, 3 epochs, constant lr).
seed_best=(--lora-r 8 --lora-alpha 1 --lora-query --lora-value --lora-mlp)
# "Beyond the seed" (results/beyond/best): PEFT scaling, r 16 on every encoder linear, 4 epochs,
# 6% warmup then linear decay.
beyond=(--scaling peft --lora-r 16 --lora-alpha 32 --lora-query --lora-key --lora-value
  --lora-projection --lora-mlp --epochs 4 --warmup-ratio 0.06 --linear-decay)

declare -A RUNS=(
  [dora-seed-best]="${seed_best[*]} --dora"
  [dora-beyond]="${beyond[*]} --lr 4e-4 --dora"
  [pissa-beyond-lr4e-4]="${beyond[*]} --lr 4e-4 --init pissa"
  [pissa-beyond-lr1e-4]="${beyond[*]} --lr 1e-4 --init pissa"
  [loraplus-beyond-ratio4-lr4e-4]="${beyond[*]} --lr 4e-4 --loraplus-lr-ratio 4"
  [loraplus-beyond-ratio16-lr1e-4]="${beyond[*]} --lr 1e-4 --loraplus-lr-ratio 16"
)
ORDER=(dora-seed-best dora-beyond pissa-beyond-lr4e-4 pissa-beyond-lr1e-4 loraplus-beyond-ratio4-lr4e-4 loraplus-beyond-ratio16-lr1e-4)

todo=("$@")
[[ ${#todo[@]} -gt 0 ]] || todo=("${ORDER[@]}")
for name in "${todo[@]}"; do
  [[ -n "${RUNS[$name]:-}" ]] || { echo "unknown run $name; runs: ${ORDER[*]}" >&2; exit 2; }
  dir="$OUT/$name"
  if [[ ! -f "$dir/summary.json" ]]; then
    if [[ -f "$dir/config.json" ]]; then
      "$LOWRANK" train --resume "$dir" >/dev/null
    else
      read -r -a flags <<<"${RUNS[$name]}"
      "$LOWRANK" train "${common[@]}" "${flags[@]}" --out "$dir" >/dev/null
    fi
  fi
  [[ -f "$dir/eval-imdb_uci.json" ]] || "$LOWRANK" eval --run "$dir" --data assets/imdb-uci/imdb_uci.csv >/dev/null
  mkdir -p "results/lora-family/$name"
  cp "$dir"/{config.json,summary.json,metrics.jsonl,eval-imdb_uci.json} "results/lora-family/$name/"
  [[ -f "results/lora-family/$name/cpu.txt" ]] || echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores" >"results/lora-family/$name/cpu.txt"
done
python3 scripts/lora_family_table.py results/lora-family > results/lora-family/table.md
cat results/lora-family/table.md
