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
# The example the explorer opens by default: the shapes study's student (native/models/:
# pre-trained here on captioning, then fine-tuned 100 LoRA steps with Lavender by
# `lavender study --quick`, seed 0), exported by the native CLI exactly as a user would export
# a run: the adapter merged, weights in 8 bits, the trained Aligner and four out-of-distribution
# scenes with the committed teacher's maps shipped as examples, so the explorer shows the
# student's map of a word beside the teacher's. The scenes, masks and maps are generated here
# (seconds) and are not part of the site but for the pages' two images and one mask the browser
# test scores. The debug binary is the one `cargo test` builds anyway.
cargo build -p lavender
lavender="$target_dir/debug/lavender"
scenes="$staging/scenes.tmp"
teacher_maps="$staging/teacher-maps.tmp"
"$lavender" shapes --out "$scenes" --train 1 --val 1 --test 1 --ood 4 >/dev/null
"$lavender" extract --sd native/models/shapes-teacher \
    --data "jsonl:$scenes/captions-ood.jsonl" --out "$teacher_maps" --image-size 64 \
    --recipe noise --timesteps 200,500 --attn-res 16 --map-size 16 --seed 0 --device cpu >/dev/null
"$lavender" export-web --vlm native/models/shapes-student \
    --adapter native/models/shapes-lavender/adapter \
    --aligner native/models/shapes-lavender/aligner.safetensors --quant q8 --map-size 16 \
    --out "$staging/example" --teacher-maps "$teacher_maps" \
    --examples "jsonl:$scenes/captions-ood.jsonl" --example-limit 4 >/dev/null
mkdir -p "$staging/images"
# ood-00003: "a red square, a yellow triangle and a blue circle from left to right" (object 2 is
# the blue circle); ood-00001: "a yellow square, a blue circle and a green triangle ...".
cp "$scenes/images/ood-00003.png" "$staging/images/shapes.png"
cp "$scenes/masks/ood-00003-2.png" "$staging/images/shapes-blue-circle-mask.png"
cp "$scenes/images/ood-00001.png" "$staging/images/shapes-2.png"
cp tests/fixtures/mllama-tiny/image.png "$staging/images/fixture.png"
rm -rf "$scenes" "$teacher_maps"
rm -rf "$out"
mv "$staging" "$out"
echo "build-web: $(du -sh "$out" | cut -f1) in $out ($(du -h "$out/pkg/lavender_web_bg.wasm" | cut -f1) wasm)"
