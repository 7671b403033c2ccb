#!/usr/bin/env bash
# RUSTC_WORKSPACE_WRAPPER of scripts/fuzz.sh: cargo runs it instead of rustc for the workspace's
# own crates only (lowrank and the fuzz/ targets), with rustc's path as the first argument. It
# adds the sanitizer-coverage instrumentation that cargo-fuzz uses (no sanitizer, so stable Rust
# suffices), `--cfg fuzzing`, debug assertions and overflow checks. The dependencies are compiled
# as plain rustc calls, i.e. exactly as `cargo build --release` compiles them, and so are shared.
set -euo pipefail
rustc="$1"
shift
case " $* " in
  *" --crate-name ___ "*) exec "$rustc" "$@" ;; # cargo's query of the target's properties
  *" --crate-name "*) ;;
  *) exec "$rustc" "$@" ;; # other queries (rustc -vV): unchanged
esac
exec "$rustc" "$@" -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks
