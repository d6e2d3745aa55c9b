#!/usr/bin/env bash
# The serving-shape benches of `shareprefill` on the CPU at small sizes (issue 16): a varlen
# batch and a chunked prefill must reproduce the separate / one-shot output bit for bit
# (rel_err 0), a split-and-merge within 1e-6 (fp32); `bench chunk-plan` and `bench layer --chunk`
# must report every mode with finite errors and densities in (0, 1]; bad options exit non-zero
# naming the problem.
# Usage: tests/cli/test_bench_serving.sh path/to/shareprefill   (CTest, label quick).
set -u
bin=${1:?usage: test_bench_serving.sh SHAREPREFILL_BINARY}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
shape=(--device cpu --heads 2 --kv-heads 1 --dim 32 --threads 2 --repeats 1)

# check_rows FILE PYTHON_CONDITION: every JSON row r of FILE satisfies the condition (and there
# is at least one row).
check_rows() {
  python3 - "$1" "$2" <<'PY' || { echo "FAIL: rows of $1 do not satisfy: $2"; cat "$1"; return 1; }
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert rows, "no rows"
for r in rows:
    assert eval(sys.argv[2]), r
PY
}

run_rows() {  # run_rows NAME CONDITION ARGS...
  local name=$1 cond=$2
  shift 2
  if ! timeout 300 "$bin" "$@" --json "$work/$name.jsonl" >"$work/$name.txt" 2>&1; then
    echo "FAIL: shareprefill $*"
    tail -5 "$work/$name.txt"
    failures=$((failures + 1))
    return
  fi
  check_rows "$work/$name.jsonl" "$cond" || failures=$((failures + 1))
}

run_rows varlen 'r["rel_err"] == 0 and r["mode"] == "varlen"' bench attention "${shape[@]}" \
  --seqlens 300,1,129,128 --densities 1,0.5
run_rows chunked 'r["rel_err"] == 0 and r["mode"] == "chunked"' bench attention "${shape[@]}" \
  --chunk 128 --n 400 --densities 1,0.5
run_rows split 'r["rel_err"] < 1e-6 and r["merge_ms"] >= 0' bench attention "${shape[@]}" \
  --split --n 400 --densities 1,0.5
run_rows chunk_plan 'all(math.isfinite(r[k]) for k in ("rel_err_one_shot", "rel_err_chunked")) and 0 < r["density_chunked"] <= 1' \
  bench chunk-plan --n 2304 --chunk 1152 --layers 2 --heads 4 --kv-heads 2 --dim 32 --threads 2
[ "$(wc -l <"$work/chunk_plan.jsonl")" = 3 ] || { echo "FAIL: chunk-plan rows"; failures=$((failures + 1)); }
# bench layer --chunk: whole layers planned and run chunk by chunk through prefill_layer; dense
# chunks equal the one-shot layer bit for bit, the sparse rows carry finite errors and densities.
run_rows layer_chunk 'r["bench"] == "layer_chunk" and (r["mode"] != "dense" or r["rel_err_chunked"] == 0) and all(math.isfinite(r[k]) for k in ("rel_err_one_shot", "rel_err_chunked", "time_ratio")) and 0 < r["density_chunked"] <= 1' \
  bench layer --device cpu --n 4096 --heads 4 --kv-heads 2 --dim 32 --layers 2 --chunk 1024 \
  --modes dense,vslash,shareprefill --threads 2 --repeats 1
[ "$(grep -c layer_chunk "$work/layer_chunk.jsonl")" = 3 ] || { echo "FAIL: layer --chunk rows"; failures=$((failures + 1)); }
# --chunk-state carried: one sharing state through the chunks; the rows say which.
run_rows layer_chunk_carried 'r["chunk_state"] == "carried" and all(math.isfinite(r[k]) for k in ("rel_err_one_shot", "rel_err_chunked")) and 0 < r["density_chunked"] <= 1' \
  bench layer --device cpu --n 4096 --heads 4 --kv-heads 2 --dim 32 --layers 2 --chunk 1024 \
  --modes shareprefill --chunk-state carried --threads 2 --repeats 1
check_rows "$work/layer_chunk.jsonl" 'r["chunk_state"] == "fresh"' || failures=$((failures + 1))

expect_error() {  # expect_error SUBSTRING ARGS...
  local want=$1
  shift
  timeout 120 "$bin" "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [[ $rc -eq 0 || $rc -ge 124 ]] || ! grep -qF -- "$want" "$work/err"; then
    echo "FAIL (rc $rc): shareprefill $* -- wanted: $want"
    tail -3 "$work/err"
    failures=$((failures + 1))
  fi
}
expect_error "a positive multiple of the block size 128" bench attention "${shape[@]}" --chunk 100
expect_error "--seqlens: length 0" bench attention "${shape[@]}" --seqlens 5,0
expect_error "are exclusive" bench attention "${shape[@]}" --split --chunk 128
expect_error "--chunk 1000 (a positive multiple" bench chunk-plan --chunk 1000
expect_error "--chunk 1000 (a multiple of the block size 128" bench layer --device cpu --n 4096 --chunk 1000
expect_error "--kernel: wgmma not in {auto,portable,hopper}" bench attention "${shape[@]}" --kernel wgmma
expect_error "--ctas: Value -1 not in range" bench attention "${shape[@]}" --ctas -1
expect_error "--chunk-state: kept not in {fresh,carried}" bench layer --device cpu --n 4096 --chunk 1024 --chunk-state kept

[ $failures -eq 0 ] && echo "bench serving: all cases passed" || echo "bench serving: $failures failed"
exit $((failures > 0))
