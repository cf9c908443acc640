#!/usr/bin/env bash
# Installs the Debian packages dynblocks needs, skipping those already there.
# Usage: scripts/install-deps.sh [extra-package ...]
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo  # OpenCL loader, headers, CPU device
  mesa-opencl-icd                                           # rusticl (llvmpipe): a second implementation
  oclgrind                                                  # OpenCL simulator: kernel checks
  libclblast-dev                                            # GEMMs
  libcmocka-dev                                             # tests
  gfortran                                                  # the Fortran embedding example
  doxygen                                                   # API reference from the headers
  zlib1g-dev libcjson-dev                                   # gzip'd data sets, JSON specs
  dataset-fashion-mnist                                     # the default data set
  python3-torch                                             # parity test against PyTorch (optional)
  clang libclang-rt-dev                                     # libFuzzer targets (scripts/fuzz.sh)
  libopenmpi-dev openmpi-bin                                # MPI ranks (issue 12)
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
