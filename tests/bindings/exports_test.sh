#!/usr/bin/env bash
# libstrata.so must export the C API and nothing else: the defined dynamic symbols are exactly the
# names bindings/c/strata.map lists, each under the version node that lists it (as liburing
# versions its symbols), and the soname carries the major version.
# Usage: exports_test.sh LIB MAJOR MAPFILE
set -euo pipefail
lib="$1" major="$2" map="$3"
# "name@@NODE" for every defined symbol of the library, and the same from the version script.
got=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v -E '^STRATA_[0-9.]+$' | sed 's/@@*/@@/' | sort)
want=$(awk '/^STRATA_[0-9.]+ *\{/ {node=$1} /^ *strata_[a-z0-9_]+;/ {gsub(/[ ;]/, ""); print $0 "@@" node}' "$map" | sort)
if [ "$got" != "$want" ]; then
  echo "the library's symbols differ from $map:"
  diff <(echo "$want") <(echo "$got") | sed 's/^</  listed, not exported: /; s/^>/  exported, not listed: /' | grep -v '^---\|^[0-9]' | head -20
  exit 1
fi
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
[ "$soname" = "libstrata.so.$major" ] || { echo "soname is '$soname', want libstrata.so.$major"; exit 1; }
echo "exports ok: $(echo "$got" | wc -l) symbols, each under its version node; soname $soname"
