#!/usr/bin/env bash
# Generation speed of `lowrank generate` on SmolLM2-135M-Instruct, measured as
# bench/torch_generate.py measures transformers' `generate` (tests/fixtures/smollm2/peer-speed.json):
# batch 1, greedy, the ChatML prompt of "What is the capital of France?" (37 tokens), exactly 64
# new tokens (--ignore-eos), the whole generate call timed (prefill included), one warm-up and
# RUNS timed requests in one process, each prompt computed in full (--no-prefix-reuse).
# Prints one JSON line per precision: median and best tokens/s, and the median prefill time.
#
#   /work/bin/cpu bench/generate_speed.sh [GGUF] [PRECISIONS (default "fp32 bf16")]
# Environment: RUNS (default 5), THREADS (default 2), LOWRANK (default target/release/lowrank).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
gguf=${1:-assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf}
precisions=${2:-fp32 bf16}
runs=${RUNS:-5}
bin=${LOWRANK:-target/release/lowrank}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for _ in $(seq 0 "$runs"); do echo "What is the capital of France?"; done >"$tmp/prompts.txt"
for p in $precisions; do
  "$bin" --threads "${THREADS:-2}" generate --model "$gguf" --chat --file "$tmp/prompts.txt" --max-new-tokens 64 \
    --ignore-eos --no-prefix-reuse --json --precision "$p" >"$tmp/$p.jsonl" 2>"$tmp/$p.log"
  python3 - "$tmp/$p.jsonl" "$p" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]  # the first request is the warm-up
assert len({tuple(r["ids"]) for r in rows}) == 1, "greedy runs differ"
tps = [r["tokens_per_s"] for r in rows]
print(json.dumps({
    "precision": sys.argv[2], "runs": len(rows), "prompt_tokens": rows[0]["prompt_tokens"],
    "new_tokens": rows[0]["new_tokens"], "tokens_per_s": round(statistics.median(tps), 2),
    "best_tokens_per_s": round(max(tps), 2),
    "decode_tokens_per_s": round(statistics.median(r["decode_tokens_per_s"] for r in rows), 2),
    "prefill_s": round(statistics.median(r["prefill_s"] for r in rows), 4),
    "text": rows[0]["text"][:60],
}))
PY
done
