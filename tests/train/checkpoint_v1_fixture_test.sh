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
# Verification must notice a damaged fixture (the test above could not pass on a checker that reads nothing).
printf '\x01' | dd of="$work/ckpt/chunk0.bin" bs=1 seek=100 conv=notrunc status=none
if "$cli" checkpoint verify "$work/ckpt" 2>"$work/err"; then
  echo "verify accepted a damaged chunk file" >&2
  exit 1
fi
grep -q "chunk0.bin" "$work/err" || { echo "the refusal does not name the file:" >&2; cat "$work/err" >&2; exit 1; }
echo "checkpoint v1 fixture: verified, exported identically, damage refused"
