#!/usr/bin/env bash
# Fetches the text corpora into $SP_CACHE/corpora (SP_CACHE defaults to ~/.cache/shareprefill):
# Jane Austen's six novels from Debian's r-cran-janeaustenr (decoded from R's lazy-load data by
# scripts/extract_janeaustenr.py, no R needed) and the King James Bible from Debian's
# bible-kjv-text (decoded by scripts/extract_kjv.py). Packages are fetched with
# `apt-get download` and unpacked with `dpkg-deb -x`; nothing is installed. Every file is checked
# against the sha256 and character count recorded in data/corpora.json. Idempotent: files that
# already verify are left alone. Usage: scripts/fetch_corpora.sh [--force]
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
manifest="$repo_root/data/corpora.json"
cache="${SP_CACHE:-$HOME/.cache/shareprefill}"
out="$cache/corpora"
force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

die() { echo "fetch_corpora: error: $*" >&2; exit 1; }
for tool in apt-get dpkg-deb python3; do
  command -v "$tool" >/dev/null || die "'$tool' not found (needs a Debian-based system with python3)"
done
[[ -f "$manifest" ]] || die "manifest $manifest is missing"

# verify [FILE...]: checks files (paths relative to $out) against the manifest; all when none given.
verify() {
  python3 - "$manifest" "$out" "$@" <<'PY'
import hashlib, json, os, sys
manifest, root, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
files = json.load(open(manifest))["files"]
bad = 0
for rel in wanted or sorted(files):
    info, path = files[rel], os.path.join(root, rel)
    if not os.path.exists(path):
        print("  missing  %s" % rel); bad += 1; continue
    data = open(path, "rb").read()
    digest, chars = hashlib.sha256(data).hexdigest(), len(data.decode("utf-8"))
    if digest != info["sha256"] or chars != info["chars"]:
        print("  MISMATCH %s: sha256 %s chars %d, expected %s chars %d"
              % (rel, digest, chars, info["sha256"], info["chars"])); bad += 1
    else:
        print("  ok       %s (%d chars)" % (rel, chars))
sys.exit(1 if bad else 0)
PY
}

austen_files=(austen/sensesensibility.txt austen/prideprejudice.txt austen/mansfieldpark.txt
              austen/emma.txt austen/northangerabbey.txt austen/persuasion.txt)

need_austen=$force need_kjv=$force
if (( ! force )); then
  echo "fetch_corpora: checking $out"
  verify "${austen_files[@]}" >/dev/null || need_austen=1
  verify kjv.txt >/dev/null || need_kjv=1
fi
if (( ! need_austen && ! need_kjv )); then
  verify
  echo "fetch_corpora: all corpora present and verified in $out"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# download PACKAGE: apt-get download into $work, refreshing the package lists once if needed.
download() {
  local pkg=$1
  if ! apt-cache show "$pkg" >/dev/null 2>&1; then
    echo "fetch_corpora: '$pkg' unknown to apt; running apt-get update"
    local sudo=""
    (( EUID == 0 )) || sudo="sudo"
    $sudo apt-get update -qq || die "apt-get update failed (need root or sudo to refresh package lists)"
  fi
  echo "fetch_corpora: apt-get download $pkg"
  (cd "$work" && apt-get download -q "$pkg" >/dev/null 2>"$work/apt.err") \
    || die "apt-get download $pkg failed: $(cat "$work/apt.err")"
  local deb
  deb=$(ls "$work"/"${pkg}"_*.deb 2>/dev/null | head -n1)
  [[ -n "$deb" ]] || die "apt-get download $pkg produced no .deb"
  mkdir -p "$work/$pkg"
  dpkg-deb -x "$deb" "$work/$pkg" || die "dpkg-deb -x $deb failed"
}

mkdir -p "$out"
if (( need_austen )); then
  download r-cran-janeaustenr
  pkg_root="$work/r-cran-janeaustenr/usr/lib/R/site-library/janeaustenr"
  [[ -f "$pkg_root/data/Rdata.rdx" ]] || die "r-cran-janeaustenr has no data/Rdata.rdx at $pkg_root"
  echo "fetch_corpora: extracting the six novels"
  python3 "$repo_root/scripts/extract_janeaustenr.py" "$pkg_root" "$out/austen"
fi
if (( need_kjv )); then
  download bible-kjv-text
  data="$work/bible-kjv-text/usr/lib/bible.data"
  [[ -f "$data" ]] || die "bible-kjv-text has no usr/lib/bible.data"
  echo "fetch_corpora: decoding the King James Bible"
  python3 "$repo_root/scripts/extract_kjv.py" "$data" "$out/kjv.txt"
fi

echo "fetch_corpora: verifying against $manifest"
verify || die "extracted corpora do not match data/corpora.json (package version changed?)"
echo "fetch_corpora: done; corpora in $out"
