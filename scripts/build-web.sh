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
# test adapter, fine-tuned for a few Lavender steps on the six demo images against the tiny
# Stable Diffusion teacher's maps (extracted at 32 px, as `lavender demo` does: seconds), then
# exported by the native CLI exactly as a user would export a real run: the adapter merged, the
# trained Aligner and the demo images with their teacher maps shipped, so the explorer can show
# training's Aligner maps and the teacher's map of a word beside the student's. The maps and
# the run are not part of the site. The debug binary is the one `cargo test` builds anyway.
cargo build -p lavender
lavender="$target_dir/debug/lavender"
teacher_maps="$staging/teacher-maps.tmp"
run="$staging/run.tmp"
"$lavender" extract --sd tests/fixtures/sd-tiny \
    --data jsonl:native/demo/captions.jsonl --out "$teacher_maps" \
    --image-size 32 --device cpu >/dev/null
"$lavender" train --vlm tests/fixtures/mllama-tiny --adapter tests/fixtures/mllama-tiny/adapter \
    --data jsonl:native/demo/captions.jsonl --teacher-maps "$teacher_maps" --out "$run" \
    --lr 5e-3 --batch 1 --max-steps 6 --device cpu >"$staging/train.log" 2>&1 \
    || { cat "$staging/train.log" >&2; echo "build-web: the example's training run failed" >&2; exit 1; }
"$lavender" export-web --vlm tests/fixtures/mllama-tiny --adapter "$run/adapter" \
    --aligner "$run/aligner.safetensors" --quant q8 --out "$staging/example" \
    --teacher-maps "$teacher_maps" --examples jsonl:native/demo/captions.jsonl \
    --example-limit 6 >/dev/null
rm -rf "$teacher_maps" "$run" "$staging/train.log"
mkdir -p "$staging/images"
cp native/demo/dog-ball.png native/demo/house.png "$staging/images/"
cp tests/fixtures/mllama-tiny/image.png "$staging/images/fixture.png"
rm -rf "$out"
mv "$staging" "$out"
echo "build-web: $(du -sh "$out" | cut -f1) in $out ($(du -h "$out/pkg/lavender_web_bg.wasm" | cut -f1) wasm)"
