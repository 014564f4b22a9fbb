#!/usr/bin/env bash
# Fuzzes the parsers that read what users and files hand strata — the engine config, the checkpoint
# manifest, the NVMe store index, `strata train`'s arguments — with libFuzzer (clang) under
# AddressSanitizer + UndefinedBehaviorSanitizer, in build-fuzz/.
#   scripts/fuzz.sh [SECONDS] [TARGET...]     SECONDS per target (default 30); targets: config
#                                             manifest store_index train_args (default: all)
# The test command runs it briefly; a long hunt is e.g. `scripts/fuzz.sh 3600`. Each target starts
# from its seeds in tests/fuzz/corpus/<target>/ plus what earlier runs found (build-fuzz/corpus/,
# kept between runs); a crash is saved to build-fuzz/crashes/<target>/ and fails the script — fix
# it and add the input to the seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config manifest store_index train_args)

mkdir -p build-fuzz
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATA_FUZZ=ON \
  -DSTRATA_SANITIZE=address,undefined -DSTRATA_CUDA=OFF -DSTRATA_BUILD_BENCH=OFF > build-fuzz/configure.log
cmake --build build-fuzz --target "${targets[@]/#/fuzz_}"

failed=()
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t" "build-fuzz/crashes/$t"
  echo "== fuzz_$t: ${seconds} s"
  if ! "build-fuzz/tests/fuzz/fuzz_$t" "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" -max_total_time="$seconds" \
       -timeout=10 -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 \
       -artifact_prefix="build-fuzz/crashes/$t/" > "build-fuzz/fuzz_$t.log" 2>&1; then
    failed+=("$t")
    tail -40 "build-fuzz/fuzz_$t.log"
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added" "build-fuzz/fuzz_$t.log" | tr '\n' ' '
    echo
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]} (inputs in build-fuzz/crashes/)"
  exit 1
fi
echo "fuzz: no crash in ${targets[*]} (${seconds} s each)"
