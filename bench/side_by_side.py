#!/usr/bin/env python3
"""Runs one lavender benchmark and its PyTorch side on this machine, one after the other, and
prints both with the ratio (PyTorch's time / lavender's: above 1, lavender is faster).

    python3 bench/side_by_side.py train --lavender target/release/lavender -- \\
        --device cpu --precision f32 --config bench/configs/mllama-mid.json --batch 1,8
    python3 bench/side_by_side.py unet --lavender target/release/lavender -- \\
        --device cpu --precision f32 --config tests/fixtures/sd-tiny/unet/config.json --latent 16

Everything after `--` goes to both sides (`lavender bench-train` / `bench/torch_reference.py
mllama` for `train`; `lavender bench-unet` / `torch_reference.py sd` for `unet`), which take the
same flags. `--threads N` sets both sides' CPU threads (torch's intra-op threads; RAYON_NUM_THREADS
for Burn's CPU backend). `--decode-tokens 0` is passed to both for `train` unless given.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(command, env):
    print("$", " ".join(command), file=sys.stderr, flush=True)
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{command[0]} failed with exit {result.returncode}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", choices=["train", "unet"])
    parser.add_argument("--lavender", default="target/release/lavender", help="the lavender binary")
    parser.add_argument("--python", default=sys.executable, help="the Python with torch (bench/requirements.txt)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each side")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    shared = argv[split + 1 :]
    if args.bench == "train" and "--decode-tokens" not in shared:
        shared += ["--decode-tokens", "0"]
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    rust_command = [args.lavender, "bench-train" if args.bench == "train" else "bench-unet", *shared]
    torch_command = [args.python, str(HERE / "torch_reference.py"),
                     "mllama" if args.bench == "train" else "sd", "--threads", str(args.threads), *shared]
    rust = run(rust_command, env)
    torch = run(torch_command, env)

    def key(row):
        return (row.get("what"), row.get("align"), row.get("batch"))

    if args.bench == "train":
        torch_rows = {key(r): r for r in torch if r.get("what") == "lora_step" and "ms" in r}
        print(f"{'batch':>5} {'align':>5} {'lavender ms':>12} {'torch ms':>10} {'ratio':>6} {'lavender samples/s':>19} {'torch samples/s':>16}")
        for row in rust:
            if row.get("what") != "lora_step":
                continue
            other = torch_rows.get(key(row))
            if other is None:
                continue
            print(f"{row['batch']:>5} {str(row['align']):>5} {row['ms']:>12.1f} {other['ms']:>10.1f} "
                  f"{other['ms'] / row['ms']:>6.2f} {row['samples_per_s']:>19.2f} {other['samples_per_s']:>16.2f}")
    else:
        torch_rows = {r.get("batch"): r for r in torch if "evals_per_s" in r}
        print(f"{'batch':>5} {'lavender evals/s':>17} {'torch evals/s':>14} {'ratio':>6}")
        for row in rust:
            other = torch_rows.get(row.get("batch"))
            if "evals_per_s" in row and other is not None:
                print(f"{row['batch']:>5} {row['evals_per_s']:>17.2f} {other['evals_per_s']:>14.2f} "
                      f"{row['evals_per_s'] / other['evals_per_s']:>6.2f}")


if __name__ == "__main__":
    main()
