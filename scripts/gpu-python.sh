#!/usr/bin/env bash
# GPU machine: the Python package (issue 15). Builds the extension for sm_90a through the CMake
# project (no pip: the machine has no network), runs the whole pytest suite there (CPU tests,
# CUDA ops against a float64 reference, host and device planners, torch.compile fullgraph, the
# transformers backend on a small random Llama), then SmolLM2 through transformers with
# attn_implementation="shareprefill" vs "sdpa" (scripts/gpu_python_hf.py: logits, greedy
# continuation, perplexity, 32K/128K prefill timing, the Python call path). A summary table is
# printed last; logs and JSON lines go to $OUT.
#
# Usage: scripts/gpu-python.sh [MODEL.gguf]   (steps: STEPS="build test model", the default)
# Two back-to-back `run` calls carry the model's two halves (the build stays in
# /tmp/sp-src-python/build on the warm machine, the first half in /tmp/sp-model-parts):
#   1. carry [".deps", ".whl", ".carry-model-a"]:
#        scripts/gpu-join-model.sh --stage && STEPS="build test" scripts/gpu-python.sh
#   2. carry [".deps", ".whl", ".carry-model-b"]:
#        model=$(scripts/gpu-join-model.sh) && STEPS="build model" scripts/gpu-python.sh "$model"
# Source: .whl/src.tar when present (`git archive -o .whl/src.tar HEAD` here: the committed
# tree, so other people's uncommitted edits in a shared checkout cannot break the build), else
# the tracked files of the copy as they are.
# Carry: .deps (scripts/gpu-prepare.sh: PCRE2, tracked-files.txt) and .whl, prepared here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 -d .whl nanobind==2.12.0 gguf==0.19.0
#   cp ~/.cache/shareprefill/corpora/austen/emma.txt .whl/   # text for perplexity and timing
# The model: scripts/gpu-split-model.sh here, then MODEL=$(scripts/gpu-join-model.sh) there.
# Inside gpu-bench.sh (its python step): SP_PY_SRC=<its source> reuses the source; the
# extension still gets its own build folder (<source>/build-python), since it needs the system
# g++ (below). TEXT overrides the text.
set -uo pipefail
OUT=${OUT:-/tmp/sp-gpu-out}
mkdir -p "$OUT"
ROOT=$(pwd)
MODEL=${1:-}
STEPS=${STEPS:-build test model}
summary=()
note() { summary+=("$(printf '%-10s %-5s %s' "$1" "$2" "$3")"); }

# Carried wheels (nanobind for the build, gguf for transformers' GGUF loader) into a private
# target folder: the machine's own site-packages stay as they are.
SITE=/tmp/sp-site
if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$ROOT"/.whl/*.whl || { echo "installing .whl/ failed"; exit 1; }
fi

# Build from tracked files only (as gpu-bench.sh), so stray files in the copy cannot break it:
# .deps/tracked-files.txt, git's list (either may be stale on the copy) and the Python files.
if [ -n "${SP_PY_SRC:-}" ]; then
  SRC=$SP_PY_SRC
else
  SRC=/tmp/sp-src-python
  LIST=$( (cd "$ROOT" && { cat .deps/tracked-files.txt 2>/dev/null; git ls-files 2>/dev/null;
           find python tests/python pyproject.toml scripts/gpu_python_hf.py -type f \
             ! -path '*__pycache__*'; }) | sort -u)
  mkdir -p "$SRC" && find "$SRC" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
  if [ -f "$ROOT/.whl/src.tar" ]; then
    tar -xf "$ROOT/.whl/src.tar" -C "$SRC" || { echo "extracting .whl/src.tar failed"; exit 1; }
  else
    (cd "$ROOT" && echo "$LIST" | while read -r f; do [ -e "$f" ] && echo "$f"; done |
      xargs -d '\n' cp -p --parents -t "$SRC")
  fi
  [ -d "$ROOT/.deps" ] && cp -rp "$ROOT/.deps" "$SRC/"
fi
BUILD=${SP_PY_SRC:+$SRC/build-python}
BUILD=${BUILD:-$SRC/build}
TEXT=${TEXT:-$ROOT/.whl/emma.txt}
export PYTHONPATH=$BUILD/python:$SITE${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

for step in $STEPS; do
  case $step in
    build)
      nvidia-smi --query-gpu=name,clocks.sm,memory.used --format=csv,noheader
      python3 -c 'import sys, sysconfig, os; h = sysconfig.get_paths()["include"]; print(sys.version.split()[0], h, "Python.h", "found" if os.path.exists(os.path.join(h, "Python.h")) else "MISSING")'
      python3 -c 'import torch, transformers, nanobind; print("torch", torch.__version__, "transformers", transformers.__version__, "nanobind", nanobind.__version__)'
      pcre=()
      [ -f "$SRC/.deps/lib/libpcre2-8.a" ] && pcre=(-DSP_PCRE2_INCLUDE="$SRC/.deps/include" -DSP_PCRE2_LIB="$SRC/.deps/lib/libpcre2-8.a")
      t0=$(date +%s)
      # The machine's default C++ compiler (CXX=/opt/gcc/bin/g++) has only the static
      # libstdc++, whose private copy crashed the module (python/CMakeLists.txt): the system g++.
      cxx=${SP_PY_CXX:-/usr/bin/g++}
      own=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DSP_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a
           -DSP_BLAS=OFF -DSP_BUILD_TESTS=OFF -DSP_BUILD_TOOLS=OFF)
      [ -x "$cxx" ] && own+=(-DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CUDA_HOST_COMPILER="$cxx")
      cmake -S "$SRC" -B "$BUILD" "${own[@]}" \
        -DSP_PYTHON=ON -DPython_EXECUTABLE="$(command -v python3)" \
        -DCMAKE_PREFIX_PATH="$SRC/.deps" "${pcre[@]}" >"$OUT/py-configure.log" 2>&1 ||
        { tail -30 "$OUT/py-configure.log"; note build FAIL "configure (py-configure.log)"; break; }
      grep -A2 "Python extension" "$OUT/py-configure.log"
      if cmake --build "$BUILD" -j16 --target shareprefill_python >"$OUT/py-build.log" 2>&1; then
        note build ok "sm_90a extension in $(( $(date +%s) - t0 )) s"
      else
        grep -E "error|FAILED" "$OUT/py-build.log" | head -30
        note build FAIL "see py-build.log"
        break
      fi
      python3 -c 'import shareprefill as sp; print(sp.build_info())'
      ;;
    test)
      (cd /tmp && python3 -m pytest -q -rs -p no:cacheprovider --junitxml="$OUT/pytest.xml" \
        "$SRC/tests/python" 2>&1) | tee "$OUT/pytest.log" | tail -40
      line=$(grep -E "[0-9]+ (passed|failed)" "$OUT/pytest.log" | tail -1)
      if grep -qE "[0-9]+ failed|error" <<<"$line"; then note pytest FAIL "$line"; else note pytest ok "$line"; fi
      ;;
    model)
      if [ -z "$MODEL" ] || [ ! -f "$MODEL" ]; then
        note model skip "no GGUF given (scripts/gpu-python.sh MODEL.gguf)"
        continue
      fi
      text=()
      [ -f "$TEXT" ] && text=(--text "$TEXT")
      OUT=$OUT python3 "$SRC/scripts/gpu_python_hf.py" --model "$MODEL" "${text[@]}" \
        --out "$OUT/hf.jsonl" 2>&1 | grep -v -E "Warning|warn\(" | tee "$OUT/hf.log" | tail -60
      if [ "${PIPESTATUS[0]}" -eq 0 ]; then note model ok "all checks passed (hf.log)"; else note model FAIL "see the table above (hf.log)"; fi
      ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done

echo
echo "== scripts/gpu-python.sh summary =="
printf '%s\n' "${summary[@]}"
