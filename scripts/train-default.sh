#!/usr/bin/env bash
# The main job (README): installs what is missing, builds, and trains the
# default network (doublesym + TV, forward Euler, widths 8/16/32) on
# Fashion-MNIST on the default OpenCL device for a few minutes. Writes the
# model, the CSV log and the plot to ./run/ (or $1). Extra arguments after
# the folder go to `dynblocks train`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-run}")
shift || true
"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$root/build" -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
mkdir -p "$out"
cd "$out"
"$root/build/dynblocks" devices
exec "$root/build/dynblocks" train --out model.safetensors --log train.csv "$@"
