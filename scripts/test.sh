#!/usr/bin/env bash
# The test command of the README: builds, fetches the model and corpora the tests compare
# against (cached outside the repo), and runs the `quick` CTest label. Exit code = ctest's.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
for fetch in scripts/fetch_model.sh scripts/fetch_corpora.sh; do
  if [ -x "$fetch" ]; then "$fetch" >/dev/null; fi
done
ctest --test-dir build -L quick --output-on-failure --parallel "$(nproc)" "$@"
