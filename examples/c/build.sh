#!/usr/bin/env bash
# Builds the C example into a component: build.sh [OUTPUT.wasm]
#
# Needs: clang, lld and wasi-libc (Debian: apt-get install clang lld
# wasi-libc libclang-rt-dev-wasm32), `wit-bindgen` and `wasm-tools`
# (cargo install wit-bindgen-cli wasm-tools), and the WASI preview-1
# adapter (the reactor adapter from the `wasi-preview1-component-adapter-
# provider` crate, or a wasmtime release) in $WASI_ADAPTER.
#
# Debian's wasi-libc targets WASI preview 1 only, so the code is built as a
# p1 core module, and `wasm-tools component new --adapt` turns its WASI p1
# imports into WASI p2 ones and makes it a component.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/c_policy.wasm}"
adapter="${WASI_ADAPTER:?set WASI_ADAPTER to wasi_snapshot_preview1.reactor.wasm}"
# Debian's clang finds Debian's wasi-libc by itself; elsewhere, say where it is.
sysroot=(${WASI_SYSROOT:+--sysroot="$WASI_SYSROOT"})
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
cd "$here"

# 1. C bindings for the world: policy.h, policy.c and the component type
#    (the world's imports and exports, linked in as a custom section).
wit-bindgen c wit --world policy --out-dir "$build"

# 2. A p1 "reactor" module: no main; the exports are the hooks.
clang --target=wasm32-wasi "${sysroot[@]}" -O2 -mexec-model=reactor -Wl,--strip-debug \
    -I "$build" -o "$build/policy.core.wasm" \
    policy.c "$build/policy.c" "$build/policy_component_type.o"

# 3. The component.
wasm-tools component new "$build/policy.core.wasm" --adapt "wasi_snapshot_preview1=$adapter" -o "$out"
