#!/usr/bin/env bash
# Installs kvarn into a temporary prefix and builds a tiny C program against
# it through find_package(kvarn) and through pkg-config, each with the JIT
# (kvarn::jit, the old name kvarn::kvarn, kvarn.pc: libkvarn.so) and with the
# runtime core (kvarn::runtime, kvarn-runtime.pc: libkvarn_runtime.so). All
# must compile, link, run and print alike (no GPU needed: the program asks
# for presets and layouts, and whether CUDA is there).
#
#   install-consumer.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

cmake --install "$build" --prefix "$prefix" >"$tmp/install.log"
test -f "$prefix/include/kvarn/kvarn.h"
libdir=$(dirname "$(find "$prefix" -name 'libkvarn.so.0' | head -1)")

mkdir -p "$tmp/consumer"
cat >"$tmp/consumer/main.c" <<'C'
#include <kvarn/kvarn.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  kvarn_record_layout_t l;
  if (kvarn_record_layout("kvarn_k4v2_g128", 128, &l) != KVARN_OK)
    return 1;
  kvarn_capacity_t c;
  if (kvarn_capacity_plan(NULL, 128, 32, 8, 1LL << 34, 16, -1, &c) != KVARN_OK)
    return 2;
  if (kvarn_record_layout("nope", 128, &l) != KVARN_ERROR_UNKNOWN_PRESET ||
      strstr(kvarn_last_error(), "nope") == NULL)
    return 3;
  printf("kvarn %s, %zu presets, record %lld bytes, ratio %.2f\n",
         kvarn_version(), kvarn_preset_count(), (long long)l.record_bytes,
         c.ratio_vs_fp16);
  return 0;
}
C
run_cmake() { # TARGET
  local dir=$tmp/cmake-${1//:/_}
  mkdir -p "$dir"
  cp "$tmp/consumer/main.c" "$dir/"
  cat >"$dir/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.20)
project(consumer C)
find_package(kvarn 0.1 REQUIRED)
add_executable(consumer main.c)
target_link_libraries(consumer PRIVATE $1)
CM
  echo "--- find_package(kvarn), $1"
  cmake -S "$dir" -B "$dir/build" -DCMAKE_PREFIX_PATH="$prefix" \
    >"$tmp/cmake.log" || { cat "$tmp/cmake.log"; exit 1; }
  cmake --build "$dir/build" >"$tmp/build.log" || { cat "$tmp/build.log"; exit 1; }
  "$dir/build/consumer" | tee "$dir/out"
}
run_pkg_config() { # PACKAGE LIBRARY
  echo "--- pkg-config $1"
  local flags
  flags=$(PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --cflags --libs "$1")
  echo "pkg-config: $flags"
  grep -q -- "-l$2\b" <<<"$flags" || { echo "$1 does not link $2"; exit 1; }
  cc "$tmp/consumer/main.c" $flags -o "$tmp/consumer-$1"
  LD_LIBRARY_PATH=$libdir "$tmp/consumer-$1" | tee "$tmp/out-$1"
}
run_cmake kvarn::jit
run_cmake kvarn::kvarn
run_cmake kvarn::runtime
run_pkg_config kvarn kvarn
run_pkg_config kvarn-runtime kvarn_runtime
# Each program linked the library it asked for.
readelf -d "$tmp/cmake-kvarn__runtime/build/consumer" | grep -q 'libkvarn_runtime.so.0'
readelf -d "$tmp/cmake-kvarn__jit/build/consumer" | grep -q 'libkvarn.so.0'
grep -q "record 13824 bytes" "$tmp/cmake-kvarn__jit/out"
for out in "$tmp/cmake-kvarn__kvarn/out" "$tmp/cmake-kvarn__runtime/out" \
           "$tmp/out-kvarn" "$tmp/out-kvarn-runtime"; do
  cmp "$tmp/cmake-kvarn__jit/out" "$out"
done
echo "install-consumer: PASS"
