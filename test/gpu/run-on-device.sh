#!/usr/bin/env bash
# Runs on the GPU machine, from the root of the tree the device tool sent:
# unpacks the tarball test/gpu/pack-for-device.sh made, then checks that the
# build runs there with no LLVM installed, runs the unit and GPU tests, the
# CLI on a golden case and every hook (hooks/NN-name.sh, from
# test/gpu/device.d). Logs go to $OUT; the last lines printed are a summary.
#
#   bash .device/run-on-device.sh [TARBALL]
#
# Exit status 0 when every step passed or was skipped, 1 otherwise. A step
# (or hook) passes with exit 0, is skipped with exit 77, fails otherwise.
# See docs/device.md.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tarball=${1:-$here/kvarn-device.tar.xz}
export OUT=${OUT:-/tmp/kvarn-device-out}
work=${KVARN_DEVICE_WORK:-/tmp/kvarn-device}
repo=${KVARN_REPO:-$PWD}
golden_case=flush_kvarn_k4v2_g128_d128_a
mkdir -p "$OUT"
log=$OUT/device.log
: >"$log"
started=$SECONDS

say() { echo "$@" | tee -a "$log"; }

if [ ! -f "$tarball" ]; then
  say "run-on-device: no tarball at $tarball (run test/gpu/pack-for-device.sh" \
      "here first, and carry its folder)"
  exit 1
fi
rm -rf "$work" && mkdir -p "$work"
# Python's lzma where the image has no xz binary.
unpack() {
  if command -v xz >/dev/null; then
    xz -dc "$tarball" | tar -xf - -C "$work"
  else
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' \
      "$tarball" "$work"
  fi
}
if ! unpack; then
  say "run-on-device: cannot unpack $tarball"
  exit 1
fi

# What steps and hooks see.
export KVARN_DEVICE_ROOT=$work/kvarn
export KVARN_REPO=$repo
export LD_LIBRARY_PATH=$KVARN_DEVICE_ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PATH=$KVARN_DEVICE_ROOT/bin:$PATH:/usr/local/cuda/bin
if [ -d "$repo/test/data/golden/$golden_case" ]; then
  export KVARN_GOLDEN_DIR=$repo/test/data/golden
  full_golden=1
else
  export KVARN_GOLDEN_DIR=$KVARN_DEVICE_ROOT/golden
  full_golden=0
fi
kv=$KVARN_DEVICE_ROOT
# Where nvidia-smi sees a GPU, GPU tests must run: a skip there is a failure.
if nvidia-smi -L >/dev/null 2>&1; then
  export KVARN_REQUIRE_GPU=1
fi

results=()
failures=0

# run_step NAME SECONDS COMMAND...: runs COMMAND under a time limit, its
# output to the screen and the log, and records a summary row.
run_step() {
  local name=$1 limit=$2
  shift 2
  say ""
  say "=== $name"
  local start=$SECONDS step_log
  step_log=$(mktemp)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$step_log" | tee -a "$log"
  local rc=${PIPESTATUS[0]} status detail=""
  # GoogleTest binaries: count what ran.
  local passed skipped failed
  passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$step_log" | tail -1)
  skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$step_log" | tail -1)
  failed=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$step_log" | tail -1)
  if [ -n "$passed$skipped$failed" ]; then
    detail="${passed:-0} passed, ${skipped:-0} skipped, ${failed:-0} failed"
  fi
  rm -f "$step_log"
  case $rc in
    0) status=PASS ;;
    77) status=SKIP ;;
    124 | 137) status="FAIL (time limit ${limit}s)" ;;
    *) status="FAIL (exit $rc)" ;;
  esac
  [[ $status == FAIL* ]] && failures=$((failures + 1))
  results+=("$(printf '%-40s %-24s %5ss  %s' "$name" "$status" \
    $((SECONDS - start)) "$detail")")
}

machine() {
  sed -n '1,4p' "$KVARN_DEVICE_ROOT/MANIFEST"
  echo "kernel: $(uname -srm)"
  nvidia-smi -L || return 1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
    --format=csv
}

# libkvarn.so and every binary must load with what this machine has: no
# shared LLVM or MLIR, nothing "not found".
self_contained() {
  echo "shared LLVM/MLIR libraries known to the loader here:"
  ldconfig -p | grep -E 'libLLVM|libMLIR|libclang' || echo "  none"
  echo "ldd libkvarn.so.0:"
  ldd "$KVARN_DEVICE_ROOT/lib/libkvarn.so.0" | sed 's/^/  /'
  local f bad=0
  for f in "$KVARN_DEVICE_ROOT"/lib/libkvarn.so.0 "$KVARN_DEVICE_ROOT"/bin/* \
    "$KVARN_DEVICE_ROOT"/tests/*/*; do
    [ -f "$f" ] || continue
    if ldd "$f" | grep -E 'not found|libLLVM|libMLIR'; then
      echo "FAIL: $f needs the libraries above"
      bad=1
    fi
  done
  [ $bad = 0 ] && echo "every packed binary resolves its libraries, none of them LLVM or MLIR"
  return $bad
}

# dlopen libkvarn.so in a process that has nothing else of ours, and ask the
# C API whether CUDA is usable.
dlopen_check() {
  python3 - "$KVARN_DEVICE_ROOT/lib/libkvarn.so.0" <<'EOF'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
for name in ("kvarn_version", "kvarn_last_error"):
    getattr(lib, name).restype = ctypes.c_char_p
lib.kvarn_status_string.restype = ctypes.c_char_p
count = ctypes.c_int(-1)
status = lib.kvarn_cuda_available(ctypes.byref(count))
print("dlopen(%s): kvarn %s; kvarn_cuda_available -> %s, %d GPU(s) %s" % (
    sys.argv[1], lib.kvarn_version().decode(),
    lib.kvarn_status_string(status).decode(), count.value,
    lib.kvarn_last_error().decode()))
sys.exit(0 if status == 0 else 1)
EOF
}

# The same next to another LLVM: Triton's (inside libtriton.so) and PyTorch's
# CUDA, all in the primary context.
dlopen_next_to_triton() {
  python3 - "$KVARN_DEVICE_ROOT/lib/libkvarn.so.0" <<'EOF'
import ctypes, sys
try:
    import torch, triton
    from triton._C import libtriton  # noqa: F401  (Triton's LLVM)
except Exception as e:
    print("no PyTorch/Triton here (%s): skipped" % e)
    sys.exit(77)
x = torch.arange(1024, device="cuda", dtype=torch.float32)
lib = ctypes.CDLL(sys.argv[1])
lib.kvarn_version.restype = ctypes.c_char_p
lib.kvarn_last_error.restype = ctypes.c_char_p
count = ctypes.c_int(-1)
status = lib.kvarn_cuda_available(ctypes.byref(count))
y = (x * 2).sum().item()  # PyTorch still works after kvarn loaded the driver
maps = open("/proc/self/maps").read()
print("torch %s, triton %s; libtriton mapped: %s; libkvarn mapped: %s" % (
    torch.__version__, triton.__version__, "libtriton" in maps, "libkvarn" in maps))
print("kvarn %s: kvarn_cuda_available -> %d, %d GPU(s) %s; torch sum %.0f" % (
    lib.kvarn_version().decode(), status, count.value,
    lib.kvarn_last_error().decode(), y))
sys.exit(0 if status == 0 and y == 1023 * 1024 else 1)
EOF
}

ref_flush() {
  kvarn-jit ref flush --case "$KVARN_GOLDEN_DIR/$golden_case" --out /tmp/r.bin &&
    ls -l /tmp/r.bin
}

export -f machine self_contained dlopen_check dlopen_next_to_triton ref_flush
export golden_case

say "kvarn on the GPU machine: $(date -u +%Y-%m-%dT%H:%M:%SZ), tree $repo," \
    "golden data $KVARN_GOLDEN_DIR"
run_step "machine and GPU" 60 bash -c machine
run_step "no LLVM needed (ldd)" 60 bash -c self_contained
run_step "dlopen libkvarn.so (ctypes)" 60 bash -c dlopen_check
run_step "dlopen next to Triton + PyTorch" 180 bash -c dlopen_next_to_triton
run_step "kvarn-jit --version" 30 kvarn-jit --version
run_step "kvarn-jit devices" 60 kvarn-jit devices
run_step "kvarn-jit ref flush" 120 bash -c ref_flush

for t in "$kv"/tests/unit/*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  if [ "$name" = KvarnGoldenTests ] && [ $full_golden = 0 ]; then
    run_step "unit: $name" 10 bash -c 'echo "no test/data/golden in the tree: skipped"; exit 77'
    continue
  fi
  run_step "unit: $name" 300 "$t" --gtest_brief=1
done
# Every GPU test binary three times, each run with a fresh seed (printed as
# KVARN_TEST_SEED=...): a bound that holds only for some seeds cannot pass
# by luck for long.
seed_runs=${KVARN_SEED_RUNS:-3}
for t in "$kv"/tests/gpu/*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  for run in $(seq 1 "$seed_runs"); do
    run_step "gpu: $name (fresh seed $run)" 300 "$t" \
      --gtest_output="json:$OUT/gpu-$name-$run.json"
  done
done
# The flush-fidelity stress: 200 seeds x every preset x head_dim x dtype.
if [ -x "$kv/tests/gpu/KvarnKernelGpuTests" ]; then
  run_step "gpu: flush stress (${KVARN_FLUSH_STRESS_SEEDS:-200} seeds)" 600 \
    env KVARN_FLUSH_STRESS_SEEDS=${KVARN_FLUSH_STRESS_SEEDS:-200} \
    "$kv/tests/gpu/KvarnKernelGpuTests" --gtest_filter='Flush.Stress*'
fi
# KVARN_HOOKS="50 70 85" runs only the hooks whose names start with one of
# the words (a run that must fit one device call leaves the benchmarks out).
for hook in "$kv"/hooks/*.sh; do
  [ -f "$hook" ] || continue
  name=$(basename "$hook" .sh)
  if [ -n "${KVARN_HOOKS:-}" ]; then
    wanted=0
    for prefix in $KVARN_HOOKS; do
      [[ $name == "$prefix"* ]] && wanted=1
    done
    [ "$wanted" = 1 ] || continue
  fi
  run_step "hook: $name" 300 bash "$hook"
done

{
  echo ""
  echo "=== summary ($((SECONDS - started)) s; $(sed -n 's/^commit: //p' "$kv/MANIFEST"))"
  printf '%s\n' "${results[@]}"
  echo "$failures step(s) failed"
} | tee "$OUT/summary.txt" | tee -a "$log"
[ "$failures" = 0 ]
