#!/usr/bin/env bash
# Builds the JavaScript example into a component: build.sh [OUTPUT.wasm]
# Needs Node.js and the toolchain in package.json (npm install).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/javascript_policy.wasm}"
cd "$here"
# Disable every WASI feature the code does not use: the server does not
# provide wasi:http (imported for `fetch` by default), and the plugin needs
# no stdio, clocks or random numbers.
node_modules/.bin/componentize-js app.js --wit wit --world-name policy \
    --disable stdio random clocks http fetch-event -o "$out"
