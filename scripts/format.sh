#!/usr/bin/env bash
# Formats every C / C++ / CUDA source of the project with the root .clang-format (clang-format 14,
# Debian 12's). --check only reports the files that differ, and fails if there are any.
set -euo pipefail
cd "$(dirname "$0")/.."
cf=$(command -v clang-format-14 || command -v clang-format || true)
[ -n "$cf" ] || { echo "format.sh: clang-format not found (scripts/install_deps.sh installs it)" >&2; exit 1; }
mapfile -t files < <(git ls-files '*.h' '*.cpp' '*.cu' '*.c' '*.inc' ':!:tests/fuzz/corpus/*')
if [ "${1:-}" = "--check" ]; then
  bad=()
  for f in "${files[@]}"; do "$cf" --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f"); done
  if [ ${#bad[@]} -gt 0 ]; then
    echo "format.sh: ${#bad[@]} files differ from .clang-format (run scripts/format.sh): ${bad[*]}" >&2
    exit 1
  fi
  echo "format.sh: ${#files[@]} files formatted"
  exit 0
fi
"$cf" -i "${files[@]}"
