#!/usr/bin/env bash
# Runs each libFuzzer target (tests/fuzz) for SECONDS seconds, one after the other, from its
# committed seed corpus (copied, so new inputs stay out of the tree). Exit code non-zero when a
# target finds a crash, a sanitizer report, a leak, a timeout or an out-of-memory input; the
# reproducer is left in BUILD_DIR/findings/. Needs clang (libFuzzer).
#   scripts/fuzz.sh [SECONDS] [BUILD_DIR] [TARGET...]   (default 600 s, build-fuzz, all four)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
dir=${2:-build-fuzz}
shift 2 2>/dev/null || shift $#
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(fuzz_gguf fuzz_safetensors fuzz_cluster_map fuzz_capture)
CC=clang CXX=clang++ cmake -S tests/fuzz -B "$dir" -G Ninja \
  -DCMAKE_CXX_COMPILER_LAUNCHER="$(command -v ccache || true)" >/dev/null
cmake --build "$dir" --parallel "${SP_JOBS:-$(nproc)}"
mkdir -p "$dir/findings"
status=0
for target in "${targets[@]}"; do
  seeds=tests/fuzz/seeds/${target#fuzz_}
  corpus=$dir/corpus/${target#fuzz_}
  mkdir -p "$corpus"
  cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
  dict=()
  [[ -f tests/fuzz/${target#fuzz_}.dict ]] && dict=(-dict="tests/fuzz/${target#fuzz_}.dict")
  echo "== $target: ${seconds} s from $seeds"
  if ! "$dir/$target" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -malloc_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$dir/findings/$target-" \
      "$corpus" 2>"$dir/$target.log"; then
    echo "FINDING in $target (see $dir/$target.log and $dir/findings/)"
    status=1
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$dir/$target.log" || true
done
exit $status
