#!/usr/bin/env bash
# GPU machine: per-kernel durations (Nsight Compute, one metric, clocks left alone) of
#   decode  one decode step after a 2K prefill (random weights of SmolLM2's shape), and
#   plan    one shareprefill layer at 32K, 32/8/128, on the structured generator, and
#   prefill one shareprefill prefill of the real model (MODEL, the joined GGUF; TEXT, default
#           .whl/emma.txt) at PREFILL_N tokens (default 131072): the timed prefill's kernels,
#           after bench prefill's warm-up (docs/PERF.md, "The rest of the layer at 128K").
# Kernels run serialised under ncu: the durations are what each kernel costs alone, without the
# gaps between launches; compare their sum with the step's time to see the launch overhead.
# Usage (builds the CLI from .whl/src.tar first when this machine has no build):
#   scripts/gpu-profile.sh [decode] [plan] [prefill]
# Prints one table per target: kernel name (shortened), calls, total us, mean us.
set -uo pipefail
OUT=${OUT:-/tmp/sp-gpu-out}
mkdir -p "$OUT"
SRC_DIR=/tmp/sp-session
BIN=$SRC_DIR/build-gpu/bin
if [ ! -x "$BIN/shareprefill" ]; then
  env BUILD_TARGETS=shareprefill_cli SP_SRC_TAR=$PWD/.whl/src.tar SP_SRC_DIR=$SRC_DIR \
    OUT=/tmp/sp-gpu-build scripts/gpu-bench.sh build >"$OUT/build.log" 2>&1
  [ -x "$BIN/shareprefill" ] || { echo "build failed"; tail -20 "$OUT/build.log"; exit 1; }
fi
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "no ncu"; exit 1; }

# table CSV [step|prefill]: per-kernel sums; with `step`, over one decode step only (the kernels
# from the first decode-attention launch, less the norm and QKV GEMM before it, up to the same
# point of the next step); with `prefill`, over the second prefill (from its RoPE table on).
table() {
  python3 - "$1" "${2:-}" <<'PY'
import csv, re, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head, rows = rows[0], rows[1:]
name_i, metric_i, value_i = head.index("Kernel Name"), head.index("Metric Name"), head.index("Metric Value")
rows = [r for r in rows if r[metric_i] == "gpu__time_duration.sum"]
if sys.argv[2] == "step":
    att = [i for i, r in enumerate(rows) if "decode_chunk_kernel" in r[name_i]]
    if len(att) < 31:
        sys.exit(f"only {len(att)} decode attention launches profiled")
    rows = rows[att[0] - 2:att[30] - 2]
if sys.argv[2] == "prefill":
    starts = [i for i, r in enumerate(rows) if "rope_angles_kernel" in r[name_i]]
    if len(starts) < 2:
        sys.exit(f"{len(starts)} prefills profiled, expected the warm-up and the timed one")
    rows = rows[starts[1]:]
agg = collections.OrderedDict()
for r in rows:
    # The function's own name: the identifier before its template arguments and parameter list
    # ("void sp::cuda::(anonymous namespace)::fill_kernel<16>(...)" -> "fill_kernel").
    m = re.search(r"(\w+)(<[^(]*>)?\(", r[name_i])
    name = (m.group(1) if m else r[name_i])[-60:]
    calls, total = agg.get(name, (0, 0.0))
    agg[name] = (calls + 1, total + float(r[value_i].replace(",", "")) / 1000.0)
total = sum(t for _, t in agg.values())
print(f"{'kernel':60s} {'calls':>6s} {'total us':>10s} {'mean us':>8s}")
for name, (calls, t) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print(f"{name:60s} {calls:6d} {t:10.1f} {t / calls:8.2f}")
print(f"{'all':60s} {sum(c for c, _ in agg.values()):6d} {total:10.1f}")
PY
}

for what in "${@:-decode plan}"; do
  for w in $what; do
    case $w in
      decode)
        # A short prompt keeps the profiled prefill small; the step's kernels other than the
        # attention do not depend on the cache length (the attention's cost at 32K: `bench
        # prefill --decode`'s parts). The first decode step is graph-captured and its nodes
        # profiled one by one; --launch-count caps the run.
        timeout 400 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv \
          --launch-count 2500 "$BIN/shareprefill" bench prefill --random-weights --modes dense \
          --lengths 2048 --repeats 1 --decode 2 >"$OUT/ncu-decode.csv" 2>"$OUT/ncu-decode.err"
        "$BIN/shareprefill" bench prefill --random-weights --modes dense --lengths 2048 \
          --repeats 1 --decode 64 2>&1 | grep -i "decode" | tail -2
        echo "== one decode step after 2K (kernels alone, serialised by ncu)"
        table "$OUT/ncu-decode.csv" step | head -30
        ;;
      plan)
        timeout 300 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv \
          "$BIN/shareprefill" bench layer --device cuda --n 32768 --heads 32 --kv-heads 8 \
          --dim 128 --layers 2 --repeats 1 --modes shareprefill >"$OUT/ncu-plan.csv" 2>"$OUT/ncu-plan.err"
        echo "== one shareprefill layer pair at 32K, 32/8/128"
        table "$OUT/ncu-plan.csv" 0 | head -45
        ;;
      prefill)
        MODEL=${MODEL:-/tmp/SmolLM2-135M-Instruct.Q4_1.gguf} TEXT=${TEXT:-$PWD/.whl/emma.txt}
        [ -f "$MODEL" ] && [ -f "$TEXT" ] ||
          { echo "prefill: MODEL ($MODEL) or TEXT ($TEXT) missing (scripts/gpu-join-model.sh)"; continue; }
        timeout 420 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv \
          "$BIN/shareprefill" bench prefill --device cuda --model "$MODEL" --text "$TEXT" \
          --lengths "${PREFILL_N:-131072}" --repeats 1 --decode 0 --modes shareprefill \
          >"$OUT/ncu-prefill.csv" 2>"$OUT/ncu-prefill.err"
        echo "== one shareprefill prefill of ${PREFILL_N:-131072} tokens (kernels alone, serialised by ncu)"
        table "$OUT/ncu-prefill.csv" prefill | head -45
        ;;
    esac
  done
done
