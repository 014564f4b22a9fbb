#!/usr/bin/env bash
# On the GPU machine, after `source scripts/gpu_env.sh`: bench/train for the GPT presets on the
# GPU, each placement beside its bound. JSON lines to $OUT/bench_train.jsonl, tables to stderr.
# First (seconds): the NVMe store's checksums of a chunk's arrays over all the machine's threads,
# one array a thread against the segments (bench/state_checksums; 2 vCPUs cannot show the gap).
# Usage: scripts/gpu_bench.sh PRESET:BATCH:STEPS ...   (default: the three presets)
set -uo pipefail
out=${OUT:-/tmp}
runs=("$@")
[ ${#runs[@]} -eq 0 ] && runs=(gpt2-124m:8:6 gpt-1.3b:4:2 gpt-7b:4:2)  # issue 17: gpt-1.3b and the ~7B preset
"$STRATA_BUILD/bench/strata_bench_state_checksums" --array-kib 65536 | tee -a "$out/bench_state_checksums.jsonl"
for r in "${runs[@]}"; do
  IFS=: read -r preset batch steps <<<"$r"
  echo "== $preset batch $batch x 1024, $steps timed steps" >&2
  rm -rf /tmp/strata_bench_nvme
  "$STRATA_BUILD/bench/strata_bench_train" --nvme-dir /tmp/strata_bench_nvme --preset "$preset" --batch "$batch" --seq 1024 \
    --steps "$steps" --device cuda --rounds 1 --paired 0 --speculate-device 1 | tee -a "$out/bench_train.jsonl"
done
