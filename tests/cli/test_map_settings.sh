#!/usr/bin/env bash
# The default cluster map's settings per prompt length reach the planner (issue 17, formats 5 to
# 7): `generate --mode shareprefill` with no planner option plans with the default map's entry
# for the prompt's length (medoid pivots, the entry's dense heads and its exact last row included)
# and says so; --no-exact-last-row and --last-row-gamma override the entry's last-row settings
# alone; any of --tau-sim, --tau-qa, --min-budget, --pivot-medoid, --pivot-dense makes the map's
# entries give way, the dense heads of those entries with them (the line says how many); --clusters
# picks another map (the settings map; the first one, with its dense layers 18 and 23). Needs the
# default model; skipped when it is not cached.
# Usage: tests/cli/test_map_settings.sh path/to/shareprefill   (CTest, label quick)
set -u
bin=${1:?usage: test_map_settings.sh SHAREPREFILL_BINARY}
root=$(cd "$(dirname "$0")/../.." && pwd)
model=${SP_CACHE:-$HOME/.cache/shareprefill}/SmolLM2-135M-Instruct.Q4_1.gguf
if [[ ! -f $model ]]; then
  echo "skipped: $model not cached"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.' >"$work/prompt.txt"
failures=0

# expect_line SUBSTRING ARGS...: generate exits 0 and its setup line (stdout) holds SUBSTRING.
expect_line() {
  local want=$1
  shift
  if ! timeout 300 "$bin" generate --device cpu --mode shareprefill --prompt-file "$work/prompt.txt" \
      --max-new 1 --threads 2 "$@" >"$work/out" 2>"$work/err" ||
      ! grep -h "^dense layers:" "$work/out" "$work/err" | grep -qF -- "$want"; then
    echo "FAIL: generate $* -- wanted in the dense layers line: $want"
    grep -hE "^dense layers:|error" "$work/out" "$work/err" | sed 's/^/    /' | tail -3
    failures=$((failures + 1))
  fi
}

default=$root/data/clusters/smollm2-135m-instruct-dense-gain.json
# An entry that applies is not also reported as ignored.
expect_line "exact last row, last_row_gamma 0.99" --no-exact-last-row
if grep -h "^dense layers:" "$work/out" "$work/err" | grep -qF "ignored"; then
  echo "FAIL: generate --no-exact-last-row -- an applied entry is reported as ignored"
  failures=$((failures + 1))
fi
expect_line "7 dense heads, 102 heads with own gamma (from $default); thresholds from $default for >= 0 tokens: tau_sim 0.5, tau_qa 0.2, min_budget 1024, medoid pivots, 13 more dense heads, exact last row, last_row_gamma 0.99"
# Format 7: the last-row options win over the entry's settings alone (the rest of the entry stays).
expect_line "13 more dense heads, exact last row, last_row_gamma 0.99; --no-exact-last-row given: over the entry's last-row settings" \
  --no-exact-last-row
expect_line "last_row_gamma 0.99; --exact-last-row and --last-row-gamma given: over the entry's last-row settings" \
  --exact-last-row --last-row-gamma 1
settings=$root/data/clusters/smollm2-135m-instruct-head-settings.json
expect_line "7 dense heads, 102 heads with own gamma (from $settings); thresholds from $settings for >= 0 tokens: tau_sim 0.5, tau_qa 0.2, min_budget 1024, medoid pivots" \
  --clusters "$settings"
for option in "--tau-sim 0.4" "--tau-qa 0.3" "--min-budget 512" "--pivot-medoid" "--pivot-dense"; do
  # shellcheck disable=SC2086
  expect_line "thresholds of $default ignored (--tau-sim, --tau-qa, --min-budget, --pivot-medoid or --pivot-dense given), with the 13 dense heads of its entry for this length" $option
done
expect_line "18,23 (from $root/data/clusters/smollm2-135m-instruct.json)" \
  --clusters "$root/data/clusters/smollm2-135m-instruct.json"

echo "11 cases, $failures failures"
[[ $failures -eq 0 ]]
