#!/usr/bin/env bash
# MLA (issue 18, docs/kvarn.md "MLA records"): the MLA kernels' GPU tests
# (against the CPU reference and the public reference's golden records and
# decode) with a fresh seed and a second one, the C API's MLA calls, then
# bench/mla_decode.py: kvarn's MLA decode, PyTorch bf16 attention over the
# unquantized latent and, where build-peer/ holds the reference's
# triton_mla.py and peer layout (docs/device.md, "The reference's MLA
# code"), its own MLA decode kernels, in one process. The benchmark skips
# (77) without PyTorch; the tests do not.
set -uo pipefail
rc=0
for seed in "" ""; do
  KVARN_TEST_SEED=$seed "$KVARN_DEVICE_ROOT/tests/gpu/KvarnKernelGpuTests" \
    --gtest_brief=1 --gtest_filter='KernelGpu.Mla*:MlaGpu.*' || rc=1
done
if [ -x "$KVARN_DEVICE_ROOT/tests/gpu/KvarnGpuTests" ]; then
  "$KVARN_DEVICE_ROOT/tests/gpu/KvarnGpuTests" --gtest_brief=1 \
    --gtest_filter='Gpu.MlaKernelsThroughTheCApi' || rc=1
fi
peer=()
if [ -f "$KVARN_REPO/build-peer/triton_mla.py" ] && [ -d "$KVARN_REPO/build-peer/peer" ]; then
  peer=(--triton-mla "$KVARN_REPO/build-peer/triton_mla.py"
        --peer-src "$KVARN_REPO/build-peer/peer")
else
  echo "no build-peer/triton_mla.py: the reference's MLA decode is not timed"
fi
KVARN_LIBRARY=$KVARN_DEVICE_ROOT/lib/libkvarn.so.0 \
  python3 "$KVARN_REPO/bench/mla_decode.py" "${peer[@]}" --json "$OUT/mla.json"
bench=$?
[ $bench -ne 0 ] && [ $bench -ne 77 ] && rc=1
exit $rc
