#!/bin/bash
# Epoch time of --split auto against --split equal on two unlike devices
# (docs/distributed.md "Balancer"): PoCL's one-core "basic" device beside its
# multi-core "pthread" device, and PoCL's pthread beside Mesa rusticl's
# llvmpipe. Each pair trains the same small network on the same synthetic
# data (tests/cli/make_idx.py: 8x8 images) with each split; printed: the
# total seconds of the epochs (the CSV's `seconds`, calibration and
# re-splits included), the ratio equal/auto (above 1: auto is faster), and
# auto's shards and busy seconds per epoch. The load (uptime) is printed
# before and after: the devices share the machine's cores with everything
# else, so figures from a loaded machine are ratios, not speeds.
# Usage: bench/balance.sh [BUILD_DIR (default build)] [EPOCHS (default 3)]
set -u
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build} epochs=${2:-3}
bin=$(cd "$build" && pwd)/dynblocks
[ -x "$bin" ] || { echo "no $bin: build first" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1
# 640 training samples at --batch 64: 10 steps per epoch, room for the two
# 3-step calibration windows of the first epoch.
python3 "$src/tests/cli/make_idx.py" data 704 64 || exit 1
common=(--data data --widths 16,32 --norm batch --steps 2 --batch 64 --train-size 0 --val-size 64
        --lr 0.05)

# run NAME SPLIT DEVICES EPOCHS [ENV...]: trains, prints the epoch seconds' sum.
run() {
  local name=$1 split=$2 devices=$3 n=$4
  shift 4
  if ! env "$@" "$bin" train "${common[@]}" --epochs "$n" --devices "$devices" --split "$split" \
      --out "$name.safetensors" --log "$name.csv" >"$name.txt" 2>"$name.err"; then
    echo "$name failed:" >&2
    tail -5 "$name.err" >&2
    return 1
  fi
  awk -F, 'NR > 1 { s += $2 } END { printf "%.1f", s }' "$name.csv"
}

pair() {
  local label=$1 devices=$2
  shift 2
  local eq au
  # One untimed epoch first, so that neither timed run pays for building the
  # kernels at the equal shards (the devices' program caches keep them).
  run "$label-warm" equal "$devices" 1 "$@" >/dev/null || return 1
  eq=$(run "$label-equal" equal "$devices" "$epochs" "$@") || return 1
  au=$(run "$label-auto" auto "$devices" "$epochs" "$@") || return 1
  echo "$label ($devices): equal ${eq} s, auto ${au} s, ratio equal/auto $(awk -v a="$eq" -v b="$au" 'BEGIN { printf "%.2f", a / b }')"
  awk -F, 'NR > 1 { printf "  auto epoch %d: %.1f s, shards %s, busy seconds %s\n", $1, $2, $12, $13 }' "$label-auto.csv"
  awk -F, 'NR > 1 { printf "  equal epoch %d: %.1f s, shards %s, busy seconds %s\n", $1, $2, $12, $13 }' "$label-equal.csv"
}

echo "load before: $(uptime)"
pair pocl-basic-pthread 0,1 POCL_DEVICES="basic pthread"
pair pocl-rusticl pthread,llvmpipe RUSTICL_ENABLE=llvmpipe
echo "load after: $(uptime)"
