#!/usr/bin/env bash
# The main job of the README. For now: build and run the CPU attention benchmark on its
# default shapes (dense vs block-sparse at densities 0.1 and 0.5, with the error vs the oracle).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
build/bin/shareprefill bench attention --device cpu --density 0.1,0.5 "$@"
