#!/usr/bin/env bash
# Lets Burn's CUDA backend build without network access.
#
# burn/cuda -> cubecl-cuda -> cubecl-llvm -> tracel-llvm-bundler, whose build script
# downloads an LLVM 23 bundle from GitHub into $XDG_DATA_HOME/tracel (default
# ~/.local/share/tracel) unless a sentinel file says it is already there. Debian's
# llvm-22-dev is enough for the NVPTX code generation cubecl needs, so we place the
# sentinel and an `llvm-config` that answers for Debian's LLVM 22, minus two libraries
# Debian builds in that we do not link (Polly) and system libraries the static link
# must not depend on (z3, xml2; zstd is linked statically, see .cargo/config.toml).
#
# The location is fixed (not inside the clone) so every clone shares one build cache.
# Idempotent; leaves a real tracel bundle alone.
set -euo pipefail

bundle="${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4"
real_llvm_config=/usr/lib/llvm-22/bin/llvm-config

if [ ! -x "$real_llvm_config" ]; then
    echo "setup-llvm-offline: $real_llvm_config missing; install llvm-22-dev" >&2
    exit 1
fi
if [ -e "$bundle/.tracel-llvm-installed" ] && [ ! -e "$bundle/.lavender-offline-shim" ]; then
    echo "setup-llvm-offline: a real tracel LLVM bundle is installed at $bundle; keeping it"
    exit 0
fi

mkdir -p "$bundle/bin"
cat > "$bundle/bin/llvm-config.tmp" <<SHIM
#!/bin/sh
# Written by lavender-rs scripts/setup-llvm-offline.sh: Debian's LLVM 22 standing in
# for tracel's LLVM 23 bundle.
out=\$("$real_llvm_config" "\$@") || exit \$?
for arg in "\$@"; do
    case "\$arg" in
        --libs) out=\$(printf '%s\n' "\$out" | sed -e 's/-lPollyISL//g' -e 's/-lPolly//g') ;;
        --system-libs) out=\$(printf '%s\n' "\$out" | sed -e 's#[^ ]*libz3[^ ]*##g' -e 's/-lxml2//g' -e 's/-lzstd//g') ;;
    esac
done
printf '%s\n' "\$out"
SHIM
chmod +x "$bundle/bin/llvm-config.tmp"
# Files are only replaced or created when they change: tracel-llvm-bundler's build script
# reruns when the sentinel's time changes, and with it everything that links LLVM.
if cmp -s "$bundle/bin/llvm-config.tmp" "$bundle/bin/llvm-config"; then
    rm "$bundle/bin/llvm-config.tmp"
else
    mv "$bundle/bin/llvm-config.tmp" "$bundle/bin/llvm-config"
fi
for sentinel in .lavender-offline-shim .tracel-llvm-installed; do
    [ -e "$bundle/$sentinel" ] || touch "$bundle/$sentinel"
done
echo "setup-llvm-offline: LLVM shim ready at $bundle"
