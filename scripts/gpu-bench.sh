#!/usr/bin/env bash
# GPU machine: build (sm_90a, no OpenBLAS), run the CUDA tests, compute-sanitizer on small
# cases, benchmark our CUDA attention at N = 32768 and 131072 for Llama-3-8B (32/8/128) and
# SmolLM2 (9/3/64) shapes over densities 1, 0.5, 0.2, 0.1, 0.05, time cuDNN SDPA on the same
# shapes in the same run, and print ours/cuDNN ratios last. Both kernel paths are benched
# (`bench attention --kernel hopper` and `portable`; PATHS="hopper" limits it); the hopper path
# with each CTA count of CTAS (`--ctas`, default "0": one CTA per SM). The test step runs
# every tests/cuda test; the layer step times whole SharePrefill layers (bench layer) and cuDNN.
# SANITIZE_FILTER overrides the gtest filter of the sanitizer step. The profile step runs Nsight
# Compute (full set) on one hopper launch per case of PROFILE_CASES ("N H Hkv D density ctas",
# ';'-separated; ctas 0 = one per SM) and prints the headline metrics. JSON lines, reports and the log go
# to $OUT.
# The compare step alternates our kernel (default configuration; full mask and density 0.05)
# with cuDNN SDPA ROUNDS times (default 3) per shape, so clock drift between the two is shared,
# and prints the per-round ratios and their medians.
# The layer-real step runs bench layer on the real model's own activations (MODEL, TEXT) and
# cuDNN on the same shape (issue 13).
# The prefill step times the real model end to end against HF transformers (issue 14; MODEL,
# TEXT, SP_WHEELS). SP_SRC_TAR=FILE builds from a carried `git archive` instead of the tree
# (in SP_SRC_DIR); SP_BIN=DIR runs programs built elsewhere instead of $BUILD/bin.
# The cp step simulates context-parallel ranks on this one GPU (issue 19,
# docs/CONTEXT_PARALLEL.md).
# The python step builds the Python extension in the same build and runs scripts/gpu-python.sh.
# Usage: scripts/gpu-bench.sh [build] [test] [sanitize] [bench] [layer] [layer-real] [prefill] [python] [cp] [profile] [compare]
#        (default: the first four)
# Needs .deps/ (CLI11, PCRE2, the tracked-file list): run scripts/gpu-prepare.sh on the
# development machine and carry [".deps"] (README, "GPU machine").
set -uo pipefail
OUT=${OUT:-/tmp/sp-gpu-out}
mkdir -p "$OUT"
ROOT=$(pwd)
STEPS=${*:-build test sanitize bench}
BUILD=$ROOT/build-gpu
BIN=$BUILD/bin
run() { echo "+ $*"; "$@"; }

# Build only tracked files (plus .deps), so stray files in the copied tree cannot break the
# build: the list comes from .deps/tracked-files.txt, written by scripts/gpu-prepare.sh before
# the tree was sent (the copy's git metadata may be stale or missing), or else from git here.
[ -f "$ROOT/.deps/include/CLI/CLI.hpp" ] && [ -f "$ROOT/.deps/lib/libpcre2-8.a" ] ||
  echo "warning: no .deps/ with CLI11 and PCRE2 (scripts/gpu-prepare.sh, then carry .deps)" >&2
SRC=$ROOT
LIST=
[ -f "$ROOT/.deps/tracked-files.txt" ] && LIST=$(cat "$ROOT/.deps/tracked-files.txt")
[ -z "$LIST" ] && LIST=$(cd "$ROOT" && git ls-files 2>/dev/null)
if [ -n "${SP_SRC_TAR:-}" ]; then
  # A committed snapshot (`git archive -o DIR/src.tar HEAD` here, carried): builds exactly what
  # was committed, whatever else the copied tree holds; into SP_SRC_DIR (default /tmp/sp-src), so
  # a warm machine's other builds are left alone.
  SRC=${SP_SRC_DIR:-/tmp/sp-src}
  mkdir -p "$SRC" && find "$SRC" -mindepth 1 -maxdepth 1 ! -name build-gpu -exec rm -rf {} +
  tar -xf "$SP_SRC_TAR" -C "$SRC" && cp -rp "$ROOT/.deps" "$SRC/" || { echo "extracting $SP_SRC_TAR failed"; exit 1; }
  BUILD=$SRC/build-gpu
  BIN=$BUILD/bin
elif [ -n "$LIST" ]; then
  SRC=/tmp/sp-src
  # Keep the build folder between invocations (`build` then `bench`); timestamps are preserved so
  # unchanged sources are not rebuilt.
  mkdir -p "$SRC" && find "$SRC" -mindepth 1 -maxdepth 1 ! -name build-gpu -exec rm -rf {} +
  (cd "$ROOT" && echo "$LIST" | while read -r f; do [ -e "$f" ] && echo "$f"; done |
    xargs -d '\n' cp -p --parents -t "$SRC" && cp -rp .deps "$SRC/")
  BUILD=$SRC/build-gpu
  BIN=$BUILD/bin
fi

# SP_BIN: programs built elsewhere (the same sources for sm_90a), for the steps that only run.
[ -n "${SP_BIN:-}" ] && BIN=$SP_BIN
CUDA_TESTS=$(cd "$SRC/tests/cuda" && ls test_*.cpp | sed 's/\.cpp$//' | tr '\n' ' ')

for step in $STEPS; do
  case $step in
    build)
      nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used --format=csv
      run cmake -S "$SRC" -B "$BUILD" -G Ninja -DSP_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
        -DSP_BLAS=OFF -DSP_PYTHON=OFF -DCMAKE_PREFIX_PATH="$SRC/.deps" \
        >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
      # BUILD_TARGETS: what to build (default: every CUDA test and the CLI).
      run cmake --build "$BUILD" -j16 --target ${BUILD_TARGETS:-$CUDA_TESTS shareprefill_cli} \
        >"$OUT/build-full.log" 2>&1
      grep -E "error|warning|FAILED|spill" "$OUT/build-full.log" | head -40
      [ -n "${BUILD_TARGETS:-}" ] || [ -x "$BIN/test_cuda_attention" ] || { echo "build failed"; exit 1; }
      [ -x "$BIN/shareprefill" ] || { echo "shareprefill CLI failed to build"; tail -20 "$OUT/build-full.log"; }
      ;;
    test)
      # Every GPU test (tests/cuda); the real-model test runs when $SP_CACHE holds the model
      # (scripts/gpu-join-model.sh "$SP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf").
      for t in $CUDA_TESTS; do
        run "$BIN/$t" >"$OUT/$t.log" 2>&1
        echo "$t: rc=$? $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUT/$t.log" | tr '\n' ' ')"
        grep -E '^\[  FAILED  \]|Failure|skipped:|SKIP' "$OUT/$t.log" | head -8
      done
      ;;
    layer)
      # A whole SharePrefill layer (plan + attention) per mode against our dense kernel, on the
      # structured generator, and cuDNN SDPA on the same shapes in the same run.
      L=$OUT/layer.jsonl
      : >"$L"
      for n in 32768 131072; do for shape in "32 8 128" "9 3 64"; do
        set -- $shape
        run timeout 200 "$BIN/shareprefill" bench layer --device cuda --json --n $n --heads $1 \
          --kv-heads $2 --dim $3 --layers ${LAYERS:-4} --repeats 2 2>"$OUT/layer-$n-$1.err" |
          tee -a "$L" | grep -v '"layer":[0-9]' | cut -c1-400
        tail -3 "$OUT/layer-$n-$1.err"
      done; done
      run python3 "$SRC/scripts/bench_sdpa.py" --shape 32768,32,8,128 --shape 131072,32,8,128 \
        --shape 32768,9,3,64 --shape 131072,9,3,64 | tee "$OUT/layer-sdpa.jsonl"
      ;;
    layer-real)
      # Whole SharePrefill layers on the real model's activations (issue 13): bench prefill
      # --save-inputs writes every layer's q, k, v of the dense prefill of the first N tokens of
      # TEXT (7.5 GB at 128K, in /tmp), bench layer --inputs --clusters runs all 30 layers per mode
      # with the shipped map's settings, then cuDNN SDPA on the same shape. Needs MODEL and TEXT
      # as the prefill step.
      MODEL=${MODEL:-/tmp/SmolLM2-135M-Instruct.Q4_1.gguf} TEXT=${TEXT:-$ROOT/.whl/emma.txt}
      [ -f "$MODEL" ] && [ -f "$TEXT" ] ||
        { echo "layer-real: MODEL ($MODEL) or TEXT ($TEXT) missing"; continue; }
      for n in ${LAYER_REAL_N:-32768 131072}; do
        I=/tmp/sp-inputs-$n.safetensors
        run timeout 120 "$BIN/shareprefill" bench prefill --model "$MODEL" --text "$TEXT" \
          --lengths $n --repeats 1 --decode 0 --modes dense --save-inputs "$I" \
          >"$OUT/layer-real-$n.save" 2>&1 || { tail -3 "$OUT/layer-real-$n.save"; continue; }
        run timeout 300 "$BIN/shareprefill" bench layer --device cuda --inputs "$I" \
          --clusters "$SRC/data/clusters/smollm2-135m-instruct-dense-gain.json" --layers 30 \
          --repeats 2 --modes dense,vslash,flexprefill,shareprefill --json "$OUT/layer-real-$n.jsonl" |
          grep -E "^mode|total"
        rm -f "$I"
        run python3 "$SRC/scripts/bench_sdpa.py" --shape $n,9,3,64 | tee -a "$OUT/layer-real-sdpa.jsonl"
      done
      ;;
    prefill)
      # End-to-end prefill of the real model (issue 14): bench prefill per mode over the first
      # 8K/32K/128K tokens of TEXT (YaRN x4/x16 beyond the trained 8K), then HF transformers
      # (SDPA, bf16, the same GGUF) on the same tokens; ours/HF ratios last. Needs MODEL (the
      # joined GGUF, default gpu-join-model.sh's /tmp path), TEXT (Emma, default .whl/emma.txt)
      # and, for the HF loader, the gguf wheel in SP_WHEELS (default .whl; installed privately).
      P=$OUT/prefill.jsonl H=$OUT/prefill-hf.jsonl
      MODEL=${MODEL:-/tmp/SmolLM2-135M-Instruct.Q4_1.gguf} TEXT=${TEXT:-$ROOT/.whl/emma.txt}
      [ -f "$MODEL" ] && [ -f "$TEXT" ] ||
        { echo "prefill: MODEL ($MODEL) or TEXT ($TEXT) missing (scripts/gpu-join-model.sh; carry Emma)"; continue; }
      SITE=/tmp/sp-site-prefill
      python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" \
        "${SP_WHEELS:-$ROOT/.whl}"/gguf-*.whl || echo "installing the gguf wheel failed"
      run timeout 420 "$BIN/shareprefill" bench prefill --model "$MODEL" --text "$TEXT" \
        --lengths ${PREFILL_N:-8192,32768,131072} --repeats ${REPEATS:-3} --decode 64 \
        --save-tokens "$OUT/prefill-tokens.json" --json "$P" 2>"$OUT/prefill.err"
      tail -3 "$OUT/prefill.err"
      run env PYTHONPATH=$SITE PYTHONUNBUFFERED=1 timeout 300 python3 "$SRC/scripts/bench_prefill_hf.py" \
        --model "$MODEL" --tokens "$OUT/prefill-tokens.json" --lengths ${PREFILL_N:-8192,32768,131072} \
        --repeats ${REPEATS:-3} 2>"$OUT/prefill-hf.err" | tee "$H"
      tail -3 "$OUT/prefill-hf.err"
      python3 - "$P" "$H" <<'PY'
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
hf = {r["n"]: r for r in (json.loads(l) for l in open(sys.argv[2]) if l.startswith("{"))}
dense = {r["n"]: r for r in ours if r.get("mode") == "dense"}
print(f"{'mode':>13} {'n':>7} {'ttft_ms':>9} {'tok/s':>9} {'attn':>5} {'plan':>5} {'density':>7} {'peak_GiB':>8} {'ppl':>8} {'ppl/dense':>9} {'vs_HF':>6} {'vs_dense':>8}")
for r in ours:
    if r["bench"] == "decode":
        print(f"{'decode':>13} {r['after_prompt']:>7} {r['ms_per_token']:>9.3f} {r['tokens_per_s']:>9.0f}  (ms/token, tok/s after the prompt)")
        continue
    h, d = hf.get(r["n"]), dense.get(r["n"])
    ratio = r.get("ppl_ratio") or 1.0
    print(f"{r['mode']:>13} {r['n']:>7} {r['ttft_ms']:>9.2f} {r['tokens_per_s']:>9.0f} {r['attention_share']:>5.2f} {r['plan_share']:>5.2f} "
          f"{r['density']:>7.3f} {r['peak_bytes'] / 2**30:>8.2f} {r['ppl']:>8.3f} {ratio:>9.4f} "
          f"{(h['ttft_ms'] / r['ttft_ms']) if h else float('nan'):>6.2f} {(d['ttft_ms'] / r['ttft_ms']) if d else float('nan'):>8.2f}")
for n, h in sorted(hf.items()):
    print(f"{'hf_sdpa':>13} {n:>7} {h['ttft_ms']:>9.2f} {h['tokens_per_s']:>9.0f} {'':>5} {'':>5} {'':>7} {h['peak_bytes'] / 2**30:>8.2f} {h['ppl']:>8.3f}")
print("vs_HF = HF ttft / ours (>1: we are faster); vs_dense = our dense ttft / this mode's")
PY
      ;;
    python)
      # The Python package (issue 15) from this source in its own build: the extension, pytest
      # (CUDA ops against float64, torch.compile, the transformers backend) and, when MODEL is
      # set, SmolLM2 through transformers with TEXT (scripts/gpu-python.sh; carry .whl).
      SP_PY_SRC=$SRC STEPS="build test${MODEL:+ model}" TEXT=${TEXT:-} \
        bash "$SRC/scripts/gpu-python.sh" ${MODEL:-}
      ;;
    cp)
      # Context parallelism simulated on one GPU (issue 19): bench layer --simulate over 2, 4 and
      # 8 ranks on the structured generator at 32/8/128: 128K tokens (2 layers, shareprefill and
      # vslash) and 1M tokens (1 layer, vslash: no pivots, so the device planner's workspace
      # fits) if it fits in memory and CP_1M_TIMEOUT seconds (default 300; CP_1M=0 skips it;
      # the 128K run stops at CP_128K_TIMEOUT, default 240). Per mode, layer and rank count:
      # imbalance (zigzag, balanced), each simulated rank's kernel time against the one call,
      # plan and modelled communication bytes, and bit-equality with the one-call output.
      C=$OUT/cp.jsonl
      : >"$C"
      CFGS=("131072 2 shareprefill,vslash ${CP_128K_TIMEOUT:-240}")
      [ "${CP_1M:-1}" = 0 ] || CFGS+=("1048576 1 vslash ${CP_1M_TIMEOUT:-300}")
      for cfg in "${CFGS[@]}"; do
        set -- $cfg
        run timeout "$4" "$BIN/shareprefill" bench layer --device cuda --json --n "$1" --heads 32 \
          --kv-heads 8 --dim 128 --layers "$2" --repeats 1 --modes "$3" --ranks 2,4,8 --simulate \
          2>"$OUT/cp-$1.err" >>"$C"
        echo "n=$1: rc=$?"; grep -i "error" "$OUT/cp-$1.err" | tail -3
      done
      python3 - "$C" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
cp = [r for r in rows if r.get("bench") == "layer_cp"]
print(f"{'mode':>13} {'n':>8} {'L':>2} {'R':>2} {'imb_zz':>7} {'imb_bal':>7} {'moved':>6} {'t_imb':>6} {'max_rank':>9} {'one_call':>9} {'speedup':>7} {'comm_MB':>8} {'plan_KB':>8} {'equal':>5} {'A_eq':>5}")
for r in cp:
    print(f"{r['mode']:>13} {r['n']:>8} {r['layer']:>2} {r['ranks']:>2} {r['imbalance_zigzag']:>7.4f} {r['imbalance_balanced']:>7.4f} "
          f"{r['moved_blocks']:>6} {r.get('rank_time_imbalance', float('nan')):>6.3f} {r.get('max_rank_ms', float('nan')):>9.3f} "
          f"{r['one_call_attention_ms']:>9.3f} {r.get('attention_speedup_model', float('nan')):>7.2f} "
          f"{r['comm_bytes_balanced']['max_total'] / 2**20:>8.1f} {r['plan_bytes'] / 2**10:>8.1f} {str(r['equal_bits']):>5} "
          f"{str(r.get('block_attention_equal_bits', '-')):>5}")
print("t_imb = max/mean simulated rank kernel time; speedup = one-call attention ms / slowest rank (attention only,")
print("no communication); comm_MB = bytes the busiest rank receives per layer (model: K/V all-gather, moved Q/O, plan, A rows)")
PY
      ;;
    sanitize)
      for tool in memcheck racecheck; do
        run timeout 300 compute-sanitizer --tool $tool --error-exitcode 3 "$BIN/test_cuda_attention" \
          --gtest_filter="${SANITIZE_FILTER:-*Ragged129*:*PivotsMixed*:*EmptyRows*}" 2>&1 | tail -8
      done
      ;;
    bench)
      J=$OUT/bench.jsonl
      : >"$J"
      for variant in $(for p in ${PATHS:-hopper portable}; do
                         if [ "$p" = hopper ]; then
                           for c in ${CTAS:-0}; do echo "hopper/$c"; done
                         else echo "$p/0"; fi; done); do
        IFS=/ read -r path ctas <<<"$variant"
        for shape in "32 8 128" "9 3 64"; do
          set -- $shape
          for n in ${BENCH_N:-32768 131072}; do
            rows=2; [ "$n" = 131072 ] && rows=1
            timeout 300 "$BIN/shareprefill" bench attention --device cuda --kernel $path --ctas $ctas \
              --n $n --heads $1 --kv-heads $2 --dim $3 \
              --densities ${DENSITIES:-1,0.5,0.2,0.1,0.05} --repeats 5 --sample-rows $rows --json |
              sed "s/^{/{\"ctas\":$ctas,/" | tee -a "$J"
          done
        done
      done
      PYTHONUNBUFFERED=1 python3 "$SRC/scripts/bench_sdpa.py" --shape 32768,32,8,128 \
        --shape 131072,32,8,128 --shape 32768,9,3,64 --shape 131072,9,3,64 --repeats 5 | tee "$OUT/sdpa.jsonl"
      python3 - "$J" "$OUT/sdpa.jsonl" <<'PY'
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
sdpa = {(r["n"], r["heads"], r["dim"]): r for r in (json.loads(l) for l in open(sys.argv[2]) if l.startswith("{"))}
print(f"{'path':>8} {'ctas':>5} {'n':>7} {'H/Hkv/D':>9} {'dens':>5} {'meas':>6} {'ours_ms':>9} {'TF_eff':>7} {'TF_comp':>7} {'cudnn_ms':>9} {'ours/cudnn':>10} {'t/(d*full)':>10} {'pivotx':>6} {'rel_err':>8}")
for r in ours:
    c = sdpa.get((r["n"], r["heads"], r["dim"]))
    cms = c["ms"] if c else float("nan")
    print(f"{r.get('path', '?'):>8} {r.get('ctas', 0) or 'SMs':>5} {r['n']:>7} {r['heads']:>3}/{r['kv_heads']}/{r['dim']:<3} {r['density']:>5} {r['measured_density']:>6.3f} "
          f"{r['sparse_ms']:>9.3f} {r['tflops_effective']:>7.1f} {r['tflops_computed']:>7.1f} {cms:>9.3f} "
          f"{cms / r['sparse_ms']:>10.3f} {r['sparse_ms'] / (r['measured_density'] * r['dense_ms']):>10.3f} "
          f"{r['pivot_overhead']:>6.3f} {r['rel_err']:>8.1e}")
print("ours/cudnn = cuDNN time / our time (throughput ratio, >= 0.9 is the target at density 1);")
print("t/(d*full) = sparse time / (measured density * our full-mask time) (target <= 1.15)")
PY
      ;;
    compare)
      J=$OUT/compare.jsonl
      : >"$J"
      for shape in ${COMPARE_SHAPES:-32768,32,8,128 131072,32,8,128 32768,9,3,64 131072,9,3,64}; do
        IFS=, read -r n h hkv d <<<"$shape"
        for round in $(seq "${ROUNDS:-3}"); do
          timeout 120 "$BIN/shareprefill" bench attention --device cuda --n $n --heads $h \
            --kv-heads $hkv --dim $d --densities 1,0.05 --repeats 5 --sample-rows 1 --json |
            sed "s/^{/{\"round\":$round,/" >>"$J"
          PYTHONUNBUFFERED=1 timeout 120 python3 "$SRC/scripts/bench_sdpa.py" --shape "$shape" \
            --repeats 5 | sed "s/^{/{\"round\":$round,/" >>"$J"
        done
      done
      python3 - "$J" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
shapes = sorted({(r["n"], r["heads"], r["kv_heads"], r["dim"]) for r in rows})
print(f"{'n':>7} {'H/Hkv/D':>9} {'round':>5} {'ours_ms':>9} {'cudnn_ms':>9} {'ours/cudnn':>10} {'t(0.05)/(d*full)':>16}")
for n, h, hkv, d in shapes:
    ratios, scalings = [], []
    for rnd in sorted({r["round"] for r in rows}):
        sel = [r for r in rows if (r["n"], r["heads"], r["dim"], r["round"]) == (n, h, d, rnd)]
        ours = {r["density"]: r for r in sel if "sparse_ms" in r}
        cudnn = [r["ms"] for r in sel if r.get("impl") == "cudnn_sdpa"]
        if 1.0 not in ours or 0.05 not in ours or not cudnn:
            continue
        full = ours[1.0]["sparse_ms"]
        low = ours[0.05]
        ratio, scaling = cudnn[0] / full, low["sparse_ms"] / (low["measured_density"] * full)
        ratios.append(ratio)
        scalings.append(scaling)
        print(f"{n:>7} {h:>3}/{hkv}/{d:<3} {rnd:>5} {full:>9.3f} {cudnn[0]:>9.3f} {ratio:>10.3f} {scaling:>16.3f}")
    if ratios:
        print(f"{n:>7} {h:>3}/{hkv}/{d:<3} {'median':>5} {'':>9} {'':>9} {statistics.median(ratios):>10.3f} {statistics.median(scalings):>16.3f}")
PY
      ;;
    profile)
      IFS=';' read -ra cases <<<"${PROFILE_CASES:-32768 32 8 128 1 0}"
      for c in "${cases[@]}"; do
        read -r n h hkv d dens ctas <<<"$c"
        name=ncu_${n}_${h}_${hkv}_${d}_${dens}_${ctas}
        # bench attention launches warm-up 2 + 1 timed run each on the full mask, then on the
        # all-pivot mask, then per density: skip to the density's own launch.
        skip=6; [ "$dens" = 1 ] && skip=0
        timeout 400 ncu --clock-control none --set full --import-source no \
          --kernel-name regex:hopper_fwd --launch-skip $skip --launch-count 1 -f -o "$OUT/$name" \
          "$BIN/shareprefill" bench attention --device cuda --kernel hopper --ctas $ctas \
          --n $n --heads $h --kv-heads $hkv \
          --dim $d --densities $dens --repeats 1 --sample-rows 1 >"$OUT/$name.log" 2>&1
        echo "== $c (ncu rc $?)"
        ncu --import "$OUT/$name.ncu-rep" --page details --print-units base 2>&1 |
          grep -E "^ +(Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Hit Rate|Issue Slots Busy|No Eligible|Warp Cycles Per Issued Instruction|Achieved Active Warps)" |
          sort -u
        ncu --import "$OUT/$name.ncu-rep" --page raw --csv 2>/dev/null | python3 -c '
import csv, sys
rows = list(csv.reader(sys.stdin))
head, vals = rows[0], rows[-1]
m = dict(zip(head, vals))
num = lambda v: float(v.replace(",", "")) if v.replace(",", "").replace(".", "", 1).isdigit() else None
for k in ("sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active",
          "sm__ops_path_tensor_op_hgmma_src_bf16_dst_fp32_sparsity_off.avg.pct_of_peak_sustained_elapsed",
          "TPC.TriageCompute.sm__pipe_tensor_cycles_active_realtime.avg.pct_of_peak_sustained_elapsed"):
    if k in m: print(f"  {k} = {m[k]}")
pre, post = "smsp__average_warps_issue_stalled_", "_per_issue_active.ratio"
stalls = [(num(v), k[len(pre):-len(post)]) for k, v in m.items()
          if k.startswith(pre) and k.endswith(post) and num(v)]
print("  stalls per issued instruction (top 8):",
      ", ".join(f"{k} {v:.2f}" for v, k in sorted(stalls, reverse=True)[:8]))'
        rm -f "$OUT/$name.log"
      done
      ;;
  esac
done
