#!/usr/bin/env bash
# Development machine: writes .cache/sweep-texts/ (git-ignored, ~2.7 MB), the texts
# scripts/gpu_threshold_sweep.py reads on the GPU machine (`scripts/gpu-session.sh sweep`, carry
# ".cache"): the first 400 KB of each Austen novel (three calibration, three evaluation) and the
# held-out KJV part (bytes 400,001-800,000 of kjv.txt). Fetches the corpora when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
corpora=${SP_CACHE:-$HOME/.cache/shareprefill}/corpora
[ -f "$corpora/kjv.txt" ] && [ -f "$corpora/austen/emma.txt" ] || scripts/fetch_corpora.sh >/dev/null
out=.cache/sweep-texts
mkdir -p "$out"
for novel in sensesensibility mansfieldpark northangerabbey prideprejudice emma persuasion; do
  head -c 400000 "$corpora/austen/$novel.txt" >"$out/$novel.txt"
done
dd if="$corpora/kjv.txt" of="$out/kjv-heldout.txt" bs=400000 skip=1 count=1 status=none
du -sh "$out"
