#!/usr/bin/env bash
# libstrata.so must export the C API and nothing else: every defined dynamic symbol starts with
# strata_ (the version node STRATA_0 aside), and the soname carries the major version.
set -euo pipefail
lib="$1"
major="$2"
bad=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v -E '^(strata_|STRATA_[0-9]+$)' || true)
if [ -n "$bad" ]; then
  echo "libstrata exports symbols outside the C API:"; echo "$bad" | head -20; exit 1
fi
count=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -c '^strata_')
[ "$count" -ge 10 ] || { echo "only $count strata_ symbols exported"; exit 1; }
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
[ "$soname" = "libstrata.so.$major" ] || { echo "soname is '$soname', want libstrata.so.$major"; exit 1; }
nm -D --defined-only "$lib" | grep -q 'strata_cpu_adam_step@@STRATA_0' || { echo "symbols are not versioned STRATA_0"; exit 1; }
echo "exports ok: $count strata_ symbols, soname $soname"
