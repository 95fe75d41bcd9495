#!/usr/bin/env bash
# Builds the Python example into a component: build.sh [OUTPUT.wasm]
# Needs componentize-py (pip install -r requirements.txt).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/python_policy.wasm}"
cd "$here"
componentize-py --quiet -d wit -w example:python-policy/policy componentize app -o "$out"
