#!/usr/bin/env bash
# The whole test suite: builds the web bundle, runs every Rust test, then the browser
# end-to-end tests in headless Chromium (WebGPU on SwiftShader, and the CPU backend).
# Screenshots land in tests/browser/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build-web.sh
cargo test
# The web crate is not a default member (its natural target is wasm); its unit tests run natively.
cargo test -p lavender-web --lib
(cd tests/browser && node --test --test-reporter=spec)
