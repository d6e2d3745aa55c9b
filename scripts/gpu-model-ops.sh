#!/usr/bin/env bash
# GPU machine: builds and runs the tests of the model's device ops (issue 14) for sm_90a.
#   ops    compiles only what tests/cuda/test_model_{ops,decode}.cpp need (src/cuda/model_*.cu,
#          gemm_cublaslt.cpp, device_memory.cpp and the CPU oracles rope/dequantize) with nvcc
#          and g++ directly: seconds, where the whole sp_cuda (attention and planner kernels)
#          takes minutes; then runs it.
#   model  configures a copy of the project without SKIP (default src/cuda/plan_*: the device
#          planner, not linked by these tests, the slowest part to compile) with cmake -G Ninja,
#          90a, no tools, no OpenBLAS, PCRE2 from .deps (so carry .deps), then builds and runs
#          MODEL_TESTS (default test_llama_cuda: the CUDA forward against the CPU forward).
# Usage: scripts/gpu-model-ops.sh [ops] [model]   (default: ops). Logs go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/sp-gpu-out}
mkdir -p "$OUT"
ROOT=$(pwd)
STEPS=${*:-ops}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}

for step in $STEPS; do
  case $step in
    ops)
      B=$ROOT/build-gpu-ops
      mkdir -p "$B"
      nvidia-smi --query-gpu=name,clocks.sm,memory.used --format=csv,noheader
      CXXFLAGS="-std=c++17 -O2 -Wall -Wextra -I$ROOT/include -I$ROOT/src -I$ROOT/src/cuda -I$ROOT/tests -I$CUDA_HOME/include -DSP_SOURCE_DIR=\"$ROOT\""
      objs=()
      pids=()
      for f in src/cuda/model_*.cu; do
        o=$B/$(basename "$f").o
        objs+=("$o")
        "$CUDA_HOME/bin/nvcc" -std=c++17 -O2 -arch=sm_90a --expt-relaxed-constexpr -lineinfo \
          -Xptxas=-warn-spills -I"$ROOT/include" -I"$ROOT/src/cuda" -c "$f" -o "$o" \
          >"$o.log" 2>&1 &
        pids+=($!)
      done
      for f in src/cuda/gemm_cublaslt.cpp src/cuda/device_memory.cpp src/model/rope.cpp \
               src/model/dequantize.cpp src/model/gguf_types.cpp src/core/tensor.cpp \
               tests/cuda/test_model_ops.cpp tests/cuda/test_model_decode.cpp; do
        o=$B/$(basename "$f").o
        objs+=("$o")
        g++ $CXXFLAGS -c "$f" -o "$o" >"$o.log" 2>&1 &
        pids+=($!)
      done
      failed=0
      for p in "${pids[@]}"; do wait "$p" || failed=1; done
      cat "$B"/*.log | grep -E "error|warning" | head -30
      [ $failed = 0 ] || { echo "ops: compilation failed"; cat "$B"/*.log | tail -40; exit 1; }
      g++ -o "$B/test_model_ops" "${objs[@]}" -L"$CUDA_HOME/lib64" -lcublasLt -lcudart \
        -lgtest_main -lgtest -pthread || { echo "ops: link failed"; exit 1; }
      "$B/test_model_ops" 2>&1 | tee "$OUT/test_model_ops.log" | grep -vE "^\[ +(RUN|OK) " | tail -60
      ;;
    model)
      # A copy of the tree without SKIP (default: the device planner's src/cuda/plan_*, which
      # the forward's test does not link and which is the slowest part of sp_cuda to compile).
      SRC=/tmp/sp-model-src
      B=$SRC/build-gpu-model
      mkdir -p "$SRC"
      find "$SRC" -mindepth 1 -maxdepth 1 ! -name build-gpu-model -exec rm -rf {} +
      (cd "$ROOT" && tar cf - --exclude='./build*' --exclude=./.git . ) | (cd "$SRC" && tar xf -)
      (cd "$SRC" && rm -f ${SKIP:-src/cuda/plan_*})
      start=$(date +%s)
      cmake -S "$SRC" -B "$B" -G Ninja -DSP_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
        -DSP_BUILD_TOOLS=OFF -DSP_BLAS=OFF -DCMAKE_PREFIX_PATH="$SRC/.deps" \
        -DSP_PCRE2_INCLUDE="$SRC/.deps/include" -DSP_PCRE2_LIB="$SRC/.deps/lib/libpcre2-8.a" \
        >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
      tests=${MODEL_TESTS:-test_llama_cuda}
      cmake --build "$B" -j16 --target $tests >"$OUT/build-model.log" 2>&1 ||
        { grep -E "error|FAILED" -A3 "$OUT/build-model.log" | head -40; exit 1; }
      echo "model: configure + build $(( $(date +%s) - start )) s"
      for t in $tests; do
        "$B/bin/$t" 2>&1 | tee "$OUT/$t.log" | grep -vE "^\[ +(RUN|OK) " | tail -60
      done
      ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
