#!/usr/bin/env bash
# The GPU check (issue 7): CUDA tests, one MNIST epoch per mode on the GPU, and (when built)
# the GPU benchmark next to PyTorch. Run from the repository root on a machine with an NVIDIA
# driver. With TANDEM_BIN_DIR set, the prebuilt binaries of scripts/build-gpu-bins.sh are used
# (no Rust toolchain needed); otherwise they are built with cargo.
#
# Environment: TANDEM_BIN_DIR (prebuilt binaries), MNIST_DIR (the MNIST IDX files; the MNIST
# part is skipped without it), CUDA_LIB_DIR (a folder holding libnvrtc/libcublas; searched
# for when unset), OUT (where logs go; default a temporary folder).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv 2>/dev/null || true

# NVRTC and cuBLAS are loaded at run time by their unversioned names: make links to whatever
# versioned libraries exist (a CUDA 13 wheel ships only lib*.so.13).
libs="$(mktemp -d)"
for lib in nvrtc cublas cublasLt; do
  f=""
  for d in ${CUDA_LIB_DIR:-} /usr/local/cuda/lib64 /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib; do
    [ -d "$d" ] || continue
    f=$(ls "$d"/lib$lib.so* 2>/dev/null | grep -v stub | sort | tail -1)
    [ -n "$f" ] && break
  done
  if [ -n "$f" ]; then
    ln -sf "$f" "$libs/lib$lib.so"
    echo "lib$lib.so -> $f"
  else
    echo "warning: lib$lib not found (set CUDA_LIB_DIR)"
  fi
done
export LD_LIBRARY_PATH="$libs:${LD_LIBRARY_PATH:-}"
export TANDEM_PARITY_DIR="${TANDEM_PARITY_DIR:-$PWD/tests/fixtures/parity}"

bins="${TANDEM_BIN_DIR:-}"
if [ -z "$bins" ]; then
  command -v cargo >/dev/null || { echo "no cargo and no TANDEM_BIN_DIR"; exit 1; }
  scripts/build-gpu-bins.sh "$out/build" >/dev/null
  bins="$out/bins" && mkdir -p "$bins" && tar -xJf "$out/build/bins.tar.xz" -C "$bins"
fi

# Every step gets its own limit, cut to what is left of the whole budget (GPU_CHECK_BUDGET
# seconds, default 420), so a hang in one step still leaves a report of the others.
budget="${GPU_CHECK_BUDGET:-420}"
limit() { # wanted seconds -> min(wanted, seconds left of the budget), at least 1
  local left=$((budget - SECONDS))
  [ "$left" -lt "$1" ] && echo $((left > 1 ? left : 1)) || echo "$1"
}

status=0
for t in "$bins"/tandem-*; do
  name=$(basename "$t")
  timeout "$(limit 120)" "$t" --test-threads=2 >"$out/$name.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && status=1
  echo "== $name rc=$rc: $(grep -E '^test result' "$out/$name.log" | tail -1)"
  grep -E "FAILED|panicked|skipped|cuda parity" "$out/$name.log" | head -20
done

if [ -n "${MNIST_DIR:-}" ] && [ -x "$bins/mnist" ]; then
  for mode in eager graph mixed; do
    timeout "$(limit 90)" "$bins/mnist" --device cuda --mode "$mode" --epochs 1 >"$out/mnist-$mode.log" 2>&1
    echo "== mnist $mode rc=$?: $(tail -1 "$out/mnist-$mode.log")"
  done
fi

if [ -x "$bins/gpu_bench" ]; then
  timeout "$(limit 150)" "$bins/gpu_bench" >"$out/tandem_bench.tsv" 2>"$out/tandem_bench.err"
  echo "== gpu_bench rc=$?"
  timeout "$(limit 120)" python3 benches/python/gpu_torch.py >"$out/torch_bench.tsv" 2>"$out/torch_bench.err"
  echo "== gpu_torch rc=$?"
  # One row per workload: Tandem eager, Tandem graph, PyTorch eager (median ms, extra).
  python3 - "$out/tandem_bench.tsv" "$out/torch_bench.tsv" <<'PY'
import sys
rows = {}
def read(path, default_col):
    try:
        lines = open(path).read().split("\n")
    except OSError:
        return
    for line in lines:
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        name, col = (parts[0].split("/") + [default_col])[:2]
        cell = parts[1] + (" (" + parts[2] + ")" if len(parts) > 2 and parts[2] else "")
        rows.setdefault(name, {})[col] = cell
read(sys.argv[1], "tandem")
read(sys.argv[2], "pytorch")
cols = ["tandem", "eager", "graph", "pytorch"]
print("| workload | " + " | ".join(cols) + " |")
print("|---" * (len(cols) + 1) + "|")
for name, r in rows.items():
    print("| " + name + " | " + " | ".join(r.get(c, "") for c in cols) + " |")
PY
fi
echo "logs in $out"
exit $status
