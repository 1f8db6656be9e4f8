#!/usr/bin/env bash
# compute-sanitizer memcheck over the GPU tests that touch device memory. Kernel
# tests add their binaries and filters here (issue 4 asks for memcheck and
# racecheck to be clean on every kernel). Skips (77) where the tool is absent.
set -uo pipefail
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ ! -x "$sanitizer" ]; then
  echo "no compute-sanitizer on this machine: skipped"
  exit 77
fi
# Only tests whose every driver call should succeed: memcheck counts a failed
# API call (the negative tests' cuModuleGetFunction of a missing kernel, say)
# as an error, as it did on the H100.
status=0
# A package may leave a test binary out (KVARN_DEVICE_SKIP): skip its part.
if [ -x "$KVARN_DEVICE_ROOT/tests/gpu/KvarnGpuTests" ]; then
  "$sanitizer" --tool memcheck --error-exitcode 1 \
    "$KVARN_DEVICE_ROOT/tests/gpu/KvarnGpuTests" --gtest_brief=1 \
    --gtest_filter='Gpu.DeviceQuery:Gpu.MemcpyRoundTrip:Gpu.Memset:Gpu.TwoStreamsAtOnce:Gpu.WorksFromAnotherThreadAndLeavesItsContextAlone' \
    || status=1
else
  echo "no KvarnGpuTests in this package: its memcheck part skipped"
fi
# The generated kernels: memcheck and racecheck on small launches of flush
# (with its Sinkhorn reductions in shared memory), append and the decode
# family (whose barriers kvgpu-eliminate-barriers thins out).
for tool in memcheck racecheck; do
  "$sanitizer" --tool $tool --error-exitcode 1 \
    "$KVARN_DEVICE_ROOT/tests/gpu/KvarnKernelGpuTests" --gtest_brief=1 \
    --gtest_filter='Flush.SmallForTheSanitizers:KernelGpu.AppendRotatesIntoThePoolAndSkipsPadding:DecodeGpu.SmallForTheSanitizers:MlaGpu.SmallForTheSanitizers:MlaGpu.RegisterStepForTheSanitizers' \
    || status=1
done
exit $status
