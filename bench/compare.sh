#!/usr/bin/env bash
# Runs the PyTorch reference (bench/torch_reference.py) and `lowrank bench` on the same workloads,
# alternating, ROUNDS times each, saves every run's JSON to bench/results/<date>-<host>.jsonl and
# prints a Markdown table (bench/table.py; re-run it on a saved .jsonl at any time).
#
# Environment:
#   ROUNDS=2            rounds per workload (each round runs torch and lowrank once)
#   THREADS=2 STEPS=5 WARMUP=1 CONFIG=distilbert-base BATCH=8 (the DistilBERT workloads; the
#   MiniLM ones at the reference protocol's shape and the decoder ones are fixed)
#   SET=all|encoders|decoders  which workloads (default all). decoders = SmolLM2-135M's shape
#                       (bench/configs/smollm2-135m.json, random weights), batch 8 x 256, LoRA r=8 on
#                       all seven projections: sequence classification (the default task, no
#                       flag) and --task causal-lm (next-token loss, labels = input ids), fp32
#                       and bf16. `lowrank bench` must accept the same flags.
#                       Expect ~15 s per PyTorch step there, i.e. ~25 minutes for two rounds.
#   BENCH_VENV=PATH     Python venv to use/create (default: <repo>/.venv-bench, git-ignored)
#   TORCH_INDEX_URL=URL extra pip index for torch, e.g. https://download.pytorch.org/whl/cpu
#   SKIP_BUILD=1        do not run `cargo build --release`
#   BF16=auto|1|0       run the bf16 workloads; auto (default) = only on CPUs with native bf16
#                       (avx512_bf16 / amx_bf16). Without it PyTorch's bf16 autocast falls back to
#                       slow GEMMs: ~200 s per DistilBERT seq-256 step on Zen 3, i.e. hours per round.
#   LOWRANK=PATH        lowrank binary (default: <repo>/target/release/lowrank)
#   FILTER=REGEX        run only the workloads whose flags match it (grep -E), e.g. FILTER=dora
# Runs from any working directory. Do not compile or run anything else meanwhile: the timings
# are only as good as the machine is quiet.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS="${ROUNDS:-2}"
THREADS="${THREADS:-2}"
STEPS="${STEPS:-5}"
WARMUP="${WARMUP:-1}"
CONFIG="${CONFIG:-distilbert-base}"
BATCH="${BATCH:-8}"
VENV="${BENCH_VENV:-$ROOT/.venv-bench}"
LOWRANK="${LOWRANK:-$ROOT/target/release/lowrank}"
BF16="${BF16:-auto}"
if [[ "$BF16" == auto ]]; then
    if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null; then BF16=1; else BF16=0; fi
fi

# --- Python side -----------------------------------------------------------------------------
want_ok() {
    "$VENV/bin/python" - <<'PY' 2>/dev/null
import torch, transformers, peft
assert torch.__version__.split("+")[0] == "2.15.0", torch.__version__
assert transformers.__version__ == "5.24.0", transformers.__version__
assert peft.__version__ == "0.21.2", peft.__version__
PY
}
if [[ -x "$VENV/bin/python" ]] && want_ok; then
    echo "using $VENV" >&2
else
    echo "setting up $VENV" >&2
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    extra=()
    [[ -n "${TORCH_INDEX_URL:-}" ]] && extra=(--extra-index-url "$TORCH_INDEX_URL")
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$VENV/bin/python" -m pip install "${extra[@]}" -r "$ROOT/bench/requirements.txt" >&2
    want_ok || { echo "error: $VENV lacks torch 2.15.0 / transformers 5.24.0 / peft 0.21.2" >&2; exit 1; }
fi
PY="$VENV/bin/python"

# --- lowrank -----------------------------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release --manifest-path "$ROOT/Cargo.toml" >&2
fi
[[ -x "$LOWRANK" ]] || echo "warning: $LOWRANK not found; lowrank runs will be recorded as failures" >&2

# --- workloads ---------------------------------------------------------------------------------
COMMON=(--threads "$THREADS" --steps "$STEPS" --warmup "$WARMUP" --seed 0 --lora-r 8 --lora-alpha 16)
WORKLOADS=()
for seq in 256 128; do
    for targets in qv all; do
        for prec in fp32 bf16; do
            WORKLOADS+=("--config $CONFIG --batch $BATCH --seq $seq --mode lora --targets $targets --precision $prec")
        done
    done
done
for prec in fp32 bf16; do
    WORKLOADS+=("--config $CONFIG --batch $BATCH --seq 128 --mode lora --targets qv --precision $prec --infer")
done
# DoRA beside the LoRA workloads of the same shape (PEFT users report DoRA at ~2x LoRA's step).
for targets in qv all; do
    WORKLOADS+=("--config $CONFIG --batch $BATCH --seq 128 --mode lora --targets $targets --precision fp32 --dora")
done
# The reference protocol's shape: all-MiniLM-L6-v2, batch 12, ~27 tokens per example.
for mode in "lora --targets qv" "full --targets qv" "last-layers --targets qv"; do
    for prec in fp32 bf16; do
        WORKLOADS+=("--config minilm-l6 --batch 12 --seq 32 --mode $mode --precision $prec")
    done
done
WORKLOADS+=("--config minilm-l6 --batch 12 --seq 32 --mode lora --targets qv --precision fp32 --dora")
WORKLOADS+=("--config minilm-l6 --batch 12 --seq 32 --mode lora --targets all --precision fp32")
WORKLOADS+=("--config minilm-l6 --batch 12 --seq 32 --mode lora --targets all --precision fp32 --dora")
SET="${SET:-all}"
case "$SET" in
    all) ;;
    encoders) ;;
    decoders) WORKLOADS=() ;;
    *) echo "error: SET=$SET: use all, encoders or decoders" >&2; exit 2 ;;
esac
# Decoders: SmolLM2-135M (random weights), batch 8 x 256, LoRA r=8 on q/k/v/o/gate/up/down.
if [[ "$SET" != encoders ]]; then
    # Sequence classification is both tools' default task: its rows pass no --task flag.
    for task in "" "--task causal-lm"; do
        for prec in fp32 bf16; do
            WORKLOADS+=("--config smollm2-135m${task:+ $task} --batch 8 --seq 256 --mode lora --targets all --precision $prec")
        done
    done
fi

mkdir -p "$ROOT/bench/results"
OUTFILE="$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)-$(hostname -s 2>/dev/null || hostname).jsonl"
ERR_FILE="$(mktemp)"
trap 'rm -f "$ERR_FILE"' EXIT
export ERR_FILE

run_one() { # impl round flags...
    local impl="$1" rnd="$2"; shift 2
    local out rc=0
    if [[ "$impl" == torch ]]; then
        out="$("$PY" "$ROOT/bench/torch_reference.py" "$@" 2>"$ERR_FILE")" || rc=$?
    else
        if [[ -x "$LOWRANK" ]]; then
            out="$("$LOWRANK" bench "$@" 2>"$ERR_FILE")" || rc=$?
        else
            out=""; rc=127; echo "$LOWRANK: not found" >"$ERR_FILE"
        fi
    fi
    local line
    line="$(printf '%s\n' "$out" | RC=$rc "$PY" "$ROOT/bench/table.py" record "$impl" "$rnd" "$@")"
    printf '%s\n' "$line" >>"$OUTFILE"
    if [[ $rc -eq 0 ]]; then
        echo "  $impl: $(printf '%s' "$line" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print("%.3f s/step, %.0f MB" % (d["step_s"]["median"], d["peak_rss_mb"]) if "step_s" in d else d["error"])')" >&2
    else
        echo "  $impl: FAILED (exit $rc): $(tail -n 2 "$ERR_FILE" | tr '\n' ' ')" >&2
    fi
}

echo "results: $OUTFILE" >&2
for w in "${WORKLOADS[@]}"; do
    if [[ -n "${FILTER:-}" ]] && ! grep -qE -- "$FILTER" <<<"$w"; then
        continue
    fi
    read -r -a flags <<<"$w"
    if [[ "$BF16" != 1 && " $w " == *" bf16 "* ]]; then
        echo "[$w] skipped: this CPU has no native bf16 (BF16=1 runs it anyway)" >&2
        for impl in torch lowrank; do
            RC=0 SKIP="no native bf16 on this CPU (BF16=1 runs it anyway)" \
                "$PY" "$ROOT/bench/table.py" record "$impl" 1 "${COMMON[@]}" "${flags[@]}" </dev/null >>"$OUTFILE"
        done
        continue
    fi
    for ((r = 1; r <= ROUNDS; r++)); do
        echo "[$w] round $r/$ROUNDS" >&2
        # Alternate which side goes first, so neither always runs on a warmer (or hotter) machine.
        if ((r % 2)); then order=(torch lowrank); else order=(lowrank torch); fi
        for impl in "${order[@]}"; do
            run_one "$impl" "$r" "${COMMON[@]}" "${flags[@]}"
        done
    done
done

echo >&2
"$PY" "$ROOT/bench/table.py" "$OUTFILE"
