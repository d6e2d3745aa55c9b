#!/usr/bin/env bash
# Configures (once) and builds shareprefill into build/ with the default preset: Release, CUDA
# compiled when nvcc is found (it is only run on a GPU machine), binaries in build/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/install-python-deps.sh  # nanobind, NumPy, pytest: the Python extension and its test
if [ ! -f build/CMakeCache.txt ]; then
  cmake --preset default >/dev/null
fi
cmake --build build --parallel "$(nproc)"
