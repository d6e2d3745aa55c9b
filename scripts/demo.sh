#!/usr/bin/env bash
# The main job of the README: build, fetch the default model and the Austen corpus (cached in
# $SP_CACHE, default ~/.cache/shareprefill), then prefill the first 8K tokens of Emma densely and
# with SharePrefill and print both summaries, the speedups and the next-token agreement.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
scripts/fetch_model.sh >/dev/null
scripts/fetch_corpora.sh >/dev/null
build/bin/shareprefill demo "$@"
