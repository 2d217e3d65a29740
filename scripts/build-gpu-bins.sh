#!/usr/bin/env bash
# Builds, here (no GPU needed), the release binaries that scripts/gpu-check.sh runs on a GPU
# machine without a Rust toolchain: the CUDA test binaries and the MNIST example, built with
# `--features cuda`, stripped and packed as DIR/bins.tar.xz (default DIR: target/gpu-bins).
#
#   scripts/build-gpu-bins.sh [DIR]
#   # on the GPU machine, from the repository root:
#   mkdir -p bins && tar -xJf DIR/bins.tar.xz -C bins && TANDEM_BIN_DIR=bins scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/gpu-bins}"
stage="$out/stage"
rm -rf "$stage" && mkdir -p "$stage"

# Test binaries: name them after their test target (cuda, cuda_parity, cuda_basics, ...).
build_tests() { # package, test targets...
  local pkg="$1"; shift
  local args=()
  for t in "$@"; do args+=(--test "$t"); done
  cargo test --release -p "$pkg" --features cuda "${args[@]}" --no-run --message-format=json \
    | python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])' \
    | while read -r name exe; do cp "$exe" "$stage/$pkg-$name"; done
}
build_tests tandem-tensor cuda_basics cuda_reduce_optim cuda_index cuda_conv_pool cuda_allocator
build_tests tandem-eager cuda cuda_parity
build_tests tandem-graph cuda

cargo build --release --features cuda --example mnist
cp target/release/examples/mnist "$stage/mnist"
if grep -q '^name = "gpu_bench"' Cargo.toml; then
  cargo build --release --features cuda --example gpu_bench
  cp target/release/examples/gpu_bench "$stage/gpu_bench"
fi
strip "$stage"/* || true
tar -cJf "$out/bins.tar.xz" -C "$stage" .
ls -l "$out/bins.tar.xz"
