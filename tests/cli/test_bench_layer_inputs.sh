#!/usr/bin/env bash
# `bench layer --inputs FILE --clusters MAP` (issue 13): captured activations of the model's shape
# (30 layers, 9/3 heads; random values here, small N and dim) planned with the map as the model's
# runs plan them: the default map's dense heads (7, plus the 13 of its entry for this length) are
# dense in vslash and shareprefill; without --clusters vslash has none. Rows name the map;
# --clusters without --inputs is an error.
# Usage: tests/cli/test_bench_layer_inputs.sh path/to/shareprefill   (CTest, label quick)
set -u
bin=${1:?usage: test_bench_layer_inputs.sh SHAREPREFILL_BINARY}
root=$(cd "$(dirname "$0")/../.." && pwd)
map=$root/data/clusters/smollm2-135m-instruct-dense-gain.json
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

# 30 layers of q [4096, 9, 16], k and v [4096, 3, 16], f32: windows of one seeded random pool.
python3 - "$work/inputs.safetensors" <<'PY'
import array, json, random, struct, sys
random.seed(1)
n, heads, kv, dim = 4096, 9, 3, 16
pool = array.array("f", (random.gauss(0, 1) for _ in range(2 * n * heads * dim)))
names, blobs, offset = {}, [], 0
for l in range(30):
    for part, h in (("q", heads), ("k", kv), ("v", kv)):
        start = random.randrange(n * heads * dim)
        data = pool[start:start + n * h * dim].tobytes()
        names[f"layer{l}.{part}"] = {"dtype": "F32", "shape": [n, h, dim],
                                     "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
header = json.dumps(names).encode()
header += b" " * (-len(header) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + b"".join(blobs))
PY

# dense_heads FILE MODE: the total row's dense head count of MODE.
dense_heads() {
  python3 -c 'import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print([r for r in rows if r["mode"] == sys.argv[2] and r["layer"] == "total"][0]["kinds"]["dense"])' "$@"
}
run() {  # run NAME ARGS...
  local name=$1
  shift
  if ! timeout 600 "$bin" bench layer --device cpu --inputs "$work/inputs.safetensors" --layers 30 \
      --threads 2 --repeats 1 --json "$work/$name.jsonl" "$@" >"$work/$name.out" 2>&1; then
    echo "FAIL: bench layer $*"
    tail -3 "$work/$name.out" | sed 's/^/    /'
    failures=$((failures + 1))
  fi
}
run with_map --modes vslash,shareprefill --clusters "$map"
run without_map --modes vslash
for mode in vslash shareprefill; do
  got=$(dense_heads "$work/with_map.jsonl" $mode)
  [ "$got" = 20 ] || { echo "FAIL: $mode with the map: $got dense heads, want 20"; failures=$((failures + 1)); }
done
got=$(dense_heads "$work/without_map.jsonl" vslash)
[ "$got" = 0 ] || { echo "FAIL: vslash without a map: $got dense heads, want 0"; failures=$((failures + 1)); }
grep -qF "\"clusters\":\"$map\"" "$work/with_map.jsonl" ||
  { echo "FAIL: the rows do not name the map"; failures=$((failures + 1)); }
# --clusters without --inputs is refused by name (the synthetic generator brings its own groups).
if "$bin" bench layer --device cpu --n 1024 --clusters "$map" >"$work/err.out" 2>&1 ||
    ! grep -qF -- "--clusters is for --inputs" "$work/err.out"; then
  echo "FAIL: --clusters without --inputs"; failures=$((failures + 1))
fi

echo "bench layer inputs: $failures failures"
exit $((failures > 0))
