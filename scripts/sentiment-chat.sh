#!/usr/bin/env bash
# Issue 13's experiment: SmolLM2-135M-Instruct taught the reference split's sentiment task as chat
# (scripts/sentiment_chat.py: user = the question and the review, assistant = "positive" /
# "negative"). Zero-shot exact match of the generated answer on the test split before, LoRA
# (q/k/v/o/gate/up/down, r 8) on the training conversations, exact match after; the figures and
# every answer land in results/sentiment-chat/.
#
#   scripts/sentiment-chat.sh          (TRAIN_LIMIT=N: the first N training reviews, default all)
#
# Resumable: the run continues with --resume; finished steps are skipped. Environment: LOWRANK,
# OUT (default runs/sentiment-chat), PRECISION (default auto), TRAIN_LIMIT, EPOCHS (default 1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOWRANK="${LOWRANK:-target/release/lowrank}"
OUT="${OUT:-runs/sentiment-chat}"
PRECISION="${PRECISION:-auto}"
EPOCHS="${EPOCHS:-1}"
scripts/fetch-assets.sh --check >/dev/null 2>&1 || scripts/fetch-assets.sh
[[ -x "$LOWRANK" ]] || cargo build --release --quiet
MODEL=assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
DATA="$OUT/data"
RES=results/sentiment-chat
mkdir -p "$OUT" "$RES"
python3 scripts/sentiment_chat.py assets/rotten-tomatoes/split "$DATA" ${TRAIN_LIMIT:+--train-limit "$TRAIN_LIMIT"}
wc -l "$DATA"/*.jsonl >&2

[[ -f "$RES/zero-shot.json" ]] || "$LOWRANK" eval --model "$MODEL" --data "$DATA/test.jsonl" --max-length 256 \
  --generate --max-new-tokens 4 --out "$RES/zero-shot.json"

run="$OUT/lora"
if [[ ! -f "$run/summary.json" ]]; then
  if [[ -f "$run/config.json" ]]; then
    "$LOWRANK" train --resume "$run"
  else
    "$LOWRANK" train --model "$MODEL" --task causal-lm --train "$DATA/train.jsonl" --val "$DATA/val.jsonl" \
      --max-length 256 --batch-size 8 --epochs "$EPOCHS" --lr 2e-4 --scaling peft --lora-r 8 --lora-alpha 16 \
      --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --precision "$PRECISION" \
      --seed 1 --out "$run"
  fi
fi
[[ -f "$RES/after.json" ]] || "$LOWRANK" eval --run "$run" --data "$DATA/test.jsonl" --generate --max-new-tokens 4 \
  --out "$RES/after.json"
cp "$run"/{config.json,summary.json,metrics.jsonl} "$RES/"
echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(grep -o 'avx512_bf16\|amx_bf16' /proc/cpuinfo | sort -u | xargs)" >"$RES/cpu.txt"
python3 - "$RES" <<'PY'
import json, sys
res = sys.argv[1]
z, a = (json.load(open(f"{res}/{n}.json")) for n in ("zero-shot", "after"))
s = json.load(open(f"{res}/summary.json"))
for name, r in (("zero-shot", z), ("after LoRA", a)):
    g = r["generation"]
    print(f"{name}: exact match {100*g['exact_match']:.2f}% ({100*g['exact_match_ignoring_case']:.2f}% ignoring case) on {g['n']} test reviews; perplexity {r['metrics']['perplexity']:.3f}")
print(f"training: {s['steps']} steps, {s['train_seconds']:.0f} s, {s['tokens_per_s']:.0f} tokens/s, precision {s['precision']}")
PY
