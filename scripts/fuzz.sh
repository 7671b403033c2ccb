#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of every reader of user files, on stable Rust.
#
#   scripts/fuzz.sh               every target of fuzz/ (src/fuzzing.rs), FUZZ_SECONDS each (20)
#   scripts/fuzz.sh csv gguf      only those
#
# Builds fuzz/ with the sanitizer-coverage instrumentation that cargo-fuzz uses (no sanitizer, so
# no nightly toolchain; overflow checks and debug assertions on) on lowrank and the targets only,
# reusing the release build's dependencies (scripts/fuzz-rustc.sh: the CI default, a few minutes);
# FUZZ_INSTRUMENT_DEPS=1 instruments every crate instead (deeper coverage feedback inside the
# parsing libraries, for long runs; every dependency is compiled again). Each target starts from the
# committed seeds (tests/fuzz/corpus/<target>/) and the inputs that once crashed it
# (tests/fuzz/crashes/<target>/); the inputs it finds are kept in a temporary corpus
# (FUZZ_CORPUS_OUT=DIR keeps them in DIR/<target>/ instead). A panic, an abort, one input taking
# over 10 s or memory over 2 GiB (FUZZ_RSS_MB) fails the run; the input is saved as
# tests/fuzz/crashes/<target>/{crash,timeout,oom}-<sha1>, which tests/fuzz_readers.rs replays in
# every `cargo test` from then on (so a crash found becomes a regression test), and the end of the
# fuzzer's log is printed. `cargo fuzz run <target>` works as well where cargo-fuzz is installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_EACH="${FUZZ_SECONDS:-20}"
RSS_MB="${FUZZ_RSS_MB:-2048}"
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(sed -n 's/^name = "\([a-z_0-9]*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^lowrank-fuzz$')
fi

if [[ "${FUZZ_INSTRUMENT_DEPS:-0}" == 1 ]]; then
  # Every crate instrumented (the parsers of serde_json, toml, csv, minijinja… give coverage
  # feedback too), in a target folder of its own, for the host triple so that build scripts and
  # proc macros stay plain: each dependency is compiled again (about 12 minutes on 2 cores).
  host=$(rustc -vV | sed -n 's/^host: //p')
  bin_dir="fuzz/target/$host/release"
  echo "fuzz.sh: building ${#targets[@]} libFuzzer targets, every crate instrumented ($bin_dir)" >&2
  RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
    cargo build --quiet --release -p lowrank-fuzz --target "$host" --target-dir fuzz/target \
    $(printf -- '--bin %s ' "${targets[@]}")
else
  # Only lowrank and the targets instrumented (scripts/fuzz-rustc.sh); every dependency is the
  # one `cargo build --release` / `cargo test --release` built (fuzz/ is a workspace member).
  bin_dir="${CARGO_TARGET_DIR:-target}/release"
  echo "fuzz.sh: building ${#targets[@]} libFuzzer targets ($bin_dir)" >&2
  RUSTC_WORKSPACE_WRAPPER="$PWD/scripts/fuzz-rustc.sh" cargo build --quiet --release -p lowrank-fuzz \
    $(printf -- '--bin %s ' "${targets[@]}")
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LOWRANK_FUZZ_SCRATCH="$work/scratch"
failed=()
for t in "${targets[@]}"; do
  seeds="tests/fuzz/corpus/$t"
  [[ -d "$seeds" && -n "$(ls -A "$seeds")" ]] || { echo "fuzz.sh: $seeds has no seed files" >&2; exit 1; }
  out="${FUZZ_CORPUS_OUT:+$FUZZ_CORPUS_OUT/$t}"
  out="${out:-$work/corpus/$t}"
  crashes="tests/fuzz/crashes/$t"
  mkdir -p "$out" "$crashes"
  dirs=("$out" "$seeds")
  [[ -n "$(ls -A "$crashes")" ]] && dirs+=("$crashes")
  log="$work/$t.log"
  if "$bin_dir/$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb="$RSS_MB" \
    -malloc_limit_mb="$RSS_MB" -artifact_prefix="$crashes/" -print_final_stats=1 "${dirs[@]}" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "fuzz.sh: $t: ${runs:-?} inputs in $SECONDS_EACH s, ${cov:-cov: ?} edges, corpus $(ls "$out" | wc -l) new, no crash" >&2
  else
    echo "fuzz.sh: $t FAILED; the input is in $crashes/ (replayed by tests/fuzz_readers.rs). End of the log:" >&2
    tail -n 40 "$log" >&2
    failed+=("$t")
  fi
  rmdir "$crashes" tests/fuzz/crashes 2>/dev/null || true
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
