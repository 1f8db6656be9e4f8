#!/usr/bin/env bash
# The decode family's check after a kernel change, in one device call (run
# through device-shell.sh, in the unpacked package): the runtime GPU tests,
# the torch tests, racecheck and memcheck on the small decode and MLA tests,
# every kvarn-bench build of the package (bin/kvarn-bench and each
# bin/kvarn-bench-NAME packed with KVARN_DEVICE_EXTRA) on the decode rows
# below one after the other, each with its own kernel cache, then the decode
# and MLA kernel tests (~200 s on a fresh machine, which compiles their
# kernels), then the benchmarks again in the other order and the kernel
# tests on two more fresh seeds while time is left.
#
#   run(command: "DEADLINE=560 bash .device/device-shell.sh 'bash $KVARN_REPO/test/gpu/decode-check.sh'",
#       carry: [".device"], timeout_s: 600)
#
# DEADLINE: seconds the script may take (default 540); each step's limit is
# cut to what is left. ROWS: kvarn-bench --only's substrings (default: the
# eight dense rows of docs/benchmarks.md's small-batch profile). Random tests
# pick fresh seeds (KVARN_TEST_SEED unset); their seeds are in the output.
set -uo pipefail
nvidia-smi -L
unset KVARN_TEST_SEED
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
limit() {
  local want=$1 left=$(( ${DEADLINE:-540} - $(date +%s) + T0 ))
  [ "$left" -lt "$want" ] && want=$left
  [ "$want" -lt 1 ] && want=1
  echo "$want"
}
step() { # NAME LIMIT LOG COMMAND...: runs COMMAND under the limit, says how it ended
  local name=$1 seconds=$2 log=$3 s; shift 3
  s=$(date +%s); timeout "$(limit "$seconds")" "$@" >"$log" 2>&1
  echo "$name: rc=$? $(( $(date +%s) - s )) s"
  grep -iE "seed +\]|PASSED|FAILED|ERROR SUMMARY|RACECHECK SUMMARY|^OK|^FAILED \(" "$log" | head -6 | cut -c1-200
}
export KVARN_CACHE_DIR=/tmp/kc-kvarn-bench
step "runtime GPU tests" 40 "$OUT/runtime.log" tests/gpu/KvarnGpuTests --gtest_brief=1
(cd "$KVARN_REPO/test/python" && step "torch tests" 60 "$OUT/torch.log" \
  env PYTHONPATH="$KVARN_REPO/python" \
  KVARN_LIBRARY="$KVARN_DEVICE_ROOT/lib/libkvarn.so.0" \
  python3 -m unittest test_kvarn_torch)
small="MlaGpu.SmallForTheSanitizers:MlaGpu.RegisterStepForTheSanitizers:DecodeGpu.SmallForTheSanitizers"
step racecheck 60 "$OUT/race.log" compute-sanitizer --tool racecheck \
  tests/gpu/KvarnKernelGpuTests --gtest_brief=1 --gtest_filter="$small"
step memcheck 50 "$OUT/mem.log" compute-sanitizer --tool memcheck \
  tests/gpu/KvarnKernelGpuTests --gtest_brief=1 --gtest_filter="$small"

rows=${ROWS:-32/8 D=128 4 x 3000,32/8 D=128 1 x 32768,32/8 D=128 1 x 131072,32/8 D=128 8 x 32768,32/8 D=128 32 x 8192,32/8 D=128 128 x 2048,32/8 D=128 64 x 4096,32/8 D=128 36 x 32768}
builds=$(cd bin && ls kvarn-bench kvarn-bench-* 2>/dev/null)
bench() { # BUILD ROUND
  local log=$OUT/$1-$2.txt s
  [ "$(elapsed)" -gt $(( ${DEADLINE:-540} - 60 )) ] && { echo "== $1 round $2: no time left"; return; }
  s=$(date +%s); KVARN_CACHE_DIR=/tmp/kc-$1 timeout "$(limit 100)" "bin/$1" --only "$rows" >"$log" 2>&1
  echo "== $1 round $2: rc=$? $(( $(date +%s) - s )) s"
  grep "^decode\|^mla\|copy" "$log" | grep -v "  auto " | sed -E 's/ +/ /g' | cut -c1-150
}
for b in $builds; do bench "$b" 1; done
kernels='DecodeGpu.*:MlaGpu.*:KernelGpu.*Decode*'
step "decode and MLA kernel tests" 240 "$OUT/kernel.log" tests/gpu/KvarnKernelGpuTests \
  --gtest_brief=1 --gtest_filter="$kernels"
for b in $(echo "$builds" | tac); do bench "$b" 2; done
# Two more fresh seeds of the kernel tests while time is left (their
# kernels are compiled now: ~80 s a run on an H100), so that a kernel
# change meets three seeds in the one call.
for run in 2 3; do
  [ "$(elapsed)" -gt $(( ${DEADLINE:-540} - 90 )) ] && { echo "kernel tests, seed run $run: no time left"; break; }
  step "decode and MLA kernel tests, seed run $run" 120 "$OUT/kernel-$run.log" \
    tests/gpu/KvarnKernelGpuTests --gtest_brief=1 --gtest_filter="$kernels"
done
echo "decode-check: $(elapsed) s"
