#!/usr/bin/env bash
# The benchmarks: kvarn-bench prints its table and writes its JSON under $OUT
# (one file: the device tool returns at most 8); `kvarn-jit cache bench`
# prints the kernel cache's cold / warm / memory-hit figures.
set -uo pipefail
if [ ! -x "$KVARN_DEVICE_ROOT/bin/kvarn-bench" ]; then
  echo "no kvarn-bench in this build: skipped"
  exit 77
fi
rc=0
"$KVARN_DEVICE_ROOT/bin/kvarn-bench" --json "$OUT/bench.json" || rc=1
KVARN_CACHE_DIR=$(mktemp -d) kvarn-jit cache bench || rc=1
exit $rc
