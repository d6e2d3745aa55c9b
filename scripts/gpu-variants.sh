#!/usr/bin/env bash
# GPU machine: time source variants of the kernel against the tree in alternating rounds, so
# they share the clock drift. Run after `scripts/gpu-bench.sh build` (it uses the build tree
# that step made). Each variant is NAME=DIR: DIR mirrors repository paths with the files that
# replace the tree's (e.g. exp/old/src/cuda/epilogue.cuh); the script rebuilds the CLI with
# the files swapped in, restores the tree, then runs `bench attention` for `tree` and every
# variant, ROUNDS times (default 3) per shape of SHAPES (default "32768,32,8,128
# 32768,9,3,64"), at densities 1, 0.1 and 0.05, with cuDNN SDPA once per round, and prints
# per-round ours/cuDNN, t(d)/(d*full) and the d = 0.05 time (the steadiest number), then medians.
# Usage: VARIANTS="old=exp/old" scripts/gpu-variants.sh
set -uo pipefail
OUT=${OUT:-/tmp/sp-gpu-out}
mkdir -p "$OUT"
ROOT=$(pwd)
SRC=/tmp/sp-src
[ -d "$SRC/build-gpu" ] || SRC=$ROOT
B=$SRC/build-gpu
[ -x "$B/bin/shareprefill" ] || { echo "no $B/bin/shareprefill: run scripts/gpu-bench.sh build first"; exit 1; }
BIN=/tmp/sp-variants
mkdir -p "$BIN"
cp "$B/bin/shareprefill" "$BIN/tree"
names=tree
for spec in ${VARIANTS:-}; do
  name=${spec%%=*}; dir=$ROOT/${spec#*=}
  [ -d "$dir" ] || { echo "variant $name: no directory $dir"; exit 1; }
  files=$(cd "$dir" && find . -type f | sed 's|^\./||')
  for f in $files; do cp -p "$SRC/$f" "$BIN/$name.orig.$(echo "$f" | tr / _)"; cp "$dir/$f" "$SRC/$f"; touch "$SRC/$f"; done
  cmake --build "$B" -j16 --target shareprefill_cli >"$OUT/variant-$name.log" 2>&1 ||
    { tail -20 "$OUT/variant-$name.log"; exit 1; }
  cp "$B/bin/shareprefill" "$BIN/$name"
  for f in $files; do cp -p "$BIN/$name.orig.$(echo "$f" | tr / _)" "$SRC/$f"; touch "$SRC/$f"; done
  names="$names $name"
done
cmake --build "$B" -j16 --target shareprefill_cli >"$OUT/variant-restore.log" 2>&1
J=$OUT/variants.jsonl
: >"$J"
SHAPES=${SHAPES:-32768,32,8,128 32768,9,3,64}
for round in $(seq "${ROUNDS:-3}"); do
  for shape in $SHAPES; do
    IFS=, read -r n h hkv d <<<"$shape"
    for v in $names; do
      timeout 120 "$BIN/$v" bench attention --device cuda --n $n --heads $h --kv-heads $hkv --dim $d \
        --densities 1,0.1,0.05 --repeats 5 --sample-rows 1 --json |
        sed "s/^{/{\"round\":$round,\"variant\":\"$v\",/" >>"$J"
    done
    PYTHONUNBUFFERED=1 timeout 120 python3 "$SRC/scripts/bench_sdpa.py" --shape "$shape" --repeats 5 |
      sed "s/^{/{\"round\":$round,/" >>"$J"
  done
done
python3 - "$J" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(f"{'variant':>10} {'H/Hkv/D':>9} {'n':>7} {'round':>5} {'full_ms':>8} {'cudnn':>8} {'ours/cudnn':>10} {'s(0.1)':>7} {'s(0.05)':>7} {'ms(0.05)':>8} {'rel_err':>8}")
agg = {}
for r in rows:
    if "variant" not in r or r["density"] != 1.0:
        continue
    key = (r["variant"], r["n"], r["heads"], r["kv_heads"], r["dim"])
    sel = [x for x in rows if x.get("variant") == r["variant"] and x["round"] == r["round"]
           and (x["n"], x["heads"], x["dim"]) == (r["n"], r["heads"], r["dim"])]
    cudnn = [x["ms"] for x in rows if x.get("impl") == "cudnn_sdpa" and x["round"] == r["round"]
             and (x["n"], x["heads"], x["dim"]) == (r["n"], r["heads"], r["dim"])]
    full = r["sparse_ms"]
    scaling = {x["density"]: x["sparse_ms"] / (x["measured_density"] * full) for x in sel}
    low = [x["sparse_ms"] for x in sel if x["density"] == 0.05][0]
    c = cudnn[0] if cudnn else float("nan")
    err = max(x["rel_err"] for x in sel)
    print(f"{r['variant']:>10} {r['heads']:>3}/{r['kv_heads']}/{r['dim']:<3} {r['n']:>7} {r['round']:>5} {full:>8.3f} {c:>8.3f} "
          f"{c / full:>10.3f} {scaling.get(0.1, 0):>7.3f} {scaling.get(0.05, 0):>7.3f} {low:>8.3f} {err:>8.1e}")
    agg.setdefault(key, []).append((c / full, scaling.get(0.1, 0), scaling.get(0.05, 0), low, full))
for (v, n, h, hkv, d), vals in sorted(agg.items()):
    m = [statistics.median(x[i] for x in vals) for i in range(5)]
    print(f"median {v:>10} {h}/{hkv}/{d} n={n}: ours/cudnn {m[0]:.3f}  s(0.1) {m[1]:.3f}  s(0.05) {m[2]:.3f}  "
          f"ms(0.05) {m[3]:.3f}  full {m[4]:.3f}")
PY
