#!/usr/bin/env bash
# kvarn-jit run flush|append|decode on every golden case of the tree: the
# generated kernels against the public reference's data, one line each.
set -uo pipefail
jit=$KVARN_DEVICE_ROOT/bin/kvarn-jit
golden=$KVARN_REPO/test/data/golden
if [ ! -x "$jit" ] || [ ! -d "$golden" ]; then
  echo "no kvarn-jit or no test/data/golden here: skipped"
  exit 77
fi
status=0
tmp=$(mktemp -d)
for c in "$golden"/flush_*; do
  "$jit" run flush --case "$c" --out "$tmp/records.bin" || status=1
  "$jit" run append --case "$c" --out "$tmp/rotated.bin" || status=1
done
for c in "$golden"/decode_*; do
  "$jit" run decode --case "$c" --out "$tmp/out.bin" || status=1
done
rm -rf "$tmp"
exit $status
