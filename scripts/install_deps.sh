#!/usr/bin/env bash
# Installs the Debian packages strata builds against; idempotent (installs only what is missing,
# touches the network only then). The CUDA toolkit (nvcc, cuBLAS, NCCL) is not a Debian package
# here: when /usr/local/cuda is present the build uses it, otherwise the CUDA parts are skipped.
set -euo pipefail

packages=(build-essential cmake ninja-build pkg-config git
          libtbb-dev libdnnl-dev libaio-dev libgtest-dev libgmock-dev libbenchmark-dev
          libxxhash-dev nlohmann-json3-dev fio
          ocl-icd-opencl-dev  # oneDNN's CMake config asks for OpenCL (Debian builds it with the OCL GPU runtime)
          libopenmpi-dev openmpi-bin  # comm's MPI backend and the multi-rank tests under mpirun
          clang libclang-rt-14-dev    # the fuzzers (libFuzzer) of scripts/fuzz.sh
          clang-format                # scripts/format.sh (the layout test.sh checks)
          python3-venv)               # build/venv for the Python package (scripts/python_env.sh)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install_deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install_deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
