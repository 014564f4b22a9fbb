#!/usr/bin/env bash
# The README's first command: installs what strata needs, builds it (Release, in build/) and runs
# the main job: a training run through the engine of a model 4x larger than the device budget (an
# MLP on the host-emulated device, params and optimizer offloaded to the host, then to NVMe under
# build/), beside the same model trained in memory, with the loss of every run. `strata train`
# (a GPT on the GPU when there is one) replaces it when it lands.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
echo "== main job: bench/engine_step (JSON on stdout, table on stderr) =="
mkdir -p build/nvme
./build/bench/strata_bench_engine_step --steps 20 --nvme-dir "$PWD/build/nvme" --trace "$PWD/build/engine_trace.json" "$@"
