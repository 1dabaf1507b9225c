#!/usr/bin/env bash
# Builds fedsplit on the GPU machine (LibTorch 2.x with CUDA from the installed PyTorch). The
# Debian packages that machine lacks travel as .debs in .deb/ (see README: GPU) and are unpacked
# into a private root, never into /.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=/tmp/debroot
mkdir -p "$ROOT"
for f in .deb/*.deb; do dpkg -x "$f" "$ROOT"; done
export LD_LIBRARY_PATH="$ROOT/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$ROOT/usr" \
  -DHDF5_INCLUDE_DIRS=/usr/include/hdf5/serial -DHDF5_C_INCLUDE_DIR=/usr/include/hdf5/serial \
  -DHDF5_C_LIBRARY_hdf5=/usr/lib/x86_64-linux-gnu/hdf5/serial/libhdf5.so \
  "$@"
cmake --build build-gpu -j "$(nproc)"
