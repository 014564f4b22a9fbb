#!/usr/bin/env bash
# The README's test command (and CI's): installs what is needed, checks the layout of every source
# against .clang-format (scripts/format.sh --check), builds in Release (build/) with
# CUDA sources compiled when nvcc is present, runs the whole suite; then rebuilds the host code
# with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/) and runs the suite again; runs
# the threaded I/O tests (offload/) and the engine, prefetch and overlap tests under
# ThreadSanitizer (build-tsan/; oneTBB's uninstrumented scheduler gets the narrow suppressions of
# tests/tsan/tbb.supp, strata's task bodies the happens-before edges of kernels/cpu/parallel.h);
# and fuzzes the config, manifest, store-index and argument parsers for 30 s each
# (scripts/fuzz.sh, clang + libFuzzer, build-fuzz/). The Python package's tests (tests/python,
# pytest) run inside the Release suite with torch and transformers from PyPI in build/venv
# (scripts/python_env.sh), and the package's wheel is built and imported.
# STRATA_TEST_SANITIZE=0 skips the sanitizer passes; STRATA_TEST_FUZZ_SECONDS sets the fuzzing time
# (0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

scripts/install_deps.sh
scripts/format.sh --check  # every source laid out by .clang-format
py=$(scripts/python_env.sh | tail -n 1)  # build/venv: torch, transformers, pytest for tests/python
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_PYTHON="$py"
cmake --build build
ctest --test-dir build -j"$jobs" --output-on-failure

# The Python package as pip builds it (scikit-build-core: the library inside the wheel), installed
# and imported away from the checkout.
rm -rf build/wheel
"$py" -m pip wheel -q --no-deps --no-build-isolation -w build/wheel -C cmake.define.STRATA_CUDA=OFF bindings/python
"$py" -m pip install -q --force-reinstall --no-deps build/wheel/strata-*.whl
(cd / && "$py" -c "import strata, strata.torch; assert 'site-packages' in str(strata.library_path), strata.library_path; print('wheel ok:', strata.library_path)")

if [ "${STRATA_TEST_SANITIZE:-1}" != "0" ]; then
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATA_SANITIZE=address,undefined \
        -DSTRATA_CUDA=OFF -DSTRATA_BUILD_BENCH=OFF
  cmake --build build-asan
  LSAN_OPTIONS="suppressions=$PWD/tests/asan/lsan.supp" ctest --test-dir build-asan -j"$jobs" --output-on-failure
fi

if [ "${STRATA_TEST_SANITIZE:-1}" != "0" ]; then
  tsan_tests=(common/serial_queue_test offload/aio_engine_test offload/nvme_store_test offload/aligned_buffer_test offload/huge_arena_test offload/device_test
              offload/prefetch_scheduler_test engine/engine_test engine/overlap_test engine/engine_train_test
              engine/engine_faults_test engine/divergence_test engine/nvme_gradients_test engine/speculation_test)
  cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATA_SANITIZE=thread \
        -DSTRATA_CUDA=OFF -DSTRATA_BUILD_BENCH=OFF
  cmake --build build-tsan --target "${tsan_tests[@]#*/}"
  for t in "${tsan_tests[@]}"; do
    echo "== ThreadSanitizer: $t"
    TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/tests/tsan/tbb.supp" "build-tsan/tests/$t" --gtest_brief=1
  done
fi

if [ "${STRATA_TEST_FUZZ_SECONDS:-30}" != "0" ]; then
  scripts/fuzz.sh "${STRATA_TEST_FUZZ_SECONDS:-30}"
fi
