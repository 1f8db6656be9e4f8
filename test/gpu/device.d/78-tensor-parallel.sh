#!/usr/bin/env bash
# examples/tensor_parallel.py (issue 19): attention heads split over two
# ranks, one process and kvarn context each, outputs all-gathered and
# checked against the same loop on one GPU. Two GPUs: one rank each over
# NCCL; one GPU: both ranks on it over gloo (--share-gpu). A fresh seed each
# run (printed). Skipped (77) without PyTorch.
set -uo pipefail
if ! python3 -c 'import torch, torch.distributed' 2>/dev/null; then
  echo "no PyTorch here: skipped"
  exit 77
fi
gpus=$(python3 -c 'import torch; print(torch.cuda.device_count())')
share=()
[ "${gpus:-0}" -lt 2 ] && share=(--share-gpu)
echo "GPUs: $gpus ${share[*]}"
PYTHONPATH=$KVARN_REPO/python \
  KVARN_LIBRARY=$KVARN_DEVICE_ROOT/lib/libkvarn.so.0 \
  python3 "$KVARN_REPO/examples/tensor_parallel.py" --tp 2 "${share[@]}"
