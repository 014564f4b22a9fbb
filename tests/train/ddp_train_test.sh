#!/usr/bin/env bash
# `mpirun -np N strata train --batch B/N` against one rank's `strata train --batch B` on the same
# global batches: every step's loss and the validation loss agree within 2e-3 (the ranks' bf16
# gradients are averaged in another order; the data and the math are the same). Extra arguments
# go to both runs (e.g. --stage 3 --offload-param cpu: the ranks gather the params they use).
# Usage: ddp_train_test.sh STRATA MPIEXEC N [strata train args...]
set -euo pipefail
strata=$1 mpiexec=$2 n=$3
shift 3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
args=(--layers 2 --channels 64 --heads 2 --seq 32 --steps 8 --warmup 2 --val-every 0 --device host --device-memory 16M --seed 3 "$@")
"$strata" train "${args[@]}" --batch 8 > one.log
"$mpiexec" -np "$n" --oversubscribe --allow-run-as-root --mca btl self,vader --mca btl_vader_single_copy_mechanism none \
  "$strata" train "${args[@]}" --batch $((8 / n)) > many.log
grep -q "data parallel: $n ranks, global batch 8" many.log || { echo "no data-parallel line in:"; cat many.log; exit 1; }
losses() { grep -E '^step +[0-9]+(/| *:)' "$1" | sed -E 's/.*loss ([0-9.]+).*/\1/'; }
paste <(losses one.log) <(losses many.log) > pairs
[ "$(wc -l < pairs)" -eq 9 ] || { echo "expected 8 step losses and a validation loss:"; cat pairs; exit 1; }
awk -v n="$n" '{ d = $1 - $2; if (d < 0) d = -d; if (d > 2e-3 || $2 == "") { print "rank count " n ": " $1 " vs " $2; bad = 1 } }
     END { exit bad }' pairs
echo "ddp_train_test ($*): $n ranks agree with one rank on all 9 losses"
