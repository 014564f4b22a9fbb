#!/usr/bin/env bash
# `strata train --optimizer TYPE` on every placement (all on the device, optimizer on the host, on
# NVMe, params on the host, params and optimizer on NVMe): the same step losses on every placement
# (the same kernels run on every tier), the training loss falls, and the plan shows the
# optimizer's own arrays (8 bytes per element for Lion and Adagrad). A bogus type is refused naming
# the accepted ones.
# Usage: optimizer_cli_test.sh STRATA TYPE
set -euo pipefail
strata=$1 type=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
args=(--optimizer "$type" --layers 2 --channels 64 --heads 2 --seq 32 --batch 4 --steps 12 --warmup 2 --val-every 0
      --device host --seed 5)
losses() { grep -E '^step +[0-9]+/' "$1" | sed -E 's/.*loss ([0-9.]+).*/\1/'; }
run() {  # name, extra args
  local name=$1
  shift
  "$strata" train "${args[@]}" "$@" > "$name.log" 2>&1 || { echo "$type $name failed:"; cat "$name.log"; exit 1; }
  losses "$name.log" > "$name.losses"
  [ "$(wc -l < "$name.losses")" -eq 12 ] || { echo "$type $name: expected 12 step losses:"; cat "$name.log"; exit 1; }
}
run device --device-memory 64M
run opt_cpu --device-memory 2M --stage 2 --offload-optimizer cpu
run opt_nvme --device-memory 2M --stage 2 --offload-optimizer nvme --nvme-path swap1
run params_cpu --device-memory 1M --stage 3 --offload-optimizer cpu --offload-param cpu --chunk-size 64K
run params_nvme --device-memory 1M --stage 3 --offload-optimizer nvme --offload-param nvme --nvme-path swap2 --chunk-size 64K
for p in opt_cpu opt_nvme params_cpu params_nvme; do
  cmp -s device.losses "$p.losses" || { echo "$type: $p losses differ from all on the device:"; paste device.losses "$p.losses"; exit 1; }
done
first=$(head -1 device.losses) last=$(tail -1 device.losses)
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.05) }' || { echo "$type: loss $first -> $last did not fall"; exit 1; }
grep -qi "optimizer.*$type\|$type.*optimizer" device.log || { echo "$type: the run does not name its optimizer:"; head -30 device.log; exit 1; }
if "$strata" train --optimizer sophia --steps 1 > bad.log 2>&1; then echo "--optimizer sophia was accepted"; exit 1; fi
grep -q "accepted: Adam, AdamW, Lion, Adagrad" bad.log || { echo "the refusal does not list the optimizers:"; cat bad.log; exit 1; }
echo "optimizer_cli_test $type: 5 placements give the same losses ($first -> $last)"
