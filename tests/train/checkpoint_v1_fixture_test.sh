#!/usr/bin/env bash
# The committed checkpoint written by strata 0.1 (format version 1) still verifies and exports to
# exactly the fp32 masters 0.1 exported from it (fixtures/checkpoint_v1_masters, made then).
# Usage: checkpoint_v1_fixture_test.sh STRATA_CLI FIXTURES_DIR
set -euo pipefail
cli=$1
fixtures=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$fixtures/checkpoint_v1" "$work/ckpt"
"$cli" checkpoint verify "$work/ckpt"
"$cli" checkpoint export "$work/ckpt" "$work/out" --dtype fp32 --format strata
cmp "$work/out/weights.bin" "$fixtures/checkpoint_v1_masters/weights.bin"
cmp "$work/out/index.json" "$fixtures/checkpoint_v1_masters/index.json"
# Training resumes from it (Adam's three arrays under their v1 names), and a Lion run refuses it by name.
train=(--layers 1 --channels 16 --heads 2 --batch 2 --seq 16 --max-seq 16 --seed 4 --device host --device-memory 16M
       --val-every 0)
cd "$work"  # the default corpus is written here
"$cli" train "${train[@]}" --steps 3 --resume "$work/ckpt" > "$work/resume.log" 2>&1 ||
  { echo "resuming the v1 checkpoint failed:" >&2; cat "$work/resume.log" >&2; exit 1; }
grep -q "loaded (step 2)" "$work/resume.log" || { echo "no load line:" >&2; cat "$work/resume.log" >&2; exit 1; }
grep -qE "^step +3/3" "$work/resume.log" || { echo "step 3 did not run:" >&2; cat "$work/resume.log" >&2; exit 1; }
if "$cli" train "${train[@]}" --steps 3 --optimizer lion --resume "$work/ckpt" > "$work/lion.log" 2>&1; then
  echo "a Lion run loaded Adam's state" >&2
  exit 1
fi
grep -q "optimizer Adam or AdamW (format version 1) (master, exp_avg, exp_avg_sq), the configured optimizer is Lion" "$work/lion.log" ||
  { echo "the refusal does not name both optimizers:" >&2; cat "$work/lion.log" >&2; exit 1; }
# Verification must notice a damaged fixture (the test above could not pass on a checker that reads nothing).
printf '\x01' | dd of="$work/ckpt/chunk0.bin" bs=1 seek=100 conv=notrunc status=none
if "$cli" checkpoint verify "$work/ckpt" 2>"$work/err"; then
  echo "verify accepted a damaged chunk file" >&2
  exit 1
fi
grep -q "chunk0.bin" "$work/err" || { echo "the refusal does not name the file:" >&2; cat "$work/err" >&2; exit 1; }
echo "checkpoint v1 fixture: verified, exported identically, resumed, Lion refused, damage refused"
