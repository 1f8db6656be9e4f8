#!/usr/bin/env bash
# kvarn-jit --emit c-launcher (issue 16, part 4): every library kernel's
# launcher, for two dense shapes and an MLA one, compiles with the system C compiler as C11 and
# as C++17 with warnings as errors, against the CUDA toolkit's cuda.h when
# there is one, else against the driver API subset in Inputs/cuda-stub;
# the objects link into one shared library (no symbol defined twice) with
# libcuda's stub where found. The launchers run against kvarn's own launch
# on the GPU machine (test/gpu/device.d/80-c-launcher.sh).
#
#   test/codegen/c-launcher.sh KVARN_JIT
set -euo pipefail
jit=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cuda_include=""
for d in ${CUDA_HOME:+$CUDA_HOME/include} /usr/local/cuda/include /usr/include; do
  if [ -f "$d/cuda.h" ]; then cuda_include=$d; break; fi
done
[ -n "$cuda_include" ] || cuda_include=$here/Inputs/cuda-stub
cc=""
for c in "${CC:-}" cc gcc; do
  if [ -n "$c" ] && command -v "$c" >/dev/null; then cc=$c; break; fi
done
[ -n "$cc" ] || cc="g++ -x c" # g++ brings the C front end along
cxx=${CXX:-g++}
echo "c-launcher: cuda.h from $cuda_include; C compiler $cc"

shape() { # name, launcher count, then kvarn-jit options
  local name=$1 expected=$2; shift 2
  mkdir -p "$work/$name"
  "$jit" --emit c-launcher --out "$work/$name" "$@" >/dev/null
  local n=0
  for src in "$work/$name"/*.c; do
    $cc -std=c11 -Wall -Wextra -Werror -fPIC -I"$cuda_include" -c "$src" \
      -o "${src%.c}.o"
    $cxx -x c++ -std=c++17 -Wall -Wextra -Werror -fsyntax-only \
      -I"$cuda_include" "$src"
    n=$((n + 1))
  done
  [ "$n" -eq "$expected" ] ||
    { echo "c-launcher: $name: $n launchers, expected $expected" >&2; exit 1; }
  local stubs=""
  for d in ${CUDA_HOME:+$CUDA_HOME/lib64/stubs} /usr/local/cuda/lib64/stubs; do
    [ -f "$d/libcuda.so" ] && { stubs=$d; break; }
  done
  if [ -n "$stubs" ]; then
    $cc -shared -o "$work/$name/liblaunchers.so" "$work/$name"/*.o \
      -L"$stubs" -lcuda
  else
    $cc -shared -o "$work/$name/liblaunchers.so" "$work/$name"/*.o \
      -Wl,--allow-shlib-undefined
  fi
  echo "c-launcher: $name: $n launchers compiled and linked"
}
shape f16-d128-gqa4 7 --gqa 4
shape bf16-d64-gqa8-sm80 7 --dtype bf16 --head-dim 64 --gqa 8 --arch sm_80
shape mla-r512-h16 6 --preset kvarn_mla_k4_g128 --head-dim 512 --rope-dim 64 --gqa 16
