#!/usr/bin/env bash
# GPU machine, issue 16 (serving shapes): builds a carried source snapshot (SRC_TAR, a `git
# archive`-style tar; default build-serving/carry/new.tar) for sm_90a, runs the serving CUDA
# tests (chunked prefill and varlen against one-shot / per-sequence launches), the one-sequence
# bench at 32K (32/8/128, density 0.05: the before/after check of the Hopper path), the issue's
# targets (varlen 8 x 16K and 64 x 2K vs separate calls, chunked 128K in 16K chunks vs one-shot,
# split-and-merge at 32K) and a subset of the shared attention tests; prints a table last.
# Needs .deps/ carried (scripts/gpu-prepare.sh). JSON lines and logs go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/sp-serving-out}
mkdir -p "$OUT"
ROOT=$(pwd)
SRC=/tmp/sp-serving
T0=$(date +%s)
stamp() { echo "[$(($(date +%s) - T0)) s] $*"; }
mkdir -p "$SRC" && tar -xf "${SRC_TAR:-$ROOT/build-serving/carry/new.tar}" -C "$SRC" &&
  cp -rp "$ROOT/.deps" "$SRC/" || { echo "extracting the snapshot failed"; exit 1; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
cmake -S "$SRC" -B "$SRC/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSP_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90a -DSP_BLAS=OFF -DCMAKE_PREFIX_PATH="$SRC/.deps" \
  >"$OUT/configure.log" 2>&1 || { tail -20 "$OUT/configure.log"; exit 1; }
cmake --build "$SRC/build" -j16 --target test_cuda_attention_serving test_cuda_attention \
  shareprefill_cli >"$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -30; exit 1; }
stamp built
BIN=$SRC/build/bin
"$BIN/test_cuda_attention_serving" >"$OUT/test_serving.log" 2>&1
stamp "test_cuda_attention_serving rc=$? $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUT/test_serving.log" | tr '\n' ' ')"
grep -B2 -A6 "Failure" "$OUT/test_serving.log" | head -40
SHAPE="--heads 32 --kv-heads 8 --dim 128"
bench() { "$BIN/shareprefill" bench attention --device cuda $SHAPE --json "$OUT/$1.jsonl" "${@:2}" 2>&1 | tail -4; }
bench one_seq --n 32768 --densities 0.05 --repeats 5
bench varlen_8x16k --seqlens $(printf '16384,%.0s' {1..8} | sed 's/,$//') --densities 1,0.1 --repeats 5
bench varlen_64x2k --seqlens $(printf '2048,%.0s' {1..64} | sed 's/,$//') --densities 1,0.1 --repeats 5
bench split_32k --split --n 32768 --densities 1,0.1 --repeats 5
bench chunked_128k --chunk 16384 --n 131072 --densities 1,0.1 --repeats 3
stamp benches
"$BIN/test_cuda_attention" --gtest_filter='*n1000_*:*n129_*:*n127_*' >"$OUT/test_attention.log" 2>&1
stamp "test_cuda_attention (n 127/129/1000 cases) rc=$? $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUT/test_attention.log" | tr '\n' ' ')"
echo "== summary"
cat "$OUT"/*.jsonl | python3 -c '
import json, sys
for l in sys.stdin:
    r = json.loads(l)
    keys = [k for k in ("mode","n","density","measured_density","dense_ms","sparse_ms","separate_ms","batched_ms","speedup","one_shot_ms","chunked_ms","ratio","one_call_ms","halves_ms","merge_ms","merge_fraction","rel_err") if k in r]
    print(" ".join(f"{k}={r[k]:.4g}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in keys))'
