#!/usr/bin/env bash
# Development machine: assembles the git-ignored folder .deps/ that travels with the tree to the
# GPU machine (the `run` tool's carry [".deps"]), which has CMake, nvcc, GoogleTest and
# nlohmann-json but neither CLI11 nor PCRE2:
#   .deps/include/CLI/          CLI11 headers (Debian libcli11-dev)
#   .deps/include/pcre2.h       PCRE2 8-bit header (Debian libpcre2-dev)
#   .deps/lib/libpcre2-8.a      PCRE2 8-bit static library (position-independent, so it links
#                               into the PIE programs there; built against an older glibc than
#                               the GPU machine's Ubuntu 24.04 glibc 2.39, which is what matters)
#   .deps/tracked-files.txt     `git ls-files` of this checkout: scripts/gpu-bench.sh builds only
#                               these files (the copy's git metadata can be stale)
# Takes the files from the installed Debian packages, or downloads the packages with
# `apt-get download` and unpacks them here (no root needed) when they are not installed.
# CMake finds .deps/ by itself (src/CMakeLists.txt, tools/CMakeLists.txt). Prints the size of
# what travels and fails when it exceeds the 64 MiB a `run` call carries.
# Run it again before every `run` call that needs a new file list.
set -euo pipefail
cd "$(dirname "$0")/.."
deps=.deps
mkdir -p "$deps/include" "$deps/lib"
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)

# Unpacks the Debian package $1 into a temporary folder and prints the folder.
unpack_package() {
  local dir
  dir=$(mktemp -d)
  (cd "$dir" && apt-get download "$1" >/dev/null && dpkg-deb -x ./*.deb root)
  echo "$dir/root"
}

cli11=/usr/include/CLI
if [ ! -f "$cli11/CLI.hpp" ]; then
  cli11=$(unpack_package libcli11-dev)/usr/include/CLI
fi
rm -rf "$deps/include/CLI"
cp -r "$cli11" "$deps/include/CLI"

pcre2_header=/usr/include/pcre2.h
pcre2_lib=/usr/lib/$multiarch/libpcre2-8.a
if [ ! -f "$pcre2_header" ] || [ ! -f "$pcre2_lib" ]; then
  root=$(unpack_package libpcre2-dev)
  pcre2_header=$root/usr/include/pcre2.h
  pcre2_lib=$root/usr/lib/$multiarch/libpcre2-8.a
fi
cp "$pcre2_header" "$deps/include/pcre2.h"
cp "$pcre2_lib" "$deps/lib/libpcre2-8.a"
# A static library with absolute 32-bit relocations would not link into a PIE program.
if readelf -r "$deps/lib/libpcre2-8.a" | grep -qE 'R_X86_64_(32|32S) '; then
  echo "gpu-prepare: $pcre2_lib is not position-independent; build PCRE2 with -fPIC" >&2
  exit 1
fi

git ls-files >"$deps/tracked-files.txt"

# What a `run` call copies: tracked and untracked-but-not-ignored files, plus the carried .deps.
tree_bytes=$(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null |
  awk '{s += $1} END {print s + 0}')
deps_bytes=$(du -sb "$deps" | cut -f1)
limit=$((64 * 1024 * 1024))
total=$((tree_bytes + deps_bytes))
echo "gpu-prepare: .deps $((deps_bytes / 1024)) KiB (CLI11 $(cat "$deps/include/CLI/Version.hpp" |
  sed -n 's/^#define CLI11_VERSION "\(.*\)"/\1/p'), PCRE2 $(sed -n \
  's/^#define PCRE2_MAJOR *\([0-9]*\)/\1/p' "$deps/include/pcre2.h").$(sed -n \
  's/^#define PCRE2_MINOR *\([0-9]*\)/\1/p' "$deps/include/pcre2.h")), tree $((tree_bytes / 1024)) KiB," \
  "$(wc -l <"$deps/tracked-files.txt") tracked files; $((total / 1024)) KiB of $((limit / 1024)) KiB"
if [ "$total" -gt "$limit" ]; then
  echo "gpu-prepare: the tree and .deps exceed the 64 MiB a run call carries" >&2
  exit 1
fi
