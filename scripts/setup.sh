#!/usr/bin/env bash
# The README's first command: installs what strata needs, builds it (Release, in build/) and runs
# the main job. Until the training demo exists the main job is the CPU Adam benchmark (10^8
# parameters, every dtype combination, beside its streaming limit).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
echo "== main job: bench/cpu_adam (JSON on stdout, table on stderr) =="
./build/bench/strata_bench_cpu_adam "$@"
