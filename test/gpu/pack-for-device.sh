#!/usr/bin/env bash
# Packs what a run on the GPU machine needs into DEST (default: .device/ at the
# repository root, git-ignored): one xz tarball of the static build and the
# script that unpacks and runs it there. See docs/device.md.
#
#   test/gpu/pack-for-device.sh [DEST]
#
# The tarball holds bin/ (every tool), lib/ (libkvarn.so*,
# libkvarn_runtime.so*), tests/unit and tests/gpu (every GoogleTest binary), hooks/ (test/gpu/device.d), golden/ (the
# one flush case `kvarn-jit ref flush` runs on, in case the tree that travels
# lacks test/data/golden; KVARN_DEVICE_GOLDEN=0: none) and MANIFEST; with
# KVARN_DEVICE_EXTRA="NAME=PATH ...", more executables in bin/. Binaries are stripped. The GPU machine
# has no LLVM, no lit and no build tools: nothing else is needed there.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${KVARN_BUILD_DIR:-$root/build}
dest=${1:-$root/.device}
golden_case=flush_kvarn_k4v2_g128_d128_a
# The device tool refuses a tree plus carried paths over 64 MiB; the tree
# (37 MiB, most of it golden data) travels with every call, so the tarball
# must stay under ~25 MiB (a 24.4 MiB one went through beside it, a 26.6
# MiB one was refused; 2026-12-05).
max_tarball_mib=${KVARN_DEVICE_MAX_MIB:-25}

if [ ! -f "$build/build.ninja" ]; then
  echo "pack-for-device: no build in $build; run 'bash .ci/setup' first" >&2
  exit 1
fi
# The whole build: every binary that could be packed must be current.
cmake --build "$build"

if grep -q '^KVARN_STATIC_LLVM:BOOL=OFF' "$build/CMakeCache.txt"; then
  echo "pack-for-device: $build links the shared libLLVM, which the GPU" \
       "machine lacks; configure with -DKVARN_STATIC_LLVM=ON" >&2
  exit 1
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg=$stage/kvarn
mkdir -p "$pkg"/{bin,lib,tests/unit,tests/gpu,hooks,golden}

# Executables of a build folder, stripped, into a package folder. Each binary
# that links LLVM is ~50 MB stripped, and the tarball plus the tree must stay
# under the device tool's 64 MiB: KVARN_DEVICE_SKIP names what to leave out.
# The fuzz drivers and KvarnCodegenTests are CPU-only (CI runs them).
skip=" ${KVARN_DEVICE_SKIP-kvarn-opt KvarnEvalTests KvarnCodegenTests kvarn-cache-fuzz-ci kvarn-dsl-fuzz-ci} "
copy_executables() {
  local from=$1 to=$2 f
  [ -d "$from" ] || return 0
  for f in "$from"/*; do
    [ -f "$f" ] && [ -x "$f" ] || continue
    [[ "$skip" == *" $(basename "$f") "* ]] && continue
    cp "$f" "$to/"
    strip --strip-all "$to/$(basename "$f")"
  done
}
copy_executables "$build/bin" "$pkg/bin"
# KVARN_DEVICE_EXTRA: more executables for bin/, "NAME=PATH ..." (e.g. an
# older build's kvarn-bench as kvarn-bench-base, for an A/B in one call: a
# second build's copy of the same LLVM costs xz ~0.3-2.5 MB; or a script
# that runs bin/kvarn-bench with other flags).
for extra in ${KVARN_DEVICE_EXTRA-}; do
  name=${extra%%=*} path=${extra#*=}
  if [ "$name" = "$extra" ] || [ ! -x "$path" ]; then
    echo "pack-for-device: KVARN_DEVICE_EXTRA wants NAME=PATH of an executable, got '$extra'" >&2
    exit 1
  fi
  cp "$path" "$pkg/bin/$name"
  # A script (a build run with other flags) is copied as it is.
  if [ "$(head -c 4 "$path" | tail -c 3)" = ELF ]; then
    strip --strip-all "$pkg/bin/$name"
  fi
done
copy_executables "$build/unittests" "$pkg/tests/unit"
copy_executables "$build/gputests" "$pkg/tests/gpu"

# libkvarn.so, the runtime core libkvarn_runtime.so and their SONAME links,
# as the loader will look for them.
cp -P "$build"/lib/libkvarn.so* "$build"/lib/libkvarn_runtime.so* "$pkg/lib/"
for f in "$pkg"/lib/libkvarn*.so*; do
  [ -L "$f" ] || strip --strip-unneeded "$f"
done

cp "$root/test/gpu/run-on-device.sh" "$pkg/"
if compgen -G "$root/test/gpu/device.d/*" >/dev/null; then
  cp "$root"/test/gpu/device.d/* "$pkg/hooks/"
fi
# KVARN_DEVICE_GOLDEN=0 leaves it out (~2 MB of the tarball): the tree sent
# with each call has test/data/golden, which run-on-device.sh prefers.
if [ "${KVARN_DEVICE_GOLDEN-1}" != 0 ]; then
  cp -r "$root/test/data/golden/$golden_case" "$pkg/golden/"
fi

{
  echo "commit: $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)$(
    git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "branch: $(git -C "$root" rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)"
  echo "packed: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n)"
  echo "build: $(grep '^CMAKE_BUILD_TYPE:' "$build/CMakeCache.txt" | cut -d= -f2)," \
       "static LLVM $(grep '^KVARN_STATIC_LLVM:' "$build/CMakeCache.txt" | cut -d= -f2)"
  echo "files:"
  (cd "$pkg" && find . -type f -o -type l | sort | sed 's/^\.\//  /')
} >"$pkg/MANIFEST"

mkdir -p "$dest"
tarball=$dest/kvarn-device.tar.xz
# One xz stream with a dictionary larger than a binary: every LLVM-linked
# binary holds much the same LLVM, which then compresses once (42 -> 25 MB).
tar -C "$stage" -cf - kvarn | xz -T1 --lzma2=preset=6,dict=192MiB >"$tarball.tmp"
mv "$tarball.tmp" "$tarball"
# The entry point travels beside the tarball, so the device command is just
# `bash .device/run-on-device.sh`, whichever tree the device tool sends.
cp "$root/test/gpu/run-on-device.sh" "$dest/run-on-device.sh"
cp "$root/test/gpu/device-shell.sh" "$dest/device-shell.sh"

size_mib=$(( $(stat -c %s "$tarball") / 1048576 ))
echo "pack-for-device: $tarball ($(du -h "$tarball" | cut -f1)," \
     "$(du -sh "$pkg" | cut -f1) unpacked), $(git -C "$root" rev-parse --short HEAD 2>/dev/null)"
if [ "$size_mib" -gt "$max_tarball_mib" ]; then
  echo "pack-for-device: the tarball is over ${max_tarball_mib} MiB; with the" \
       "tree it may pass the device tool's 64 MiB limit" >&2
  exit 1
fi
