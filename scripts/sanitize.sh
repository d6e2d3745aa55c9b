#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run (issue 18): builds the CPU library, the
# program and the tests with both sanitizers (Debug, no CUDA) and runs the `quick` CTest label,
# which includes the bad-input smoke set of the program (tests/cli/test_bad_inputs.sh). Any
# sanitizer report fails the run (halt_on_error, no recovery from UBSan). The Python extension is
# left out: an instrumented module needs the sanitizer runtime preloaded into the interpreter.
#   scripts/sanitize.sh [BUILD_DIR] [extra ctest arguments]   (default build-asan)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-asan}
shift || true
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSP_CUDA=OFF -DSP_PYTHON=OFF \
  -DSP_SANITIZE_ADDRESS=ON -DSP_SANITIZE_UNDEFINED=ON \
  -DCMAKE_CXX_FLAGS="-fno-sanitize-recover=undefined" \
  -DCMAKE_CXX_COMPILER_LAUNCHER="$(command -v ccache || true)"
cmake --build "$dir" --parallel "${SP_JOBS:-$(nproc)}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
ctest --test-dir "$dir" -L quick --output-on-failure --parallel "${SP_JOBS:-$(nproc)}" "$@"
