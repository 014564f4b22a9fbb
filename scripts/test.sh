#!/usr/bin/env bash
# The README's test command (and CI's): installs what is needed, builds in Release (build/) with
# CUDA sources compiled when nvcc is present, runs the whole suite; then rebuilds the host code
# with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/) and runs the suite again.
# STRATA_TEST_SANITIZE=0 skips the second pass.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

scripts/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
ctest --test-dir build -j"$jobs" --output-on-failure

if [ "${STRATA_TEST_SANITIZE:-1}" != "0" ]; then
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATA_SANITIZE=address,undefined \
        -DSTRATA_CUDA=OFF -DSTRATA_BUILD_BENCH=OFF
  cmake --build build-asan
  ctest --test-dir build-asan -j"$jobs" --output-on-failure
fi
