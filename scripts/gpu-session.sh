#!/usr/bin/env bash
# GPU machine: a session's two back-to-back calls in one script (what the third session of
# 2026-12-02 ran by hand). Prepare here:
#   git archive -o .whl/src.tar HEAD && scripts/gpu-prepare.sh && scripts/gpu-split-model.sh
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 -d .whl nanobind==2.12.0 gguf==0.19.0
#   cp ~/.cache/shareprefill/corpora/austen/emma.txt .whl/
# (.whl plus one model half must stay under the 64 MiB a call carries: ~4 MB + 47 MB.)
# QUICK=1 builds the CLI alone and stops `bench` after the prefill and needle steps.
# (When the machine went cold between calls, `stage` with call 1's carry stages the first half
# alone; `model` then builds what it needs itself.)
# Call 1, carry [".deps", ".whl", ".carry-model-a"]: scripts/gpu-session.sh tests
#   stages the model's first half, builds the project from .whl/src.tar (tests, tools) and the
#   Python extension side by side, runs pytest and the CUDA test programs.
# Call 2 at once (the machine stays warm 30 s), carry [".deps", ".whl", ".carry-model-b"]:
#   scripts/gpu-session.sh model
#   joins the model, runs the HF backend checks (scripts/gpu_python_hf.py), the golden and
#   device-plan tests with the model, and decode after a 32K prefill.
# `perf` (no model needed; after `tests` in call 1: `scripts/gpu-session.sh tests; scripts/gpu-session.sh perf`)
#   times the device planner, whole layers at 32K, the varlen tie band and chunked 128K with a
#   fresh and a carried sharing state.
# Call 3 at once, same carry as call 2: scripts/gpu-session.sh bench
#   the end-to-end prefill step (all modes and HF SDPA at 8K/32K/128K, YaRN beyond 8K), needle
#   retrieval on the GPU at 8K/32K, the context-parallel simulation at 128K, 8 layers of 128K
#   against cuDNN, and split-and-merge against one call at 32K.
# `accuracy` (model and .cache/accuracy-texts carried): scripts/gpu-accuracy.sh's curves.
# `sweep` (model and .cache/sweep-texts carried; scripts/gpu-sweep-texts.sh makes it here):
#   scripts/gpu_threshold_sweep.py, its whole log in $OUT/sweep.log.
# `maps` (model and .cache/sweep-texts carried): issue 17's 32K target (<= +1% at density
#   <= 0.25) for both shipped maps and the baselines on the evaluation novels; $OUT/maps.txt.
# `needles` (model and .cache/sweep-texts carried; VSLASH_MAP, FLEX_MAP: the baselines' own
#   picks): issue 17's needle target at 8K with and without --exact-last-row.
# `dense-gain` (model and .cache/sweep-texts carried): issue 17's default map made again by
#   eval dense-gain --unshare-clusters at 8K, then the 32K pick into its entry from 24,576
#   tokens, and evaluated at 8K beside the shipped one.
# Short results are printed; logs go to $OUT (at most 8 files come back: the rest is in the tail).
set -uo pipefail
OUT=${OUT:-/tmp/sp-gpu-out}
export OUT
mkdir -p "$OUT"
SRC_DIR=/tmp/sp-session
BIN=$SRC_DIR/build-gpu/bin
# The project's build from .whl/src.tar, in the background; a no-op when this machine has it.
build_project() {
  [ -x "$BIN/shareprefill" ] && { [ -n "${QUICK:-}" ] || [ -x "$BIN/test_llama_cuda" ]; } && return 0
  (env ${QUICK:+BUILD_TARGETS=shareprefill_cli} SP_SRC_TAR=$PWD/.whl/src.tar SP_SRC_DIR=$SRC_DIR OUT=/tmp/sp-gpu-build \
     scripts/gpu-bench.sh build >"$OUT/build.log" 2>&1
   echo "== project build"; grep -E "FAILED|error:" "$OUT/build.log" | head; tail -2 "$OUT/build.log") &
}
case ${1:-} in
  stage)
    scripts/gpu-join-model.sh --stage
    ;;
  tests)
    scripts/gpu-join-model.sh --stage >/dev/null 2>&1
    build_project
    STEPS="build test" scripts/gpu-python.sh >"$OUT/python.log" 2>&1
    echo "== python"; grep -E "[0-9]+ (passed|failed)" "$OUT/python.log" | tail -2
    wait
    for t in test_cuda_attention test_cuda_attention_serving test_cuda_merge_attention \
             test_device_planner_kernels test_device_planner test_device_planner_chunks test_llama_cuda test_model_ops test_model_decode test_model_gemv \
             test_token_logprob test_cuda_context_parallel; do
      [ -x "$BIN/$t" ] || { echo "== $t: not built"; continue; }
      timeout 300 "$BIN/$t" >"/tmp/sp-$t.txt" 2>&1
      echo "== $t rc=$? $(grep -E '^\[  (PASSED|FAILED)  \]' "/tmp/sp-$t.txt" | tr '\n' ' ')"
      grep -E "^\[  FAILED  \] [A-Za-z]|Failure" "/tmp/sp-$t.txt" | head -6
    done
    ;;
  model)
    mkdir -p /tmp/spc
    m=$(scripts/gpu-join-model.sh /tmp/spc/SmolLM2-135M-Instruct.Q4_1.gguf) || exit 1
    build_project
    timeout 420 env STEPS="build model" scripts/gpu-python.sh "$m" >"$OUT/hf.txt" 2>&1
    echo "== HF backend rc=$?"; sed -n '/HF backend: summary/,$p' "$OUT/hf.txt" | head -20
    wait
    SP_CACHE=/tmp/spc timeout 120 "$BIN/test_llama_cuda" --gtest_filter='*Golden*:*DevicePlan*' \
      >"$OUT/golden.txt" 2>&1
    echo "== golden and device-plan tests rc=$?"
    grep -E "^\[  (PASSED|FAILED) |logit diff|mismatch" "$OUT/golden.txt" | head -8
    timeout 120 "$BIN/shareprefill" bench prefill --device cuda --model "$m" --text .whl/emma.txt \
      --lengths 32768 --modes dense --repeats 1 --decode 64 2>&1 | grep -E "^(mode|dense|decode) "
    ;;
  perf)
    # Without the model, after `tests` in the same call: the device planner's timing and whole
    # layers against our dense at 32K (issue 13) and the varlen schedule's tie band (issue 16).
    build_project; wait
    SP_PLANNER_TIMING=1 timeout 150 "$BIN/test_device_planner" --gtest_filter='*Timing*' \
      >"$OUT/planner-timing.txt" 2>&1
    echo "== planner timing rc=$?"; grep -E "PLANNER_TIMING.* prompt=2 layer=(1|2) " "$OUT/planner-timing.txt" |
      sed 's/ kinds.*//' | head -16
    for shape in "32 8 128" "9 3 64"; do
      set -- $shape
      timeout 90 "$BIN/shareprefill" bench layer --device cuda --n 32768 --heads $1 --kv-heads $2 \
        --dim $3 --layers 2 --repeats 2 2>&1 | grep -vE '^\{' | tail -6
    done
    for band in 1 16; do
      timeout 60 "$BIN/shareprefill" bench attention --device cuda --heads 32 --kv-heads 8 --dim 128 \
        --densities 1,0.1 --seqlens 16384,16384,16384,16384,16384,16384,16384,16384 \
        --tie-band $band 2>&1 | tail -2 | sed "s/^/band $band: /"
    done
    # Chunked prefill of 128K in 16K chunks with a fresh and a carried sharing state (issue 16).
    for state in fresh carried; do
      timeout 150 "$BIN/shareprefill" bench layer --device cuda --n 131072 --heads 32 --kv-heads 8 \
        --dim 128 --layers 4 --chunk 16384 --modes shareprefill --chunk-state $state --json 2>&1 |
        grep chunk_state | python3 -c "
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(r['chunk_state'], 'chunked/one-shot %.3f' % r['time_ratio'], 'err ratio %.3f' % r['err_ratio'],
          'density %.3f / %.3f' % (r['density_one_shot'], r['density_chunked']))"
    done
    ;;
  bench)
    mkdir -p /tmp/spc
    m=/tmp/spc/SmolLM2-135M-Instruct.Q4_1.gguf
    [ -f "$m" ] || m=$(scripts/gpu-join-model.sh "$m") || exit 1
    build_project; wait
    echo "== prefill"
    MODEL=$m TEXT=$PWD/.whl/emma.txt REPEATS=${REPEATS:-2} SP_BIN=$BIN SP_SRC_DIR=$SRC_DIR \
      timeout 400 scripts/gpu-bench.sh prefill 2>&1 | tail -24
    echo "== needle (cuda)"
    timeout 120 "$BIN/shareprefill" eval needle --device cuda --model "$m" --haystack .whl/emma.txt \
      --needles data/needles/default.jsonl --lengths 8192,32768 --rope-scaling yarn --rope-factor 4 \
      --json "$OUT/needle.jsonl" 2>"$OUT/needle.err" | tail -3
    echo "needle rc=$?"; grep -vE "layer [0-9]+/" "$OUT/needle.err" | tail -45
    [ -n "${QUICK:-}" ] && exit 0  # QUICK=1: the CLI alone is built, prefill and needle only
    echo "== context-parallel simulation (128K, 32/8/128)"
    CP_1M=0 SP_BIN=$BIN timeout 250 scripts/gpu-bench.sh cp 2>&1 | tail -12
    echo "== 8 layers at 128K, 32/8/128, against cuDNN"
    timeout 150 "$BIN/shareprefill" bench layer --device cuda --n 131072 --heads 32 --kv-heads 8 \
      --dim 128 --layers 8 --repeats 1 --modes dense,vslash,shareprefill 2>&1 | grep -vE '^\{' | tail -6
    timeout 60 python3 scripts/bench_sdpa.py --shape 131072,32,8,128 2>&1 | tail -2
    echo "== split-and-merge (32K, 32/8/128)"
    timeout 60 "$BIN/shareprefill" bench attention --device cuda --n 32768 --heads 32 --kv-heads 8 \
      --dim 128 --split 2>&1 | tail -4
    ;;
  accuracy)
    # Issue 17's density-matched perplexity curves on the GPU (scripts/gpu-accuracy.sh); carry
    # .cache/accuracy-texts as well (2.4 MB). After `model` in the same call, or alone.
    mkdir -p /tmp/spc
    m=/tmp/spc/SmolLM2-135M-Instruct.Q4_1.gguf
    [ -f "$m" ] || m=$(scripts/gpu-join-model.sh "$m") || exit 1
    build_project; wait
    BIN=$BIN OUT=$OUT/accuracy timeout 500 scripts/gpu-accuracy.sh "$m" 2>&1 |
      grep -vE "^\s*$" | cut -c1-160 | tail -120
    ;;
  sweep)
    # Issue 17: thresholds chosen on calibration texts, then evaluated (scripts/gpu_threshold_sweep.py);
    # carry .cache (scripts/gpu-sweep-texts.sh: 2.7 MB, the first 400 KB of each novel and the
    # held-out KJV part).
    mkdir -p /tmp/spc
    m=/tmp/spc/SmolLM2-135M-Instruct.Q4_1.gguf
    [ -f "$m" ] || m=$(scripts/gpu-join-model.sh "$m") || exit 1
    build_project; wait
    timeout ${SWEEP_S:-540} python3 scripts/gpu_threshold_sweep.py --bin "$BIN" --model "$m" \
      --texts .cache/sweep-texts --out /tmp/sp-sweep ${SWEEP_ARGS:-} 2>&1 | tee "$OUT/sweep.log" |
      tail -70
    ;;
  maps)
    # Issue 17 at 32K (YaRN x4), evaluation novels, 4 windows: the first shipped map (format 1,
    # 1024-token minimum budget) and the settings map (the default) down to density 0.25, and
    # flexprefill / vslash with the sweep's choices at the same densities.
    mkdir -p /tmp/spc
    m=/tmp/spc/SmolLM2-135M-Instruct.Q4_1.gguf
    [ -f "$m" ] || m=$(scripts/gpu-join-model.sh "$m") || exit 1
    build_project; wait
    T=.cache/sweep-texts
    ev() {
      timeout 120 "$BIN/shareprefill" eval ppl --device cuda --model "$m" --lengths 32768 \
        --windows 4 --rope-scaling yarn --rope-factor 4 \
        --texts $T/prideprejudice.txt,$T/emma.txt,$T/persuasion.txt "$@" 2>&1 |
        grep -E "^(dense|vslash|flexprefill|shareprefill)|thresholds"
    }
    {
      echo "== first map"; ev --modes dense,shareprefill --gammas 0.84,0.85,0.86,0.87,0.88 \
        --clusters data/clusters/smollm2-135m-instruct.json
      echo "== settings map"; ev --modes shareprefill --gammas 0.80,0.83,0.85
      # the sweep's 32K choices for the baselines (docs/RESULTS.md, "The second sweep")
      D=data/clusters/smollm2-135m-instruct-dense-heads.json
      echo "== flexprefill"; ev --modes flexprefill --gammas 0.80,0.83,0.86 --clusters $D \
        --tau-qa 0.2 --min-budget 2048
      echo "== vslash"; ev --modes vslash --gammas 0.80,0.83,0.86 --clusters $D --min-budget 2048
    } >"$OUT/maps.txt"
    cut -c1-120 "$OUT/maps.txt"
    ;;
  dense-gain)
    # Issue 17, the default map's making (docs/CALIBRATION.md, "Dense heads by measured gain"):
    # eval dense-gain --unshare-clusters from the settings map on 20 calibration windows of 8K
    # (about 3 min), then the 32K pick on that map (about 2 min); the map they write on the
    # evaluation novels (8 windows) and the held-out KJV (6) at 8K against the shipped default;
    # everything in $OUT/dense-gain.tgz.
    mkdir -p /tmp/spc /tmp/sp-dense-gain
    m=/tmp/spc/SmolLM2-135M-Instruct.Q4_1.gguf
    [ -f "$m" ] || m=$(scripts/gpu-join-model.sh "$m") || exit 1
    QUICK=1 build_project; wait
    T=.cache/sweep-texts R=/tmp/sp-dense-gain
    trap 'tar czf "$OUT/dense-gain.tgz" -C $R .' EXIT
    timeout 400 "$BIN/shareprefill" eval dense-gain --device cuda --model "$m" --length 8192 \
      --windows 20 --texts $T/sensesensibility.txt,$T/mansfieldpark.txt,$T/northangerabbey.txt \
      --clusters data/clusters/smollm2-135m-instruct-head-settings.json --pick-density 0.45 \
      --unshare-clusters --map-out $R/map.json --json $R/gain.jsonl >$R/gain.txt 2>$R/gain.err
    echo "== dense-gain rc=$?"
    grep -E "^dense ppl|^cluster|^without|split-half|^picked|the written map" $R/gain.txt
    # The 32K pick into the map's entry from 24,576 tokens: the largest gamma of a scan whose
    # density leaves room for one head (1/270) under 0.245, then the pick at that gamma.
    cal=$T/sensesensibility.txt,$T/mansfieldpark.txt,$T/northangerabbey.txt
    timeout 120 "$BIN/shareprefill" eval ppl --device cuda --model "$m" --lengths 32768 --windows 6 \
      --rope-scaling yarn --rope-factor 4 --texts $cal --modes shareprefill \
      --gammas 0.5,0.6,0.7,0.75,0.8,0.85 --clusters $R/map.json --json $R/scan32.jsonl >/dev/null 2>&1
    g32=$(python3 -c 'import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(max(r["gamma"] for r in rows if r.get("gamma") and r["density"] <= 0.245 - 1 / 270))' $R/scan32.jsonl)
    timeout 400 "$BIN/shareprefill" eval dense-gain --device cuda --model "$m" --length 32768 \
      --rope-scaling yarn --rope-factor 4 --windows 6 --texts $cal --gamma "$g32" \
      --clusters $R/map.json --pick-density 0.245 --map-out $R/map32.json --json $R/gain32.jsonl \
      >$R/gain32.txt 2>$R/gain32.err
    echo "== dense-gain at 32K, gamma $g32: rc=$?"
    grep -E "^dense ppl|split-half|^picked|the written map" $R/gain32.txt
    for map in data/clusters/smollm2-135m-instruct-dense-gain.json $R/map32.json; do
      for set in "novels $T/prideprejudice.txt,$T/emma.txt,$T/persuasion.txt 8" \
                 "kjv $T/kjv-heldout.txt 6"; do
        read -r name texts w <<<"$set"
        echo "== $name $map"
        timeout 100 "$BIN/shareprefill" eval ppl --device cuda --model "$m" --lengths 8192 \
          --windows "$w" --texts "$texts" --modes dense,shareprefill --gammas 0.93,0.94,0.95,0.96 \
          --clusters "$map" 2>&1 | grep -E "^(dense|shareprefill) |error"
      done
    done
    ;;
  needles)
    # Issue 17's needle target at 8K, with and without exact_last_row: test_device_planner's
    # ExactLastRow first (device against host), then the evaluation needles in Emma and
    # Persuasion (9 depths x 5: 90 cells) and the calibration needles in the three calibration
    # novels (9 x 8: 216 cells) for shareprefill (the default map) and vslash / flexprefill
    # (VSLASH_MAP / FLEX_MAP: their own dense-gain picks; default: the default map), summarised
    # by scripts/needle_compare.py; then 8K perplexity of each on the evaluation novels with and
    # without the option. Everything in $OUT/needles.tgz.
    mkdir -p /tmp/spc /tmp/sp-needles
    m=/tmp/spc/SmolLM2-135M-Instruct.Q4_1.gguf
    [ -f "$m" ] || m=$(scripts/gpu-join-model.sh "$m") || exit 1
    build_project; wait
    T=.cache/sweep-texts R=/tmp/sp-needles D=data/clusters/smollm2-135m-instruct-dense-gain.json
    trap 'tar czf "$OUT/needles.tgz" -C $R .' EXIT
    timeout 300 "$BIN/test_device_planner" --gtest_filter='*ExactLastRow*:*RandomInputs*' \
      >$R/test.txt 2>&1
    echo "== test_device_planner ExactLastRow rc=$?"; grep -E "^\[  (PASSED|FAILED)" $R/test.txt
    declare -A map=([shareprefill]=$D [vslash]=${VSLASH_MAP:-$D} [flexprefill]=${FLEX_MAP:-$D})
    for hay in emma persuasion sensesensibility mansfieldpark northangerabbey; do
      needles=calibration per=8
      case $hay in emma | persuasion) needles=default per=5 ;; esac
      for mode in shareprefill vslash flexprefill; do
        for x in "" --exact-last-row; do
          modes=$mode; [ $mode = shareprefill ] && [ -z "$x" ] && modes=dense,$mode
          timeout 150 "$BIN/shareprefill" eval needle --device cuda --model "$m" \
            --haystack $T/$hay.txt --needles data/needles/$needles.jsonl --lengths 8192 \
            --depths 0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9 --per-cell $per --max-new 10 \
            --modes $modes --clusters "${map[$mode]}" $x --json $R/$hay-$mode${x:+-exact}.jsonl \
            >/dev/null 2>$R/$hay-$mode${x:+-exact}.err || echo "needle $hay $mode $x failed"
        done
      done
      echo "== $hay"
      python3 scripts/needle_compare.py --reference $R/$hay-vslash.jsonl $R/$hay-*.jsonl
    done
    for mode in shareprefill vslash flexprefill; do
      timeout 150 "$BIN/shareprefill" eval ppl --device cuda --model "$m" --lengths 8192 \
        --windows 8 --texts $T/prideprejudice.txt,$T/emma.txt,$T/persuasion.txt \
        --modes dense,$mode --gammas 0.93,0.94,0.95 --clusters "${map[$mode]}" 2>&1 |
        grep -E "^$mode |error"
      timeout 150 "$BIN/shareprefill" eval ppl --device cuda --model "$m" --lengths 8192 \
        --windows 8 --texts $T/prideprejudice.txt,$T/emma.txt,$T/persuasion.txt \
        --modes dense,$mode --gammas 0.93,0.94,0.95 --clusters "${map[$mode]}" --exact-last-row \
        2>&1 | grep -E "^$mode |error" | sed 's/$/  (exact last row)/'
    done
    ;;
  *)
    echo "usage: scripts/gpu-session.sh stage|tests|perf|model|bench|accuracy|sweep|maps|dense-gain|needles (see the header)" >&2
    exit 2
    ;;
esac
