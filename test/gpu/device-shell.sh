#!/usr/bin/env bash
# Runs one command on the GPU machine against the packed build, without the
# full suite of run-on-device.sh: unpacks the tarball (once per tarball: a
# later call in the same warm session reuses it), sets up the environment
# run-on-device.sh gives its steps, and runs COMMAND there. For targeted
# experiments (one test filter, one benchmark, ncu on one kernel).
#
#   bash .device/device-shell.sh 'tests/gpu/KvarnKernelGpuTests --gtest_filter=Flush.*'
#   bash .device/device-shell.sh 'bin/kvarn-bench --only flush'
#
# COMMAND runs in the unpacked package (bin/, lib/, tests/, hooks/); the tree
# the tool sent is $KVARN_REPO. See docs/device.md.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tarball=${KVARN_TARBALL:-$here/kvarn-device.tar.xz}
export OUT=${OUT:-/tmp/kvarn-device-out}
work=${KVARN_DEVICE_WORK:-/tmp/kvarn-device}
repo=${KVARN_REPO:-$PWD}
mkdir -p "$OUT"

if [ ! -f "$tarball" ]; then
  echo "device-shell: no tarball at $tarball (run test/gpu/pack-for-device.sh first)" >&2
  exit 1
fi
stamp=$(cksum <"$tarball")
if [ "$(cat "$work/.tarball-cksum" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$work" && mkdir -p "$work"
  if command -v xz >/dev/null; then
    xz -dc "$tarball" | tar -xf - -C "$work" || exit 1
  else
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' \
      "$tarball" "$work" || exit 1
  fi
  echo "$stamp" >"$work/.tarball-cksum"
fi

export KVARN_DEVICE_ROOT=$work/kvarn
export KVARN_REPO=$repo
export LD_LIBRARY_PATH=$KVARN_DEVICE_ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PATH=$KVARN_DEVICE_ROOT/bin:$PATH:/usr/local/cuda/bin
if [ -d "$repo/test/data/golden" ]; then
  export KVARN_GOLDEN_DIR=$repo/test/data/golden
else
  export KVARN_GOLDEN_DIR=$KVARN_DEVICE_ROOT/golden
fi
nvidia-smi -L >/dev/null 2>&1 && export KVARN_REQUIRE_GPU=1
cd "$KVARN_DEVICE_ROOT" && bash -c "$*"
