#!/usr/bin/env bash
# Installs kvarn into a temporary prefix and builds a tiny C program against
# it twice: through find_package(kvarn) and through pkg-config. Both must
# compile, link and run (no GPU needed: the program asks for presets and
# layouts, and whether CUDA is there).
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
cat >"$tmp/consumer/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.20)
project(consumer C)
find_package(kvarn 0.1 REQUIRED)
add_executable(consumer main.c)
target_link_libraries(consumer PRIVATE kvarn::kvarn)
CM
echo "--- find_package(kvarn)"
cmake -S "$tmp/consumer" -B "$tmp/consumer/build" -DCMAKE_PREFIX_PATH="$prefix" \
  >"$tmp/cmake.log" || { cat "$tmp/cmake.log"; exit 1; }
cmake --build "$tmp/consumer/build" >"$tmp/build.log" || { cat "$tmp/build.log"; exit 1; }
"$tmp/consumer/build/consumer" | tee "$tmp/out1"

echo "--- pkg-config kvarn"
export PKG_CONFIG_PATH=$libdir/pkgconfig
flags=$(pkg-config --cflags --libs kvarn)
echo "pkg-config: $flags"
cc "$tmp/consumer/main.c" $flags -o "$tmp/consumer2"
LD_LIBRARY_PATH=$libdir "$tmp/consumer2" | tee "$tmp/out2"
grep -q "record 13824 bytes" "$tmp/out1"
cmp "$tmp/out1" "$tmp/out2"
echo "install-consumer: PASS"
