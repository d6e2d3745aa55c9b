#!/usr/bin/env bash
# Installs what the Python extension and its tests need into the `python3` on PATH, from PyPI,
# only when missing: nanobind (the version pyproject.toml pins for `pip install .`), NumPy and
# pytest (pyproject.toml's `test` extra). Without them the CMake build skips the extension and
# the `python` CTest test; a failed install says so and does not stop the build.
set -euo pipefail
cd "$(dirname "$0")/.."
# name==version of nanobind and pytest, read from pyproject.toml so the pins live in one place.
pins=$(python3 - <<'PY'
import re
text = open("pyproject.toml", encoding="utf-8").read()
print(" ".join(re.findall(r'"((?:nanobind|pytest)==[0-9.]+)"', text)))
PY
)
missing=$(python3 - $pins <<'PY'
import importlib.metadata as md, sys
wanted = dict(p.split("==") for p in sys.argv[1:])
wanted["numpy"] = None
out = []
for name, version in wanted.items():
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have is None or (version is not None and have != version):
        out.append(f"{name}=={version}" if version else name)
print(" ".join(out))
PY
)
if [ -z "$missing" ]; then
  exit 0
fi
echo "install-python-deps: installing $missing" >&2
if ! python3 -m pip install --quiet --disable-pip-version-check $missing; then
  echo "install-python-deps: pip could not install $missing; the Python extension and its" \
       "tests will be skipped" >&2
fi
