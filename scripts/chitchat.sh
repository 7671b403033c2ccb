#!/usr/bin/env bash
# Issue 13's instruction-tuning experiment: SmolLM2-135M-Instruct taught the chitchat conversations
# (PyPI chitchat-dataset 0.9.0, MIT; assets/chitchat/chitchat.jsonl, one conversation a line, the
# first speaker as the user, the other as the assistant). LoRA r 16 on all seven projections, the
# loss on the assistant turns only; validation and test perplexity of the assistant turns before
# (`lowrank eval --model`) and after (`lowrank eval --run`). The figures land in results/chitchat/.
#
#   scripts/chitchat.sh          (CONVERSATIONS=N: the first N conversations, default 1000)
#
# Resumable: an interrupted run continues with --resume; finished steps are skipped. Environment:
# LOWRANK, OUT (default runs/chitchat), PRECISION (default auto), CONVERSATIONS, MAX_LENGTH (256),
# EPOCHS (1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOWRANK="${LOWRANK:-target/release/lowrank}"
OUT="${OUT:-runs/chitchat}"
PRECISION="${PRECISION:-auto}"
CONVERSATIONS="${CONVERSATIONS:-1000}"
MAX_LENGTH="${MAX_LENGTH:-256}"
EPOCHS="${EPOCHS:-1}"
scripts/fetch-assets.sh --check >/dev/null 2>&1 || scripts/fetch-assets.sh
[[ -x "$LOWRANK" ]] || cargo build --release --quiet
MODEL=assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
RES=results/chitchat
mkdir -p "$OUT" "$RES"
data="$OUT/conversations.jsonl"
[[ -f "$data" ]] || head -n "$CONVERSATIONS" assets/chitchat/chitchat.jsonl >"$data"

# Training first: its seeded split (train / val / test .jsonl in the run folder) is what both
# evaluations read.
run="$OUT/lora"
if [[ ! -f "$run/summary.json" ]]; then
  if [[ -f "$run/config.json" ]]; then
    "$LOWRANK" train --resume "$run"
  else
    "$LOWRANK" train --model "$MODEL" --task causal-lm --data "$data" --split 0.8,0.1,0.1 \
      --max-length "$MAX_LENGTH" --batch-size 8 --epochs "$EPOCHS" --lr 3e-4 --scaling peft --lora-r 16 \
      --lora-alpha 32 --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
      --precision "$PRECISION" --seed 1 --out "$run"
  fi
fi
for split in val test; do
  [[ -f "$RES/before-$split.json" ]] || "$LOWRANK" eval --model "$MODEL" --data "$run/$split.jsonl" \
    --max-length "$MAX_LENGTH" --out "$RES/before-$split.json"
  [[ -f "$RES/after-$split.json" ]] || "$LOWRANK" eval --run "$run" --data "$run/$split.jsonl" \
    --out "$RES/after-$split.json"
done
cp "$run"/{config.json,summary.json,metrics.jsonl} "$RES/"
echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(grep -o 'avx2\|avx512f\|avx512_bf16\|amx_bf16' /proc/cpuinfo | sort -u | xargs)" >"$RES/cpu.txt"
python3 - "$RES" <<'PY'
import json, sys
res = sys.argv[1]
for split in ("val", "test"):
    b, a = (json.load(open(f"{res}/{w}-{split}.json")) for w in ("before", "after"))
    print(f"{split}: perplexity {b['metrics']['perplexity']:.2f} before, {a['metrics']['perplexity']:.2f} after "
          f"(loss {b['metrics']['loss']:.4f} -> {a['metrics']['loss']:.4f})")
s = json.load(open(f"{res}/summary.json"))
print(f"training: {s['steps']} steps, {s['train_seconds']:.0f} s, {s['tokens_per_s']:.0f} tokens/s, precision {s['precision']}")
PY
