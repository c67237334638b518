#!/usr/bin/env bash
# Installs what building and testing lavender-rs needs on a Debian 12 machine (as root or
# with sudo): Debian packages, the wasm target, the wasm-bindgen CLI at Cargo.lock's
# version, the offline LLVM arrangement for the CUDA backend, and the browser-test driver.
# Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# llvm-22-dev + libzstd-dev: LLVM for the CUDA backend's kernel compiler (scripts/setup-llvm-offline.sh).
# mesa-vulkan-drivers + libvulkan1: lavapipe, a software Vulkan adapter for wgpu without a GPU.
# chromium: the browser of the end-to-end tests.
# fonts-dejavu-core: the font `train` reads at run time for loss.png's text (without one the plot has no text).
apt_packages=(pkg-config llvm-22-dev libzstd-dev mesa-vulkan-drivers libvulkan1 chromium fonts-dejavu-core)
missing=()
for package in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi

# The CLI must equal the wasm-bindgen crate in Cargo.lock exactly. No --locked: the CLI's
# own lockfile names a webpki-roots release missing from the registry index.
wasm_bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }')" != "$wasm_bindgen_version" ]; then
    echo "setup: installing wasm-bindgen-cli $wasm_bindgen_version"
    cargo install --quiet wasm-bindgen-cli --version "$wasm_bindgen_version"
fi

bash scripts/setup-llvm-offline.sh

# Trunk, the web build (scripts/build-web.sh): 0.21.14, the last release that builds on this
# toolchain (0.22 needs rustc 1.96.1). Its release profile is fat LTO, one codegen unit; a
# tool needs none of that, so it is built without (minutes less on 2 cores).
if [ "$(trunk --version 2>/dev/null | awk '{ print $2 }')" != "0.21.14" ]; then
    echo "setup: installing trunk 0.21.14"
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        cargo install --quiet --locked trunk --version 0.21.14
fi

# npm's binaryen (wasm-opt) for the web build, and the browser-test driver.
(cd web && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
echo "setup: done"
