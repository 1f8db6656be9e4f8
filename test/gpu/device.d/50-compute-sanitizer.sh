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
"$sanitizer" --tool memcheck --error-exitcode 1 \
  "$KVARN_DEVICE_ROOT/tests/gpu/KVarnGpuTests" --gtest_brief=1 \
  --gtest_filter='Gpu.DeviceQuery:Gpu.MemcpyRoundTrip:Gpu.Memset:Gpu.TwoStreamsAtOnce:Gpu.DriverLinkerMakesALoadableCubin'
