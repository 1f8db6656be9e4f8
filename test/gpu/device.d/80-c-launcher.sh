#!/usr/bin/env bash
# kvarn-jit --emit c-launcher on the GPU machine (issue 16, part 4): the
# flush and decode launchers generated there (cubin by its ptxas), compiled
# with its C compiler against its cuda.h and libcuda, run against kvarn's
# own launches on the same buffers (80-c-launcher.py). Skips (77) without a
# C compiler, the CUDA headers or PyTorch.
set -uo pipefail
cc=$(command -v cc || command -v gcc || true)
inc=/usr/local/cuda/include
if [ -z "$cc" ] || [ ! -f "$inc/cuda.h" ]; then
  echo "no C compiler or cuda.h here: skipped"
  exit 77
fi
if ! python3 -c 'import torch' 2>/dev/null; then
  echo "no PyTorch here: skipped"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$KVARN_DEVICE_ROOT/bin/kvarn-jit" --emit c-launcher --kernels flush,decode \
  --gqa 4 --out "$work" || exit 1
for f in flush decode; do
  "$cc" -std=c11 -Wall -Wextra -Werror -fPIC -I"$inc" -c "$work/$f.c" \
    -o "$work/$f.o" || exit 1
done
# libcuda's stub to link with; the driver's libcuda.so.1 at run time.
"$cc" -shared -o "$work/liblaunchers.so" "$work/flush.o" "$work/decode.o" \
  -L/usr/local/cuda/lib64/stubs -lcuda || exit 1
PYTHONPATH=$KVARN_REPO/python \
  KVARN_LIBRARY=$KVARN_DEVICE_ROOT/lib/libkvarn.so.0 \
  python3 "$(dirname "$0")/80-c-launcher.py" "$work/liblaunchers.so"
