#!/usr/bin/env bash
# Development machine: splits the cached default model into two halves in the git-ignored
# folders .carry-model-a/ and .carry-model-b/ (each under the 64 MiB a `run` call carries), for
# scripts/gpu-join-model.sh on the GPU machine. Fetches the model first if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(scripts/fetch_model.sh)
for folder in .carry-model-a .carry-model-b; do
  grep -qx "/$folder/" .git/info/exclude 2>/dev/null || echo "/$folder/" >>.git/info/exclude
  mkdir -p "$folder"
done
size=$(stat -c %s "$model")
half=$(( (size + 1) / 2 ))
head -c "$half" "$model" >.carry-model-a/part0
tail -c +"$((half + 1))" "$model" >.carry-model-b/part1
echo "split $model ($size bytes) into .carry-model-a/part0 and .carry-model-b/part1" >&2
