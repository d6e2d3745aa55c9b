#!/usr/bin/env bash
# `eval dense-gain` on the CPU at a small size (issue 17): every head of one layer made dense alone
# on top of shareprefill with the settings map, the best picked into a map under a density
# target after each shared cluster was weighed for unsharing; the written map (format 6) must hold
# the picked heads as dense heads of its settings entry for the length, only heads with a
# positive measured gain, the clusters the rule unshared no longer shared, the rest unchanged, and
# the record of why beside an earlier pick's record for another length. Bad option
# combinations are refused by name before any work. Needs the default model and corpora; the
# model cases are skipped when they are not cached.
# Usage: tests/cli/test_dense_gain.sh path/to/shareprefill   (CTest, label quick)
set -u
bin=${1:?usage: test_dense_gain.sh SHAREPREFILL_BINARY}
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${SP_CACHE:-$HOME/.cache/shareprefill}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# expect_error SUBSTRING ARGS...: non-zero exit (not a signal), SUBSTRING in stderr.
expect_error() {
  local want=$1
  shift
  timeout 120 "$bin" eval dense-gain "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [[ $rc -eq 0 || $rc -ge 124 ]] || ! grep -qF -- "$want" "$work/err"; then
    fail "(rc $rc) eval dense-gain $* -- wanted: $want"
    sed 's/^/    /' "$work/err" | tail -3
  fi
}
expect_error "--windows must be >= 2" --texts x --windows 1
expect_error "--pick-density and --map-out go together" --texts x --pick-density 0.5
expect_error "--modes must name exactly one sparse mode" --texts x --modes vslash,shareprefill
expect_error "--gammas: this command measures at one gamma" --texts x --gammas 0.9,0.95
expect_error "leave out --dense-layers" --texts x --pick-density 0.5 --map-out m.json --dense-layers 3
expect_error "--unshare-clusters weighs unsharing against the pick" --texts x --unshare-clusters
expect_error "--unshare-clusters needs --modes shareprefill" --texts x --modes vslash \
  --unshare-clusters --pick-density 0.5 --map-out m.json

model=$cache/SmolLM2-135M-Instruct.Q4_1.gguf
texts=$cache/corpora/austen
if [[ ! -f $model || ! -f $texts/mansfieldpark.txt ]]; then
  echo "skipped the model cases: $model or the corpora not cached"
  echo "$failures failures"
  [[ $failures -eq 0 ]]
  exit
fi
# The settings map with a 256-token minimum budget, so that 1024-token windows plan sparse, and
# three of its shared clusters (those of layers 8-10 and cluster 12), to keep the test short.
settings=$work/settings-256.json
python3 - "$root/data/clusters/smollm2-135m-instruct-head-settings.json" "$settings" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
for entry in m["thresholds"]:
    entry["min_budget"] = 256
m["shared_clusters"] = ["12", "21", "23"]
# An earlier pick's record for another length, in the shape of maps written before records were
# kept per place (one record under the key): the new pick must keep it.
m["calibration"]["dense_gain_selection"] = {
    "written_to": "thresholds entry from 24576 tokens (dense_heads)", "picked": [], "length": 32768}
json.dump(m, open(sys.argv[2], "w"))
PY
if ! timeout 600 "$bin" eval dense-gain --device cpu --threads 2 --texts \
    "$texts/sensesensibility.txt,$texts/mansfieldpark.txt" --length 1024 --windows 2 --layers 9 \
    --gamma 0.8 --clusters "$settings" --pick-density 0.9 --map-out "$work/map.json" --unshare-clusters \
    --json "$work/rows.jsonl" >"$work/out" 2>"$work/err"; then
  fail "eval dense-gain with a pick exited non-zero"
  tail -5 "$work/err" | sed 's/^/    /'
else
  grep -q "split-half agreement: Spearman" "$work/out" || fail "no split-half agreement line"
  grep -q "the written map on the same windows: ppl" "$work/out" || fail "no measured line for the picks"
  python3 - "$work/map.json" "$work/rows.jsonl" "$settings" <<'PY' || failures=$((failures + 1))
import json, sys
new, rows, old = json.load(open(sys.argv[1])), [json.loads(l) for l in open(sys.argv[2])], json.load(open(sys.argv[3]))
rec = new["calibration"]["dense_gain_selection"]["thresholds entry from 0 tokens (dense_heads)"]
base = [r for r in rows if r["eval"] == "dense_gain_base"][0]
assert base["thresholds"]["dense_heads"] == len(old["dense_heads"]), base["thresholds"]
# Unsharing: every shared cluster measured; the dropped ones are those below the pick's rate, and
# the map written without them; after a drop the heads are measured again (the later rows count).
uns = rec["unsharing"]
assert sorted(c["cluster"] for c in uns["clusters"]) == sorted(old["shared_clusters"])
rate = uns["rate_points_per_density"]
for c in uns["clusters"]:
    want = c["density_saved"] > 0 and c["loss_points"] < rate * c["density_saved"]
    assert c["unshared"] == want, c
    assert (c["cluster"] in new["shared_clusters"]) == (not c["unshared"]), c
head_rows = [r for r in rows if r["eval"] == "dense_gain"]
candidates = 9 - sum(h[0] == 9 for h in old["dense_heads"])
assert len(head_rows) == candidates * (2 if any(c["unshared"] for c in uns["clusters"]) else 1)
gains = {(r["layer"], r["head"]): r for r in head_rows[-candidates:]}
picked = [(p["layer"], p["head"]) for p in rec["picked"]]
assert picked, "nothing picked although the density target leaves room"
entry = new["thresholds"][0]  # the settings entry for 1024 tokens (from 0)
assert rec["written_to"] == "thresholds entry from 0 tokens (dense_heads)", rec["written_to"]
for h in picked:
    assert gains[h]["gain_points"] > 0, f"picked {h} without a positive gain"
    assert list(h) in entry["dense_heads"], f"picked {h} missing from the entry's dense_heads"
assert len(entry["dense_heads"]) == len(picked)
assert new["dense_heads"] == old["dense_heads"] and new["head_gammas"] == old["head_gammas"]
assert new["clusters"] == old["clusters"]
assert new["format"] == "shareprefill.clusters/6"
earlier = new["calibration"]["dense_gain_selection"]["thresholds entry from 24576 tokens (dense_heads)"]
assert earlier["length"] == 32768, "the earlier pick's record was not kept"
spent = sum(p["cost"] for p in rec["picked"])
assert spent <= rec["budget"] + 1e-9, "the pick overspent its budget"
best = max(gains, key=lambda h: gains[h]["gain_points"])
assert best in picked, f"the best head {best} was not picked"
print("map checks passed:", picked)
PY
fi

# A map without settings per length (the settings map's clusters, dense heads and gammas, format
# 3): the picks join its dense heads and lose their own gammas. vslash, 2K windows (the default
# 1024-token minimum budget leaves half the keys out), layer 18 (6 heads not dense already).
python3 - "$root/data/clusters/smollm2-135m-instruct-head-settings.json" "$work/v3.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
del m["thresholds"]
m["format"] = "shareprefill.clusters/3"
json.dump(m, open(sys.argv[2], "w"))
PY
if ! timeout 600 "$bin" eval dense-gain --device cpu --threads 2 --texts "$texts/mansfieldpark.txt" \
    --length 2048 --windows 2 --layers 18 --modes vslash --clusters "$work/v3.json" \
    --pick-density 0.95 --map-out "$work/map3.json" >"$work/out" 2>"$work/err"; then
  fail "eval dense-gain on a format-3 map exited non-zero"
  tail -5 "$work/err" | sed 's/^/    /'
else
  python3 - "$work/map3.json" "$work/v3.json" <<'PY' || failures=$((failures + 1))
import json, sys
new, old = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
rec = new["calibration"]["dense_gain_selection"]["dense_heads"]
assert rec["written_to"] == "dense_heads" and "thresholds" not in new, rec["written_to"]
picked = [[p["layer"], p["head"]] for p in rec["picked"]]
assert picked, "nothing picked"
assert sorted(new["dense_heads"]) == sorted(old["dense_heads"] + picked), new["dense_heads"]
assert new["head_gammas"] == [g for g in old["head_gammas"] if g[:2] not in picked]
print("format-3 map checks passed:", picked)
PY
fi
echo "$failures failures"
[[ $failures -eq 0 ]]
