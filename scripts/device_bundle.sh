#!/usr/bin/env bash
# Packs a CUDA build (default build-gpu/, configured with -DCMAKE_CUDA_ARCHITECTURES=90) for a GPU
# machine that has the CUDA driver, runtime and cuBLAS but none of our Debian libraries: the
# stripped test, bench and CLI binaries, ctest's files (they name the build's absolute path), and
# the shared libraries they load that the GPU machine lacks, into .devbundle/bundle.tar.gz.
# scripts/gpu_check.sh unpacks it there at the same absolute path and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/$(basename "$build")"
mkdir -p "$root/lib"
cd "$build"
find . \( -name CTestTestfile.cmake -o -name '*_tests.cmake' -o -name '*_include.cmake' \) -exec cp --parents {} "$root" \;
mapfile -t bins < <(find tests bench src -type f -executable ! -name '*.so' ! -name '*.sh' ! -path '*/CMakeFiles/*')
for b in "${bins[@]}"; do
  cp --parents "$b" "$root"
  strip "$root/$b" 2>/dev/null || true
done
find . -name '*.sh' -path './tests/*' -exec cp --parents {} "$root" \;
find bindings -name 'libstrata.so*' -exec cp -P --parents {} "$root" \;
# Every Debian library the binaries load, except the C / C++ runtime the GPU machine has.
for b in "${bins[@]}"; do ldd "$b" 2>/dev/null; done | awk '/=> \// {print $3}' | sort -u |
  grep -E '^/(usr/)?lib/x86_64-linux-gnu/' |
  grep -vE '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|ld-linux-x86-64)\.so' |
  while read -r lib; do cp -L "$lib" "$root/lib/"; done
cd ..
mkdir -p .devbundle
echo "$(cd "$build" && pwd)" > "$root/ORIGIN"
tar -C "$stage" -czf .devbundle/bundle.tar.gz "$(basename "$build")"
ls -la .devbundle/bundle.tar.gz
