#!/usr/bin/env bash
# The benchmarks: kvarn-bench prints its table and writes its JSON under $OUT,
# then the fp16 SDPA baseline (bench/sdpa_baseline.py, PyTorch) runs the same
# decode shapes on the same GPU in the same call.
set -uo pipefail
if [ ! -x "$KVARN_DEVICE_ROOT/bin/kvarn-bench" ]; then
  echo "no kvarn-bench in this build yet: skipped"
  exit 77
fi
"$KVARN_DEVICE_ROOT/bin/kvarn-bench" --json "$OUT/bench.json" || exit 1
python3 "$KVARN_REPO/bench/sdpa_baseline.py" --json "$OUT/sdpa.json"
rc=$?
[ $rc -eq 77 ] && rc=0 # no torch: kvarn-bench's figures still stand
exit $rc
