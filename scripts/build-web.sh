#!/usr/bin/env bash
# Builds the browser bundle into www/dist/, servable by any static host.
#
# A plain cargo + wasm-bindgen build rather than Trunk: see README.md ("Why no Trunk").
# Writes to a temporary folder and renames it, so an interrupted build never leaves a
# half-written www/dist/.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
wanted=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$wanted" ]; then
    echo "build-web: wasm-bindgen CLI ${have:-missing}, Cargo.lock wants $wanted; run scripts/setup.sh" >&2
    exit 1
fi

cargo build -p lavender-web --lib --target wasm32-unknown-unknown --release

out=www/dist
staging="$out.partial"
rm -rf "$staging"
mkdir -p "$staging/pkg"
# The name and producers sections only serve debuggers; without them the module is ~3x smaller.
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
    --out-dir "$staging/pkg" \
    "$target_dir/wasm32-unknown-unknown/release/lavender_web.wasm"
cp www/*.html www/*.css www/*.js "$staging/"
# The example the explorer opens by default: the tiny test student (random weights) with its
# test adapter merged, exported by the native CLI exactly as a user would export a real model,
# and bundled images to ask about. The debug binary is the one `cargo test` builds anyway.
# The bundle ships the six demo images with the tiny Stable Diffusion teacher's word maps
# (extracted at 32 px, as `lavender demo` does: seconds), so the explorer can show the
# teacher's map of a word beside the student's; the maps folder is not part of the site.
cargo build -p lavender
teacher_maps="$staging/teacher-maps.tmp"
"$target_dir/debug/lavender" extract --sd tests/fixtures/sd-tiny \
    --data jsonl:native/demo/captions.jsonl --out "$teacher_maps" \
    --image-size 32 --device cpu >/dev/null
"$target_dir/debug/lavender" export-web --vlm tests/fixtures/mllama-tiny \
    --adapter tests/fixtures/mllama-tiny/adapter --quant q8 --out "$staging/example" \
    --teacher-maps "$teacher_maps" --examples jsonl:native/demo/captions.jsonl \
    --example-limit 6 >/dev/null
rm -rf "$teacher_maps"
mkdir -p "$staging/images"
cp native/demo/dog-ball.png native/demo/house.png "$staging/images/"
cp tests/fixtures/mllama-tiny/image.png "$staging/images/fixture.png"
rm -rf "$out"
mv "$staging" "$out"
echo "build-web: $(du -sh "$out" | cut -f1) in $out ($(du -h "$out/pkg/lavender_web_bg.wasm" | cut -f1) wasm)"
