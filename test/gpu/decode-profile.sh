#!/usr/bin/env bash
# ncu profiles of the decode kernels, one launch each, for what bounds them
# (issue 14 asks for that evidence): run through device-shell.sh in the
# unpacked package. For each profile: the report ($OUT/NAME.ncu-rep, to open
# in Nsight Compute), its details page as CSV (every section's metrics) and
# its source page as SASS with the stall samples of each instruction
# ($OUT/NAME-sass.csv: where a CTA's cycles go, prologue, block loop and
# tail apart), and the bench's own output.
#
#   run(command: "bash .device/device-shell.sh 'bash $KVARN_REPO/test/gpu/decode-profile.sh'",
#       carry: [".device"], timeout_s: 300)
#
# PROFILES: "NAME|KERNEL REGEX|kvarn-bench --only ROW|SPLITS (0: the
# runtime's)" entries separated by ';' (default: decode_split at 4 x 3000
# with 12 splits and at 8 x 32K with 8, the small and the bulk row); BENCH:
# the kvarn-bench build to run (default bin/kvarn-bench); LIMIT: seconds a
# profile may take (default 80). ncu's `--set full` replays the launch ~40
# times: a few seconds for one decode launch, most of LIMIT is the bench's
# kernel compile and warm-up.
set -uo pipefail
nvidia-smi -L
export KVARN_CACHE_DIR=${KVARN_CACHE_DIR:-/tmp/kc-profile}
bench=${BENCH:-bin/kvarn-bench}
profiles=${PROFILES:-small|decode_split|32/8 D=128 4 x 3000|12;big|decode_split|32/8 D=128 8 x 32768|8}
IFS=';' read -ra list <<<"$profiles"
for spec in "${list[@]}"; do
  IFS='|' read -r name kernel row splits <<<"$spec"
  args=(--only "$row")
  [ "${splits:-0}" != 0 ] && args+=(--splits "$splits")
  s=$(date +%s)
  timeout "${LIMIT:-80}" ncu -k "regex:$kernel" --launch-skip 5 --launch-count 1 \
    --set full --import-source no -f -o "$OUT/$name" \
    "$bench" "${args[@]}" >"$OUT/$name-run.txt" 2>&1
  echo "$name ($kernel, $row, splits ${splits:-0}): ncu rc=$? $(( $(date +%s) - s )) s"
  [ -f "$OUT/$name.ncu-rep" ] || { tail -3 "$OUT/$name-run.txt"; continue; }
  timeout 30 ncu -i "$OUT/$name.ncu-rep" --page source --csv --print-source sass \
    >"$OUT/$name-sass.csv" 2>"$OUT/$name-sass-err.txt" ||
    head -c 300 "$OUT/$name-sass-err.txt"
  timeout 30 ncu -i "$OUT/$name.ncu-rep" --page details --csv \
    >"$OUT/$name-details.csv" 2>&1
  grep -E '"(Duration|Registers Per Thread|Achieved Occupancy|DRAM Throughput|Issue Slots Busy|Executed Ipc Active)"' \
    "$OUT/$name-details.csv" | awk -F'","' '{print "  " $(NF-2) ": " $NF}' | tr -d '"'
done
