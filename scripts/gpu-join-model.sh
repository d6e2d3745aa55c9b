#!/usr/bin/env bash
# GPU machine: joins the two halves of the default model that travelled in two back-to-back
# `run` calls (DESIGN.md section 8: the GGUF is larger than one call may carry) and checks the
# pinned sha256. Prints the joined file's path on stdout.
#   here:  scripts/gpu-split-model.sh               (writes .carry-model-a/ and .carry-model-b/)
#   call 1 (carry [".carry-model-a"]): scripts/gpu-join-model.sh --stage
#   call 2 (carry [".carry-model-b"]): model=$(scripts/gpu-join-model.sh) && ...
# A carried folder does not outlive the call that carried it (the next call's copy removes it),
# so --stage keeps each half that is present in $STAGE (outside the tree) on the warm machine.
set -euo pipefail
cd "$(dirname "$0")/.."
readonly SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
STAGE=/tmp/sp-model-parts
mkdir -p "$STAGE"
for part in .carry-model-a/part0 .carry-model-b/part1; do
  [[ -f "$part" ]] && cp "$part" "$STAGE/"
done
if [[ "${1:-}" == --stage ]]; then ls -l "$STAGE" >&2; exit 0; fi
target=${1:-/tmp/SmolLM2-135M-Instruct.Q4_1.gguf}
if [[ ! -f "$target" ]] || [[ "$(sha256sum "$target" | cut -d' ' -f1)" != "$SHA256" ]]; then
  for part in part0 part1; do
    [[ -f "$STAGE/$part" ]] || { echo "gpu-join-model.sh: $part is missing (carry .carry-model-a with --stage, then .carry-model-b)" >&2; exit 1; }
  done
  cat "$STAGE/part0" "$STAGE/part1" >"$target"
fi
actual=$(sha256sum "$target" | cut -d' ' -f1)
[[ "$actual" == "$SHA256" ]] || { echo "gpu-join-model.sh: sha256 $actual, expected $SHA256" >&2; exit 1; }
echo "$target"
