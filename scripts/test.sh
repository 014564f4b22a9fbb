#!/usr/bin/env bash
# The README's test command (and CI's): installs what is needed, builds in Release (build/) with
# CUDA sources compiled when nvcc is present, runs the whole suite; then rebuilds the host code
# with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/) and runs the suite again, and
# runs the threaded I/O tests (offload/) under ThreadSanitizer (build-tsan/).
# The engine and kernel tests are not run under ThreadSanitizer: oneTBB is not instrumented, so
# TSan cannot see its synchronisation and reports its work splitting as races.
# STRATA_TEST_SANITIZE=0 skips the sanitizer passes.
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

if [ "${STRATA_TEST_SANITIZE:-1}" != "0" ]; then
  tsan_tests=(aio_engine_test nvme_store_test aligned_buffer_test device_test)
  cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATA_SANITIZE=thread \
        -DSTRATA_CUDA=OFF -DSTRATA_BUILD_BENCH=OFF
  cmake --build build-tsan --target "${tsan_tests[@]}"
  for t in "${tsan_tests[@]}"; do
    echo "== ThreadSanitizer: $t"
    TSAN_OPTIONS=halt_on_error=1 "build-tsan/tests/offload/$t" --gtest_brief=1
  done
fi
