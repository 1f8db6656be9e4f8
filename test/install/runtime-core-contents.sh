#!/usr/bin/env bash
# What the runtime core (libkvarn_runtime.so, issue 15 item 5) is made of,
# against libkvarn.so: the same exported C API; no LLVM and no MLIR symbol,
# defined or needed (the C++ standard library, POSIX and nlohmann/json do
# their work); a few MiB; and no shared library beyond the C and C++
# runtimes.
#
#   runtime-core-contents.sh LIBKVARN_RUNTIME LIBKVARN
set -euo pipefail
core=$1
jit=$2
status=0
fail() { echo "FAIL: $*"; status=1; }

exports() { nm -D --defined-only "$1" | awk '{print $3}' | sort; }
if ! diff <(exports "$jit") <(exports "$core") >/dev/null; then
  fail "the exported symbols differ from libkvarn.so's:"
  diff <(exports "$jit") <(exports "$core") || true
fi
echo "exports: $(exports "$core" | wc -l) symbols, as libkvarn.so"

# No LLVM and no MLIR at all, defined or needed: every symbol of the static
# and the dynamic symbol tables (the C API is all that is exported; the rest
# is in .symtab). The core must have a .symtab to check (not stripped), and
# the pattern must find LLVM in libkvarn.so, or this checks nothing.
symbols() { nm -C "$1" 2>/dev/null; nm -C -D "$1" 2>/dev/null; }
forbidden='llvm::|mlir::'
[ "$(symbols "$core" | grep -c 'kvarn::' || true)" -gt 0 ] ||
  fail "no kvarn:: symbols in $core (stripped?): nothing to check"
found=$(symbols "$core" | grep -cE "$forbidden" || true)
[ "$found" = 0 ] || { fail "$found LLVM or MLIR symbols:"; symbols "$core" | grep -E "$forbidden" | head; }
[ "$(symbols "$jit" | grep -cE "$forbidden" || true)" -gt 0 ] ||
  fail "the pattern finds nothing in libkvarn.so either: it checks nothing"
echo "LLVM and MLIR symbols: $found"

bytes=$(stat -L -c %s "$core")
jit_bytes=$(stat -L -c %s "$jit")
echo "size: $bytes bytes (libkvarn.so: $jit_bytes)"
[ "$bytes" -lt $((4 * 1024 * 1024)) ] || fail "larger than 4 MiB"

needed=$(readelf -d "$core" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
echo "needs: $needed"
for lib in $needed; do
  case $lib in
  libstdc++.so.* | libm.so.* | libgcc_s.so.* | libc.so.* | ld-linux*) ;;
  *) fail "needs $lib" ;;
  esac
done
[ "$status" = 0 ] && echo "runtime-core-contents: PASS"
exit $status
