#!/usr/bin/env bash
# A checkpoint written by 4 data-parallel ranks resumes on 2 ranks and on 1: steps 5-8 and the
# validation loss of each resumed run agree within 2e-3 with the uninterrupted 4-rank run (same
# global batches; the ranks' gradient sums differ only in order). Extra arguments go to every
# run (e.g. --stage 2 --offload-optimizer cpu: shards per rank, gathered into the checkpoint).
# Usage: ddp_reshard_test.sh STRATA MPIEXEC [strata train args...]
set -euo pipefail
strata=$1 mpiexec=$2
shift 2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
args=(--layers 2 --channels 64 --heads 2 --seq 32 --steps 8 --warmup 2 --val-every 0 --device host --device-memory 16M --seed 5 "$@")
mpi=("$mpiexec" --oversubscribe --allow-run-as-root --mca btl self,vader --mca btl_vader_single_copy_mechanism none)
"${mpi[@]}" -np 4 "$strata" train "${args[@]}" --batch 2 > straight.log
"${mpi[@]}" -np 4 "$strata" train "${args[@]}" --batch 2 --stop-after 4 --save ck > first.log
"${mpi[@]}" -np 2 "$strata" train "${args[@]}" --batch 4 --resume ck > two.log
"$strata" train "${args[@]}" --batch 8 --resume ck > one.log
losses() { grep -E '^step +[5-8](/| *:)' "$1" | sed -E 's/.*loss ([0-9.]+).*/\1/'; }
for run in two one; do
  paste <(losses straight.log) <(losses $run.log) > pairs
  [ "$(wc -l < pairs)" -eq 5 ] || { echo "$run: expected steps 5-8 and a validation loss:"; cat pairs; cat $run.log; exit 1; }
  awk -v run="$run" '{ d = $1 - $2; if (d < 0) d = -d; if (d > 2e-3 || $2 == "") { print run ": " $1 " vs " $2; bad = 1 } }
       END { exit bad }' pairs
done
grep -q "resumed at step 4" two.log && grep -q "resumed at step 4" one.log
echo "ddp_reshard_test ($*): written by 4 ranks, resumed on 2 and on 1, losses agree"
