#!/usr/bin/env bash
# Triton compatibility, shown with a real client: one kvarn artifact group
# (the append kernel) is built into a fresh kernel cache by kvarn-jit, run
# by kvarn's own runtime (`kvarn-jit run append`), then loaded through
# Triton's own CompiledKernel from its __grp__ file and launched on PyTorch
# tensors by Triton's launcher. Both runs must write the same bytes.
# Skips (77) without PyTorch, Triton or a GPU. See docs/cache.md.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
case_dir=$KVARN_GOLDEN_DIR/flush_kvarn_k4v2_g128_d128_a
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export KVARN_CACHE_DIR=$work/cache

if ! python3 -c 'import torch, triton; assert torch.cuda.is_available()' 2>/dev/null; then
  echo "no PyTorch with a GPU, or no Triton: skipped"
  exit 77
fi
kvarn-jit --kernels append || exit 1
kvarn-jit cache ls || exit 1
kvarn-jit run append --case "$case_dir" --out "$work/kvarn-append.bin" || exit 1
python3 "$here/70-triton-compat.py" --cache "$KVARN_CACHE_DIR" --kernel append \
  --case "$case_dir" --expected "$work/kvarn-append.bin"
