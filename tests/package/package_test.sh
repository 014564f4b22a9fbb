#!/usr/bin/env bash
# Installs the build into a scratch prefix, then builds a consumer two ways a host project would:
# CMake find_package(strata) and pkg-config. Both must link and run.
set -euo pipefail
build_dir="$1"
src_dir="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" > "$work/install.log"
libdir=$(find "$work/prefix" -name 'libstrata.so.0' -printf '%h\n' | head -1)
[ -n "$libdir" ] || { echo "install produced no libstrata.so.0"; exit 1; }

cmake -S "$src_dir/consumer" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log"
cmake --build "$work/cmake" > "$work/build.log"
LD_LIBRARY_PATH="$libdir" "$work/cmake/consumer"

export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc "$src_dir/consumer/main.c" $(pkg-config --cflags --libs strata) -o "$work/pc_consumer"
LD_LIBRARY_PATH="$libdir" "$work/pc_consumer"
echo "package ok: find_package and pkg-config consumers ran"
