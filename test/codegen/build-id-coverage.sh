#!/usr/bin/env bash
# The kernel cache's build id hashes the compiler's sources
# (runtime/CMakeLists.txt, compiler-sources.txt); a kvarn header one of them
# includes, or the lib/ file implementing such a header, that is left out
# would let a changed constant serve stale kernels from the cache. Checks
# the list is closed under both.
#
#   test/codegen/build-id-coverage.sh SOURCE_DIR COMPILER_SOURCES_TXT
set -uo pipefail
src=$1
list=$2
missing=0
while read -r f; do
  [ -f "$f" ] || continue
  for h in $(grep -hoE '#include "kvarn/[A-Za-z0-9_/]+\.h"' "$f" | sed 's/#include "//;s/"$//'); do
    if ! grep -qxF "$src/include/$h" "$list"; then
      echo "build id: $f includes $h, which the build id leaves out"
      missing=$((missing + 1))
    fi
  done
  case "$f" in
  "$src"/include/kvarn/*.h)
    rel=${f#"$src"/include/kvarn/}
    impl=$src/lib/${rel%.h}.cpp
    if [ -f "$impl" ] && ! grep -qxF "$impl" "$list"; then
      echo "build id: $impl implements ${rel}, which the compiler uses, and is left out"
      missing=$((missing + 1))
    fi
    ;;
  esac
done <"$list"
echo "build-id-coverage: $(wc -l <"$list") files, $missing missing"
[ "$missing" -eq 0 ]
