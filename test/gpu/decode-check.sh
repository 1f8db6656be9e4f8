#!/usr/bin/env bash
# The decode family's check after a kernel change, in one device call (run
# through device-shell.sh, in the unpacked package): the runtime GPU tests,
# the torch tests, racecheck and memcheck on the small decode and MLA tests,
# every kvarn-bench build of the package (bin/kvarn-bench and each
# bin/kvarn-bench-NAME packed with KVARN_DEVICE_EXTRA) on the decode rows
# below one after the other, each with its own kernel cache, then the decode
# and MLA kernel tests on three fresh seeds at once, each seed's run sharded
# over four processes (GTEST_TOTAL_SHARDS: the cold compile spread over the
# machine's cores; ~120 s on an H100 for the decode tests, where one
# unsharded run took ~280 s and ran out of its time on an H200), then the
# benchmarks again in the other order.
#
#   run(command: "DEADLINE=560 bash .device/device-shell.sh 'bash $KVARN_REPO/test/gpu/decode-check.sh'",
#       carry: [".device"], timeout_s: 600)
#
# DEADLINE: seconds the script may take (default 540); each step's limit is
# cut to what is left. ROWS: kvarn-bench --only's substrings (default: the
# eight dense rows of docs/benchmarks.md's small-batch profile). Random tests
# pick fresh seeds (KVARN_TEST_SEED unset); every process's seed and result
# are in the output and every log in $OUT/logs.txt (the tool returns a few
# files only, so the logs go in one).
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
LOGS=$(mktemp -d)
step "runtime GPU tests" 40 "$LOGS/runtime.log" tests/gpu/KvarnGpuTests --gtest_brief=1
(cd "$KVARN_REPO/test/python" && step "torch tests" 60 "$LOGS/torch.log" \
  env PYTHONPATH="$KVARN_REPO/python" \
  KVARN_LIBRARY="$KVARN_DEVICE_ROOT/lib/libkvarn.so.0" \
  python3 -m unittest test_kvarn_torch)
small="MlaGpu.SmallForTheSanitizers:MlaGpu.RegisterStepForTheSanitizers:DecodeGpu.SmallForTheSanitizers"
step racecheck 60 "$LOGS/race.log" compute-sanitizer --tool racecheck \
  tests/gpu/KvarnKernelGpuTests --gtest_brief=1 --gtest_filter="$small"
step memcheck 50 "$LOGS/mem.log" compute-sanitizer --tool memcheck \
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
s=$(date +%s); shard_limit=$(limit 300)
for seed_run in 1 2 3; do
  for shard in 0 1 2 3; do
    GTEST_TOTAL_SHARDS=4 GTEST_SHARD_INDEX=$shard \
      KVARN_CACHE_DIR=/tmp/kc-tests-$seed_run-$shard timeout "$shard_limit" \
      tests/gpu/KvarnKernelGpuTests --gtest_brief=1 --gtest_filter="$kernels" \
      >"$LOGS/kernel-$seed_run-$shard.log" 2>&1 &
  done
done
wait
echo "decode and MLA kernel tests, 3 seeds x 4 shards: $(( $(date +%s) - s )) s"
for log in "$LOGS"/kernel-*.log; do
  echo "$(basename "$log" .log): $(grep -hE "KVARN_TEST_SEED|PASSED|FAILED" "$log" | tr -s ' \n' ' ' | cut -c1-200)"
done
for b in $(echo "$builds" | tac); do bench "$b" 2; done
for log in "$LOGS"/*.log; do echo "==> $(basename "$log") <=="; cat "$log"; done >"$OUT/logs.txt"
echo "decode-check: $(elapsed) s"
