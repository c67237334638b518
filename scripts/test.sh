#!/usr/bin/env bash
# The whole test suite: builds the web bundle, runs every Rust test, then the browser
# end-to-end tests in headless Chromium (WebGPU on SwiftShader, and the CPU backend).
# Screenshots land in tests/browser/artifacts/.
#
# The web build runs beside the Rust tests: its longest parts use one core (the wasm's fat
# LTO, wasm-opt, compression) and it compiles in its own target folder, so neither waits for
# the other's lock. Its log is printed when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
native_target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
started=$SECONDS
step() { echo "test: == $1 (at $((SECONDS - started)) s)"; }

# The example bundle, with the native CLI, before the two start (both would build it).
bash scripts/web-assets.sh
web_log=$(mktemp)
LAVENDER_WEB_ASSETS="$native_target/web-assets" setsid bash scripts/build-web.sh >"$web_log" 2>&1 &
web=$!
# A failing test stops the web build too.
trap 'kill -- -"$web" 2>/dev/null || true; rm -f "$web_log"' EXIT

cargo test
# The web crate is not a default member (its natural target is wasm); its unit tests run
# natively, built with Burn's kernels unoptimised (Cargo.toml, profile web-unit).
cargo test -p lavender-web --lib --profile web-unit
step "Rust tests done; waiting for the web build"

web_status=0
wait "$web" || web_status=$?
cat "$web_log"
step "web build done"
if [ "$web_status" -ne 0 ]; then
    echo "test: the web build failed (exit $web_status)" >&2
    exit 1
fi
(cd tests/browser && node --test --test-reporter=spec)
step "browser tests done"
