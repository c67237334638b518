#!/usr/bin/env bash
# The whole test suite: builds the web bundle, runs every Rust test, then the browser
# end-to-end tests in headless Chromium (WebGPU on SwiftShader, and the CPU backend).
# Screenshots land in tests/browser/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build-web.sh
cargo test
(cd tests/browser && node --test --test-reporter=spec)
