#!/usr/bin/env bash
# Builds the JavaScript example into a component: build.sh [OUTPUT.wasm]
# Needs Node.js and the toolchain in package.json (npm ci).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/javascript_policy.wasm}"
cd "$here"
# componentize-qjs embeds QuickJS, snapshotted after app.js is loaded.
# --sync: plain (not component-model async) exports, which is what the
# server calls. docs/writing-plugins.md says why QuickJS and not
# componentize-js (SpiderMonkey).
node_modules/.bin/componentize-qjs --wit wit --world policy --js app.js --sync -o "$out"
