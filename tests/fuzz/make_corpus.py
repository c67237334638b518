"""Writes the committed seed corpus of the fuzz suite (tests/fuzz.rs) into tests/fuzz/corpus/.

Each target's folder holds valid inputs (from the tiny fixtures) and the hostile inputs of the
campaign that issue "hostile inputs" reported (huge or zero sizes, names outside a bundle,
lengths past the end, bombs, templates that loop or grow). The fuzz test replays every file,
then mutates them. Deterministic; run from the repository root with the fixtures' venv:

    python tests/fuzz/make_corpus.py path/to/exported-bundle/manifest.json

where the manifest is `lavender export-web --vlm tests/fixtures/mllama-tiny --quant none`'s.
"""

import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save

ROOT = Path(__file__).resolve().parent / "corpus"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def write(target, name, data):
    folder = ROOT / target
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (folder / name).write_bytes(data)


def json_variants(target, base, edits):
    write(target, "valid.json", json.dumps(base, indent=1))
    for name, edit in edits.items():
        value = json.loads(json.dumps(base))
        edit(value)
        write(target, f"{name}.json", json.dumps(value, indent=1))


def safetensors_corpus():
    rng = np.random.default_rng(0)
    valid = save(
        {
            "a.weight": rng.standard_normal((2, 3)).astype(np.float32),
            "b.bias": rng.standard_normal(4).astype(np.float16),
            "c.ids": np.arange(3, dtype=np.int64),
            "d.mask": np.ones((1, 2, 2), dtype=np.uint8),
        },
        metadata={"format": "pt"},
    )
    write("safetensors", "valid.safetensors", valid)
    write("safetensors", "nan.safetensors", save({"w": np.array([1.0, np.nan, 2.0], np.float32)}))
    header_len = struct.unpack("<Q", valid[:8])[0]
    header = json.loads(valid[8 : 8 + header_len])

    def with_header(h, tail=b""):
        text = json.dumps(h).encode()
        return struct.pack("<Q", len(text)) + text + tail

    data = valid[8 + header_len :]
    write("safetensors", "header-length-huge.safetensors", struct.pack("<Q", 2**63) + valid[8:])
    write("safetensors", "header-not-json.safetensors", struct.pack("<Q", 4) + b"{{{{")
    write("safetensors", "empty.safetensors", b"")
    h = json.loads(json.dumps(header))
    h["a.weight"]["data_offsets"] = [0, 2**62]
    write("safetensors", "offsets-past-end.safetensors", with_header(h, data))
    h = json.loads(json.dumps(header))
    h["a.weight"]["shape"] = [2**32, 2**32]
    write("safetensors", "shape-overflow.safetensors", with_header(h, data))
    h = json.loads(json.dumps(header))
    h["a.weight"]["dtype"] = "F128"
    write("safetensors", "unknown-dtype.safetensors", with_header(h, data))
    h = json.loads(json.dumps(header))
    h["b.bias"]["data_offsets"] = h["a.weight"]["data_offsets"]
    write("safetensors", "overlapping.safetensors", with_header(h, data))


def config_corpus():
    mllama = json.loads((FIXTURES / "mllama-tiny" / "config.json").read_text())

    def text(key, value):
        return lambda c: c["text_config"].__setitem__(key, value)

    def vision(key, value):
        return lambda c: c["vision_config"].__setitem__(key, value)

    json_variants(
        "mllama_config",
        mllama,
        {
            "hidden-size-huge": text("hidden_size", 10**12),
            "hidden-size-zero": text("hidden_size", 0),
            "heads-zero": text("num_attention_heads", 0),
            "heads-not-dividing": text("num_attention_heads", 7),
            "vocab-negative": text("vocab_size", -1),
            "positions-huge": text("max_position_embeddings", 2**40),
            "layers-huge": text("num_hidden_layers", 10**9),
            "cross-layer-out-of-range": text("cross_attention_layers", [10**6]),
            "rope-theta-nan": text("rope_theta", "NaN"),
            "image-size-huge": vision("image_size", 10**6),
            "patch-size-zero": vision("patch_size", 0),
            "tiles-huge": vision("max_num_tiles", 10**6),
            "no-text-config": lambda c: c.pop("text_config"),
        },
    )
    processor = json.loads((FIXTURES / "mllama-tiny" / "preprocessor_config.json").read_text())
    json_variants(
        "processor_config",
        processor,
        {
            "size-huge": lambda c: c.__setitem__("size", {"height": 10**6, "width": 10**6}),
            "size-zero": lambda c: c.__setitem__("size", {"height": 0, "width": 0}),
            "tiles-zero": lambda c: c.__setitem__("max_image_tiles", 0),
            "tiles-huge": lambda c: c.__setitem__("max_image_tiles", 10**9),
            "std-zero": lambda c: c.__setitem__("image_std", [0, 0, 0]),
            "mean-short": lambda c: c.__setitem__("image_mean", [0.5]),
        },
    )
    unet = json.loads((FIXTURES / "sd-tiny" / "unet" / "config.json").read_text())
    json_variants(
        "unet_config",
        unet,
        {
            "norm-groups-zero": lambda c: c.__setitem__("norm_num_groups", 0),
            "no-blocks": lambda c: c.__setitem__("block_out_channels", []),
            "channels-huge": lambda c: c.__setitem__("block_out_channels", [10**9] * len(c["block_out_channels"])),
            "head-dim-zero": lambda c: c.__setitem__("attention_head_dim", 0),
            "sample-size-huge": lambda c: c.__setitem__("sample_size", 10**9),
            "layers-huge": lambda c: c.__setitem__("layers_per_block", 10**6),
            "unknown-block": lambda c: c["down_block_types"].__setitem__(0, "NoSuchBlock2D"),
        },
    )


def manifest_corpus(manifest_path):
    base = json.loads(Path(manifest_path).read_text())

    def add_file(name, size=3):
        return lambda m: m["files"].__setitem__(name, {"size": size, "sha256": "0" * 64})

    def set_size(name, size):
        return lambda m: m["files"][name].__setitem__("size", size)

    json_variants(
        "manifest",
        base,
        {
            "parent-name": add_file("../secret.json"),
            "absolute-name": add_file("/etc/passwd"),
            "nested-name": add_file("a/b.json"),
            "dot-name": add_file("."),
            "size-huge": set_size("model.bpk", 2**62),
            "size-negative": set_size("config.json", -1),
            "sha-not-hex": lambda m: m["files"]["config.json"].__setitem__("sha256", "zz"),
            "version-future": lambda m: m.__setitem__("version", 99),
            "model-type-other": lambda m: m.__setitem__("model_type", "llava"),
            "no-files": lambda m: m.__setitem__("files", {}),
        },
    )
    write("manifest", "not-json.json", "{\"format\": ")
    write("manifest", "deep-nesting.json", "[" * 20000 + "]" * 20000)


def shard_corpus():
    rng = np.random.default_rng(1)
    samples = [
        {"id": "s0", "text": "a red circle", "image": "s0.png", "words": ["a", "red", "circle"], "token_ids": [49406, 320, 736, 7117, 49407], "side": 8},
        {"id": "s1", "text": "blue square", "image": "s1.png", "words": ["blue", "square"], "token_ids": [49406, 1746, 10148, 49407], "side": 8},
    ]
    tensors = {
        "s0": rng.integers(0, 256, (3, 8, 8), dtype=np.uint8),
        "s1": rng.integers(0, 256, (2, 8, 8), dtype=np.uint8),
    }

    def shard(samples, tensors):
        return save(tensors, metadata={"samples": json.dumps(samples), "recipe": "{\"recipe\":\"noise\"}"})

    write("shard", "valid.safetensors", shard(samples, tensors))
    write("shard", "words-mismatch.safetensors", shard([dict(samples[0], words=["a"]), samples[1]], tensors))
    write("shard", "missing-tensor.safetensors", shard(samples, {"s0": tensors["s0"]}))
    write("shard", "not-square.safetensors", shard(samples, {"s0": np.zeros((3, 8, 4), np.uint8), "s1": tensors["s1"]}))
    write("shard", "float-maps.safetensors", shard(samples, {"s0": tensors["s0"].astype(np.float32), "s1": tensors["s1"]}))
    write("shard", "samples-not-json.safetensors", save(tensors, metadata={"samples": "[{", "recipe": "{}"}))
    write("shard", "no-metadata.safetensors", save(tensors))
    valid = shard(samples, tensors)
    write("shard", "truncated.safetensors", valid[: len(valid) // 2])


def png_bomb(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def image_corpus():
    picture = Image.open(FIXTURES / "mllama-tiny" / "image.png").convert("RGB")
    for fmt, name in [("PNG", "valid.png"), ("JPEG", "valid.jpg"), ("GIF", "valid.gif"), ("BMP", "valid.bmp"), ("WEBP", "valid.webp"), ("TIFF", "valid.tiff")]:
        out = io.BytesIO()
        picture.save(out, fmt)
        write("image", name, out.getvalue())
    out = io.BytesIO()
    picture.save(out, "JPEG")
    jpeg = out.getvalue()
    write("image", "truncated.jpg", jpeg[: len(jpeg) * 9 // 10])
    write("image", "bomb.png", png_bomb(20000, 20000))
    write("image", "zero-size.png", png_bomb(0, 0))
    write("image", "one-by-huge.png", png_bomb(1, 2**31 - 1))
    write("image", "empty.bin", b"")


def template_corpus():
    write("template", "valid.jinja", (FIXTURES / "mllama-tiny" / "chat_template.jinja").read_text())
    write("template", "nested-loops.jinja", "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}")
    write("template", "doubling.jinja", "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}")
    write("template", "repeat.jinja", "{% set a = 'x' * 90000000 %}{{ a ~ a }}")
    write("template", "squared-replace.jinja", "{% set s = 'a' * 20000 %}{{ s | replace('a', s) }}")
    write("template", "indent.jinja", "{{ messages | tojson(indent=1000000000) }}")
    write("template", "recursion.jinja", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
    write("template", "unclosed.jinja", "{% for message in messages %}")
    # Found by the fuzz suite: a namespace stored in itself (`ns,s` makes a tuple holding ns);
    # printing it recursed until the stack overflowed and the process aborted.
    write("template", "namespace-cycle.jinja", "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns,s ~ ns.s %}{% endfor %}{{ ns.s }}")
    write("template", "unterminated-string.jinja", "{% set ns = namespace() %}{{ 'unclosed")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    safetensors_corpus()
    config_corpus()
    manifest_corpus(sys.argv[1])
    shard_corpus()
    image_corpus()
    template_corpus()
