# Sourced on the GPU machine (the `device` tool's run) after scripts/device_bundle.sh packed a
# CUDA build here: unpacks .devbundle/bundle.tar.gz, puts it at the build's original absolute
# path (ctest's files and some tests name it) with the repository at that path's parent, and
# sets LD_LIBRARY_PATH to the carried libraries plus the machine's CUDA runtime and cuBLAS.
repo=$(pwd)
mkdir -p /tmp/devbundle
tar -C /tmp/devbundle -xzf .devbundle/bundle.tar.gz
bdir=$(ls /tmp/devbundle)
origin=$(cat "/tmp/devbundle/$bdir/ORIGIN")
mkdir -p "$(dirname "$(dirname "$origin")")"
[ -e "$(dirname "$origin")" ] || ln -s "$repo" "$(dirname "$origin")"
ln -sfn "/tmp/devbundle/$bdir" "$repo/$bdir"
cublas_dir=$(dirname "$(find /usr/local/cuda*/ /opt /usr/lib -name 'libcublas.so.13*' 2>/dev/null | head -1)")
export LD_LIBRARY_PATH="/tmp/devbundle/$bdir/lib:/usr/local/cuda/lib64:${cublas_dir}:${LD_LIBRARY_PATH:-}"
export STRATA_BUILD="$origin"
echo "gpu_env: build at $origin, cuBLAS from ${cublas_dir}"
