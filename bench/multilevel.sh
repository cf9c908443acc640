#!/usr/bin/env bash
# Multilevel training against training deep from the start, in one script so
# that the two share the machine's load: the same network, data, seed and
# epochs, (a) on the final grid (STEPS steps) for every epoch, (b) from
# STEPS/4 steps refined twice (--refine at 1/3 and 2/3 of the epochs), and
# reports each run's wall time and test accuracy, and the time ratio b/a.
#
#     bench/multilevel.sh [DYNBLOCKS] [EPOCHS] [TRAIN_SIZE] [STEPS]
#     bench/multilevel.sh build/dynblocks 6 3000 8
#
# Fashion-MNIST from Debian's files (dynblocks train's default data). State
# the machine load (printed) with any figure.
set -eu
bin=${1:-build/dynblocks} epochs=${2:-6} size=${3:-3000} steps=${4:-8}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--widths 8,16 --scheme rk4 --batch 64 --train-size "$size" --val-size 1000 --epochs "$epochs"
        --lr 0.05 --seed 3)
r1=$((epochs / 3)) r2=$((2 * epochs / 3))
echo "load before: $(uptime)"
run() {
  local name=$1
  shift
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" train "${common[@]}" "$@" --out "$work/$name.safetensors" --log "$work/$name.csv" \
    >"$work/$name.txt" 2>"$work/$name.err"
  t1=$(date +%s.%N)
  echo "$name $(echo "$t1 - $t0" | bc) $(grep -o 'test accuracy [0-9.]*' "$work/$name.txt")"
}
a=$(run deep --steps "$steps")
b=$(run multilevel --steps $((steps / 4)) --refine "$r1,$r2")
echo "$a"
echo "$b"
echo "time ratio multilevel/deep: $(echo "scale=3; $(echo "$b" | cut -d' ' -f2) / $(echo "$a" | cut -d' ' -f2)" | bc)"
echo "load after: $(uptime)"
