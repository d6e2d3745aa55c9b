#!/usr/bin/env bash
# GPU machine: is the device planner of this tree bitwise equal to an older one? Builds
# test_device_planner from BASE_TAR (a `git archive` of the older commit) with this tree's test
# file, runs the Timing case (SP_PLANNER_TIMING=1) of both builds and prints, per case and layer,
# the plan hash (kinds, CSR, schedule) and profile hash (v_blk, s_blk, budgets) of each and
# whether they agree, plus the plan time of each.
# Usage: scripts/gpu-planner-compare.sh BASE_TAR NEW_BIN_DIR   (needs .deps, as gpu-bench.sh)
set -uo pipefail
BASE_TAR=${1:?BASE_TAR} NEW_BIN=${2:?NEW_BIN_DIR}
ROOT=$(pwd) B=/tmp/sp-base
mkdir -p "$B" && tar -xf "$BASE_TAR" -C "$B" && cp -rp "$ROOT/.deps" "$B/" &&
  cp "$ROOT/tests/cuda/test_device_planner.cpp" "$B/tests/cuda/" || { echo "base tree failed"; exit 1; }
cmake -S "$B" -B "$B/build-gpu" -G Ninja -DSP_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DSP_BLAS=OFF \
  -DSP_PYTHON=OFF -DCMAKE_PREFIX_PATH="$B/.deps" >/tmp/sp-base-configure.log 2>&1 &&
  cmake --build "$B/build-gpu" -j16 --target test_device_planner >/tmp/sp-base-build.log 2>&1 ||
  { tail -20 /tmp/sp-base-build.log; exit 1; }
for side in base new; do
  bin=$NEW_BIN; [ $side = base ] && bin=$B/build-gpu/bin
  SP_PLANNER_TIMING=1 timeout 120 "$bin/test_device_planner" --gtest_filter='*Timing*' \
    >/tmp/sp-compare-$side.log 2>&1
  echo "$side timing: rc=$?"
done
python3 - /tmp/sp-compare-base.log /tmp/sp-compare-new.log <<'PY'
import re, sys
def read(path):
    out = {}
    for line in open(path):
        m = re.match(r"PLANNER_TIMING n=(\d+) shape=(\S+) mode=(\S+) prompt=(\d+) layer=(\d+) "
                     r"plan_ms=([\d.]+) publish_ms=([\d.]+).* plan_hash=(\S+) profile_hash=(\S+)", line)
        if m:
            out[(int(m[1]), m[2], m[3], int(m[4]), int(m[5]))] = (float(m[6]), float(m[7]), m[8], m[9])
    return out
base, new = read(sys.argv[1]), read(sys.argv[2])
same_plan = same_prof = 0
print(f"{'n':>7} {'shape':>9} {'mode':>13} {'L':>2} {'base ms':>8} {'new ms':>8} {'plan':>5} {'prof':>5}")
for k in sorted(base):
    if k not in new:
        print("missing in new:", k); continue
    b, n = base[k], new[k]
    same_plan += b[2] == n[2]; same_prof += b[3] == n[3]
    if k[3] == 1:  # prompt 1 only in the table
        print(f"{k[0]:>7} {k[1]:>9} {k[2]:>13} {k[4]:>2} {b[0]:>8.3f} {n[0]:>8.3f} "
              f"{'=' if b[2] == n[2] else 'DIFF':>5} {'=' if b[3] == n[3] else 'DIFF':>5}")
print(f"bitwise equal over {len(base)} planned layers: plans {same_plan}, profiles {same_prof}")
PY
