#!/usr/bin/env bash
# The benchmarks: kvarn-bench prints its table and writes its JSON under $OUT
# (and prints the D=128 decode rows again with --warp-states, and the MLA
# rows with 4 warps a CTA),
# the fp16 SDPA baseline (bench/sdpa_baseline.py, PyTorch) runs the same
# decode shapes on the same GPU in the same call, and `kvarn-jit cache bench`
# prints the kernel cache's cold / warm / memory-hit figures.
set -uo pipefail
if [ ! -x "$KVARN_DEVICE_ROOT/bin/kvarn-bench" ]; then
  echo "no kvarn-bench in this build: skipped"
  exit 77
fi
rc=0
"$KVARN_DEVICE_ROOT/bin/kvarn-bench" --json "$OUT/bench.json" || rc=1
# The attention states held per warp (not yet the default), the decode rows
# again in the same process family and call, to compare against the above.
"$KVARN_DEVICE_ROOT/bin/kvarn-bench" --warp-states \
  --only "decode 32/8 D=128" || rc=1
# MLA decode at 4 warps a CTA, the default before 8 (LaunchPolicy.h's
# kMlaAttentionNumWarps), against the 'mla' rows of the first run.
"$KVARN_DEVICE_ROOT/bin/kvarn-bench" --num-warps 4 --only mla || rc=1
python3 "$KVARN_REPO/bench/sdpa_baseline.py" --json "$OUT/sdpa.json"
sdpa=$?
[ $sdpa -ne 0 ] && [ $sdpa -ne 77 ] && rc=1 # 77: no torch, figures still stand
KVARN_CACHE_DIR=$(mktemp -d) kvarn-jit cache bench || rc=1
exit $rc
