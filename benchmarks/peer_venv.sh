#!/usr/bin/env bash
# Builds the venv of the FinOps Foundation's focus-converter 1.0.0 (the benchmark's peer) under benchmarks/out/.
# It needs multimethod<1.11 and click==8.1.7 to start; it pins polars==0.20.10 and pyarrow<15, so it lives in
# its own venv. Python 3.11 works (its metadata says 3.9-3.12); override with FOCUS_CONVERTER_PYTHON.
# Prints the venv's python path on success.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/out/focus-converter-venv}"
python="${FOCUS_CONVERTER_PYTHON:-python3.11}"
stamp="$venv/.installed-focus-converter-1.0.0"
if [[ ! -f "$stamp" ]]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "focus-converter==1.0.0" "multimethod<1.11" "click==8.1.7" >&2
  "$venv/bin/python" -c "import focus_converter.converter" >&2  # it starts
  touch "$stamp"
fi
echo "$venv/bin/python"
