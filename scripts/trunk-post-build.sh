#!/usr/bin/env bash
# Trunk's post_build hook, on the staged site (before Trunk moves it to www/dist/): adds the
# example bundle and images (scripts/web-assets.sh), then, for release builds, shrinks the
# wasm with npm's binaryen wasm-opt and writes .br and .gz copies beside every text and wasm
# file for hosts that serve them.
set -euo pipefail
: "${TRUNK_STAGING_DIR:?run by Trunk (trunk build / trunk serve in web/)}"
cd "$(dirname "$0")/.."

assets="${LAVENDER_WEB_ASSETS:-${CARGO_TARGET_DIR:-target}/web-assets}"
cp -R "$assets/example" "$assets/images" "$TRUNK_STAGING_DIR/"

if [ "${TRUNK_PROFILE:-debug}" = "release" ]; then
    wasm="$TRUNK_STAGING_DIR/pkg/lavender-web_bg.wasm"
    # The name and producers sections only serve debuggers. Debian's wasm-opt (108) breaks
    # this module; npm's binaryen is pinned in web/package.json.
    web/node_modules/.bin/wasm-opt "${WASM_OPT_LEVEL:--Os}" --enable-bulk-memory --enable-nontrapping-float-to-int \
        --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
        --strip-debug --strip-producers "$wasm" -o "$wasm.opt"
    mv "$wasm.opt" "$wasm"
    node scripts/precompress.mjs "$TRUNK_STAGING_DIR"
fi
