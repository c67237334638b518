#!/usr/bin/env bash
# Builds the browser site into www/dist/ with Trunk (web/Trunk.toml, web/index.html): the
# wasm module and its JS glue in pkg/, the explorer's page, the embeddable explorer
# (lavender-explorer.js / .css / .d.ts), embed.html and docs.html, the example bundle and its
# images (scripts/web-assets.sh), the wasm shrunk by wasm-opt and .br / .gz copies beside the
# files (scripts/trunk-post-build.sh). Trunk stages the site and moves it into place at the
# end, so an interrupted build never leaves a half-written www/dist/. Every URL in it is
# relative: any static host serves it, from any sub-path.
#
# The wasm compiles in its own target folder ($CARGO_TARGET_DIR/wasm): it then holds no lock
# the native build needs, so scripts/test.sh runs the Rust tests beside it. The example
# bundle is made first (scripts/web-assets.sh, with the native CLI), or taken from
# $LAVENDER_WEB_ASSETS when the caller made it.
#
# For development, `cd web && trunk serve` serves the same site and rebuilds it on changes.
set -euo pipefail
cd "$(dirname "$0")/.."
native_target=$(realpath -m "${CARGO_TARGET_DIR:-target}")

wanted=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$wanted" ]; then
    echo "build-web: wasm-bindgen CLI ${have:-missing}, Cargo.lock wants $wanted; run scripts/setup.sh" >&2
    exit 1
fi
if ! grep -qx "wasm_bindgen = \"$wanted\"" web/Trunk.toml; then
    echo "build-web: web/Trunk.toml's [tools] wasm_bindgen must be $wanted (Cargo.lock's)" >&2
    exit 1
fi
if [ "$(trunk --version 2>/dev/null | awk '{ print $2 }')" != "0.21.14" ]; then
    echo "build-web: Trunk 0.21.14 is missing; run scripts/setup.sh" >&2
    exit 1
fi

if [ -z "${LAVENDER_WEB_ASSETS:-}" ]; then
    bash scripts/web-assets.sh
    export LAVENDER_WEB_ASSETS="$native_target/web-assets"
fi
(cd web && CARGO_TARGET_DIR="$native_target/wasm" trunk build --release --skip-version-check)
echo "build-web: $(du -sh --exclude='*.br' --exclude='*.gz' www/dist | cut -f1) in www/dist ($(du -h www/dist/pkg/lavender-web_bg.wasm | cut -f1) wasm, $(du -h www/dist/pkg/lavender-web_bg.wasm.br | cut -f1) brotli)"
