#!/usr/bin/env bash
# A rank killed during `mpirun -np 2 strata train --comm-timeout 3`: the survivor reports the
# collective that timed out and exits non-zero within 1.5x the timeout (4.5 s) of the kill —
# tearing down the broken communicator does not wait a second timeout. mpirun is told not to kill
# the job itself (orte_abort_on_non_zero_status 0), so the survivor's own exit is what is timed;
# rank 0 runs under a shell that records its exit status and time (rank 1, the victim, runs bare:
# a wrapper that exits without MPI_Finalize would make mpirun abort the job).
# Usage: rank_death_train_test.sh STRATA MPIEXEC
set -uo pipefail
strata=$1 mpiexec=$2
dir=$(mktemp -d)
mp=""
cleanup() {
  [ -n "$mp" ] && kill -9 "$mp" 2>/dev/null
  pkill -9 -f "$dir/corpus.txt" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
cd "$dir"
python3 - <<'PY'
import random
random.seed(1)
w = "the engine moves params to the device before each step and after".split()
open("corpus.txt", "w").write(" ".join(random.choice(w) for _ in range(60000)))
PY
args=(train --data "$dir/corpus.txt" --layers 2 --channels 64 --heads 2 --seq 32 --steps 1000000 --val-every 0
      --device host --device-memory 16M --comm-timeout 3)
"$mpiexec" --oversubscribe --allow-run-as-root --mca btl self,vader --mca btl_vader_single_copy_mechanism none \
  --mca orte_abort_on_non_zero_status 0 \
  -np 1 bash -c '"$@"; echo "rank $OMPI_COMM_WORLD_RANK rc $? at $(date +%s.%N)" >> exits' rank "$strata" "${args[@]}" : \
  -np 1 "$strata" "${args[@]}" > out.log 2>&1 &
mp=$!
disown "$mp"
for _ in $(seq 1 600); do grep -q "^step " out.log 2>/dev/null && break; sleep 0.1; done
grep -q "^step " out.log || { echo "no training step within 60 s:"; cat out.log; exit 1; }
victim=""
for p in $(pgrep -f "$dir/corpus.txt"); do
  [ "$(ps -o comm= -p "$p")" = "strata" ] || continue
  tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1" && victim=$p
done
[ -n "$victim" ] || { echo "rank 1's strata process not found"; exit 1; }
t0=$(date +%s.%N)
kill -9 "$victim"
for _ in $(seq 1 300); do grep -q "^rank 0 " exits 2>/dev/null && break; sleep 0.05; done
line=$(grep "^rank 0 " exits 2>/dev/null)
[ -n "$line" ] || { echo "the survivor did not exit within 15 s of the kill:"; tail -5 out.log; exit 1; }
rc=$(echo "$line" | awk '{print $4}')
t1=$(echo "$line" | awk '{print $6}')
elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
grep -q "TIMEOUT: MPI .* did not complete within 3000 ms" out.log || { echo "no timeout named in:"; tail -5 out.log; exit 1; }
[ "$rc" != 0 ] || { echo "the survivor exited 0"; exit 1; }
awk -v e="$elapsed" 'BEGIN { exit !(e < 4.5) }' || { echo "the survivor exited $elapsed s after the kill (limit 4.5 s)"; exit 1; }
echo "rank_death_train_test: the survivor exited with status $rc $elapsed s after rank 1 was killed (timeout 3 s)"
