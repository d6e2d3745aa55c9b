#!/usr/bin/env bash
# Issue 17 on the GPU: perplexity against density of shareprefill (medoid pivots), vslash and
# flexprefill with the per-head map, each mode over a sweep of its global gamma so the curves can
# be compared at equal density; the 8 evaluation windows at 8K, 4 windows at 32K (YaRN x4) and
# 6 windows of the held-out KJV text at 8K. The device planner plans (--device cuda); the map
# here is the format-2 per-head map (the format-3 settings map is one of the sweep's choices,
# scripts/gpu_threshold_sweep.py).
# Usage: scripts/gpu-accuracy.sh MODEL.gguf
#   BIN   programs built from this tree (default build-gpu/bin)
#   TEXTS prideprejudice.txt, emma.txt, persuasion.txt and kjv-heldout.txt (default
#         .cache/accuracy-texts; kjv-heldout.txt = `tail -c +400001 kjv.txt | head -c 400000`)
# JSON lines and the text output go to $OUT (default /tmp/sp-accuracy).
set -uo pipefail
MODEL=${1:?usage: scripts/gpu-accuracy.sh MODEL.gguf}
BIN=${BIN:-build-gpu/bin}
TEXTS=${TEXTS:-.cache/accuracy-texts}
OUT=${OUT:-/tmp/sp-accuracy}
MAP=data/clusters/smollm2-135m-instruct-dense-heads.json
mkdir -p "$OUT"
[ -x "$BIN/shareprefill" ] || { echo "no $BIN/shareprefill: build the tree first" >&2; exit 1; }
for f in prideprejudice emma persuasion kjv-heldout; do
  [ -f "$TEXTS/$f.txt" ] || { echo "missing $TEXTS/$f.txt" >&2; exit 1; }
done
NOVELS=$TEXTS/prideprejudice.txt,$TEXTS/emma.txt,$TEXTS/persuasion.txt

# ppl NAME LENGTH WINDOWS TEXTS MODE GAMMAS [OPTIONS...]
ppl() {
  local name=$1 len=$2 win=$3 texts=$4 mode=$5 gammas=$6
  shift 6
  echo "== $name: $mode gammas $gammas ($win x $len) $*"
  timeout 500 "$BIN/shareprefill" eval ppl --device cuda --model "$MODEL" --texts "$texts" \
    --lengths "$len" --windows "$win" --clusters "$MAP" --modes "$mode" --gammas "$gammas" \
    --json "$OUT/$name-$mode.jsonl" "$@" 2>&1 | grep -v "layer [0-9]*/"
}

YARN="--rope-scaling yarn --rope-factor 4"
G="0.92,0.93,0.94,0.95,0.96,0.97"
ppl novels8k 8192 8 "$NOVELS" dense 0.95
ppl novels8k 8192 8 "$NOVELS" shareprefill "$G" --pivot-medoid
ppl novels8k 8192 8 "$NOVELS" vslash "$G"
ppl novels8k 8192 8 "$NOVELS" flexprefill "$G"
ppl novels32k 32768 4 "$NOVELS" dense 0.95 $YARN
ppl novels32k 32768 4 "$NOVELS" shareprefill "$G" --pivot-medoid $YARN
ppl novels32k 32768 4 "$NOVELS" vslash "$G" $YARN
ppl novels32k 32768 4 "$NOVELS" flexprefill "$G" $YARN
ppl kjv8k 8192 6 "$TEXTS/kjv-heldout.txt" dense 0.95
ppl kjv8k 8192 6 "$TEXTS/kjv-heldout.txt" shareprefill "0.94,0.95,0.96" --pivot-medoid
ppl kjv8k 8192 6 "$TEXTS/kjv-heldout.txt" vslash "0.94,0.95,0.96,0.97"
ppl kjv8k 8192 6 "$TEXTS/kjv-heldout.txt" flexprefill "0.94,0.95,0.96,0.97"
echo "== done; JSON lines in $OUT"
