#!/usr/bin/env bash
# The managed pool on the GPU: a serving loop through the C API (prefill,
# decode, speculative steps, prefix sharing, preemption, flushes), every step
# checked against the CPU reference; then the bookkeeping's host overhead per
# step for 256 requests on this machine's CPU, and the Python package's tests
# against the packed libkvarn.so (test_kvarn; test_torch with PyTorch
# tensors). See docs/runtime.md.
set -uo pipefail
bin=$KVARN_DEVICE_ROOT/bin
rc=0
if [ ! -x "$bin/serving-loop" ]; then
  echo "no serving-loop in the package: skipped"
  exit 77
fi
# Seed 1, then three fresh seeds (each run prints its seed).
"$bin/serving-loop" --steps 40 --seed 1 || rc=1
# The seed whose flushed block once missed the bound (a rounding tie).
"$bin/serving-loop" --steps 40 --seed 3309951037 || rc=1
# A preset with e4m3 scales (docs/kvarn.md, "Scale formats").
"$bin/serving-loop" --steps 40 --preset kvarn_k4v2_g64_e4m3 || rc=1
# Random per-layer configurations (kinds, presets, windows), fresh seeds.
for run in 1 2; do
  "$bin/serving-loop" --steps 40 --mixed || rc=1
done
for run in 1 2 3; do
  "$bin/serving-loop" --steps 40 || rc=1
done
"$bin/kvarn-pool-overhead" --requests 256 --steps 2000 || rc=1
if [ -d "$KVARN_REPO/python/kvarn" ]; then
  (cd "$KVARN_REPO/test/python" &&
    PYTHONPATH=$KVARN_REPO/python KVARN_LIBRARY=$KVARN_DEVICE_ROOT/lib/libkvarn.so.0 \
      python3 -m unittest -v test_kvarn) || rc=1
  # PyTorch CUDA tensors through the package (its own process: test_kvarn
  # hides libcuda); skips with the reason where torch or CUDA is missing.
  (cd "$KVARN_REPO/test/python" &&
    PYTHONPATH=$KVARN_REPO/python KVARN_LIBRARY=$KVARN_DEVICE_ROOT/lib/libkvarn.so.0 \
      python3 -m unittest -v test_torch) || rc=1
fi
exit $rc
