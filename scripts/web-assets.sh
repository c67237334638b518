#!/usr/bin/env bash
# The example the browser site ships (Trunk's pre_build hook; scripts/build-web.sh runs it too):
# the shapes study's student (native/models/: pre-trained here on captioning, then fine-tuned
# 100 LoRA steps with Lavender by `lavender study --quick`, seed 0), exported by the native CLI
# exactly as a user would export a run: the adapter merged, weights in 8 bits, the trained
# Aligner and four out-of-distribution scenes with the committed teacher's maps shipped as
# examples, so the explorer shows the student's map of a word beside the teacher's. Plus the
# pages' images and the one mask the browser test scores.
#
# Written to $CARGO_TARGET_DIR/web-assets/ (outside Trunk's watched folders), through a
# temporary folder and a rename; regenerated only when the models, this script or the
# `lavender` binary change. The debug binary is the one `cargo test` builds anyway.
#
# Under Trunk started by scripts/build-web.sh ($LAVENDER_WEB_ASSETS set), the assets are made
# already and nothing is done here.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${LAVENDER_WEB_ASSETS:-}" ]; then
    exit 0
fi

target_dir="${CARGO_TARGET_DIR:-target}"
out="$target_dir/web-assets"
cargo build --quiet -p lavender
lavender="$target_dir/debug/lavender"
inputs=$( { git ls-files -s native/models scripts/web-assets.sh; sha256sum "$lavender"; } | sha256sum | cut -d' ' -f1)
if [ -f "$out/inputs.sha256" ] && [ "$(cat "$out/inputs.sha256")" = "$inputs" ]; then
    exit 0
fi

staging="$out.partial"
rm -rf "$staging"
mkdir -p "$staging/images"
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
# ood-00003: "a red square, a yellow triangle and a blue circle from left to right" (object 2 is
# the blue circle); ood-00001: "a yellow square, a blue circle and a green triangle ...".
cp "$scenes/images/ood-00003.png" "$staging/images/shapes.png"
cp "$scenes/masks/ood-00003-2.png" "$staging/images/shapes-blue-circle-mask.png"
cp "$scenes/images/ood-00001.png" "$staging/images/shapes-2.png"
cp tests/fixtures/mllama-tiny/image.png "$staging/images/fixture.png"
rm -rf "$scenes" "$teacher_maps"
echo "$inputs" > "$staging/inputs.sha256"
rm -rf "$out"
mv "$staging" "$out"
