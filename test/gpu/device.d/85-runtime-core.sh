#!/usr/bin/env bash
# The runtime core (libkvarn_runtime.so: the C API without a compiler, issue
# 15 item 5) serving an application from a cache warmed ahead of time:
# serving-loop (the managed pool's serving loop with its own checks against
# the CPU reference; it links libkvarn.so.0) runs with the core in
# libkvarn.so.0's place. With an empty cache the core must refuse with
# KVARN_ERROR_KERNEL_NOT_CACHED (it cannot compile); with the cache
# `kvarn-jit cache warm` filled for serving-loop's one shape (kvarn_k4v2_g64,
# head_dim 128, GQA 8/2) it must pass.
set -uo pipefail
root=$KVARN_DEVICE_ROOT
if [ ! -f "$root/lib/libkvarn_runtime.so.0" ] || [ ! -x "$root/bin/serving-loop" ]; then
  echo "no libkvarn_runtime.so.0 or serving-loop in the package: skipped"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/core"
ln -s "$root/lib/libkvarn_runtime.so.0" "$work/core/libkvarn.so.0"
core_path=$work/core${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

echo "--- the core with an empty cache"
out=$(KVARN_CACHE_DIR=$work/empty LD_LIBRARY_PATH=$core_path \
  "$root/bin/serving-loop" --steps 2 2>&1)
rc=$?
echo "$out" | tail -3
if [ "$rc" = 0 ] || ! grep -q KVARN_ERROR_KERNEL_NOT_CACHED <<<"$out"; then
  echo "FAIL: the runtime core served (or failed otherwise) without kernels"
  exit 1
fi

echo "--- kvarn-jit cache warm, then the core"
echo '{"shapes": [{"preset": "kvarn_k4v2_g64", "head_dim": 128, "gqa": 4}]}' \
  >"$work/shapes.json"
"$root/bin/kvarn-jit" cache warm --shapes "$work/shapes.json" \
  --dir "$work/cache" || exit 1
KVARN_CACHE_DIR=$work/cache LD_LIBRARY_PATH=$core_path \
  "$root/bin/serving-loop" --steps 20
