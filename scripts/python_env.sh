#!/usr/bin/env bash
# Makes build/venv: a Python virtual environment with what the Python package's tests and
# benchmark need from PyPI — torch, transformers, safetensors, numpy, pytest — plus
# scikit-build-core, which builds the package (pip install bindings/python). Idempotent: an
# environment that already imports them is left as it is. pip's cache lives in build/pip-cache,
# so a second machine state (CI's build/ kept) installs without downloading.
# Prints the environment's python on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=build/venv
py=$venv/bin/python
mkdir -p build
if [ ! -x "$py" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$py" -c "import torch, transformers, safetensors, numpy, pytest, scikit_build_core" 2>/dev/null; then
  echo "python_env: installing torch, transformers, safetensors, numpy, pytest, scikit-build-core into $venv" >&2
  PIP_CACHE_DIR=build/pip-cache "$py" -m pip install -q --upgrade pip >&2
  PIP_CACHE_DIR=build/pip-cache "$py" -m pip install -q "torch>=2.1" transformers safetensors numpy pytest \
    "scikit-build-core>=0.10" >&2
fi
echo "$PWD/$py"
