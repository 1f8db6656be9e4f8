#!/usr/bin/env bash
# kvarn.torch and kvarn.hf on the GPU (issue 16, docs/pytorch.md): the
# tensor-level API against torch SDPA (test_kvarn_torch) and small
# random-weight Llama / Qwen3 / Mistral models generating with their KV cache
# in kvarn's managed pool against transformers' own cache (test_hf). Each
# runs with seed 1 and with a fresh seed (printed; KVARN_TEST_SEED replays).
# Skips (77) where PyTorch is missing; test_hf skips itself without
# transformers.
set -uo pipefail
if ! python3 -c 'import torch' 2>/dev/null; then
  echo "no PyTorch here: skipped"
  exit 77
fi
rc=0
cd "$KVARN_REPO/test/python" || exit 1
export PYTHONPATH=$KVARN_REPO/python
export KVARN_LIBRARY=$KVARN_DEVICE_ROOT/lib/libkvarn.so.0
for seed in 1 ""; do
  KVARN_TEST_SEED=$seed python3 -m unittest -v test_kvarn_torch || rc=1
done
# 256 greedy steps with seed 1; 64 with a fresh seed (time on the machine).
KVARN_TEST_SEED=1 python3 -m unittest -v test_hf || rc=1
KVARN_TEST_SEED= KVARN_HF_STEPS=64 python3 -m unittest -v test_hf || rc=1
exit $rc
