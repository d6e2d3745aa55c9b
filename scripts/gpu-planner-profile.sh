#!/usr/bin/env bash
# GPU machine: where the device planner's time goes (issue 13). Runs test_device_planner's
# Timing case (CUDA events per layer: 32K and 128K, 32/8/128 and 9/3/64, shareprefill and vslash)
# and, when Nsight Compute works here, one prompt of 2 shareprefill layers per shape (32/8/128 at
# 32K, 9/3/64 at 128K) under `ncu` (kernel durations only, clocks and caches left alone), then
# prints per shape the kernels in launch order and a table per kernel name: launches, total us,
# share.
# Usage: scripts/gpu-planner-profile.sh BIN_DIR [LABEL]   (BIN_DIR holds test_device_planner)
# Logs and CSVs go to /tmp/sp-planner-LABEL; one file comes back: $OUT/planner-LABEL.txt (the
# timing lines and every kernel launch with its duration).
set -uo pipefail
BIN=${1:?BIN_DIR}
LABEL=${2:-run}
OUT=${OUT:-/tmp/sp-gpu-out}
W=/tmp/sp-planner-$LABEL
mkdir -p "$OUT" "$W"
HERE=$(cd "$(dirname "$0")" && pwd)
KEEP=$OUT/planner-$LABEL.txt

SP_PLANNER_TIMING=1 timeout 120 "$BIN/test_device_planner" --gtest_filter='*Timing*' \
  >"$W/timing.log" 2>&1
echo "timing ($LABEL): rc=$?"
grep PLANNER_TIMING "$W/timing.log" >"$KEEP"
# Median plan and publish ms over the prompts after the first, per case and layer 0/1+.
python3 - "$W/timing.log" <<'PY'
import re, sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"PLANNER_TIMING n=(\d+) shape=(\S+) mode=(\S+) prompt=(\d+) layer=(\d+) "
                 r"plan_ms=([\d.]+) publish_ms=([\d.]+).*kinds\S*=(\S+)", line)
    if not m or m[4] == "0":
        continue
    key = (int(m[1]), m[2], m[3], "layer0" if m[5] == "0" else "later")
    rows.setdefault(key, []).append((float(m[6]), float(m[7]), m[8]))
print(f"{'n':>7} {'shape':>9} {'mode':>13} {'layers':>7} {'plan_ms':>8} {'publish_ms':>10}  kinds d/p/s/qa/vs")
for k, v in sorted(rows.items()):
    print(f"{k[0]:>7} {k[1]:>9} {k[2]:>13} {k[3]:>7} {st.median(x[0] for x in v):>8.3f} "
          f"{st.median(x[1] for x in v):>10.3f}  {v[-1][2]}")
PY

NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "no ncu on this machine: kernel table skipped"; exit 0; }
for shape in 32 9; do
  csv=$W/ncu-$shape.csv
  SP_PLANNER_TIMING=profile$shape timeout 150 "$NCU" --clock-control none --cache-control none \
    --metrics gpu__time_duration.sum --csv --print-units base --print-kernel-base function \
    "$BIN/test_device_planner" --gtest_filter='*Timing*' >"$csv" 2>"$W/ncu-$shape.err"
  echo "ncu ($LABEL, shape $shape): rc=$? $(grep -c gpu__time_duration "$csv") kernels"
  tail -3 "$W/ncu-$shape.err"
  python3 "$HERE/planner_kernel_table.py" "$csv" "$shape" "$KEEP"
done
