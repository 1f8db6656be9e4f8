#!/usr/bin/env bash
# The benchmarks, once there are some: kvarn-bench prints its table and writes
# its JSON under $OUT (one file: the device tool returns at most 8).
set -uo pipefail
if [ ! -x "$KVARN_DEVICE_ROOT/bin/kvarn-bench" ]; then
  echo "no kvarn-bench in this build yet: skipped"
  exit 77
fi
"$KVARN_DEVICE_ROOT/bin/kvarn-bench" --json "$OUT/bench.json"
