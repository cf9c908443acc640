#!/bin/bash
# train --devices end to end: two replicas (two contexts on one device, so
# it runs anywhere; test_parallel covers two devices) with unequal shards
# give the one-device run's epoch table and test result at the printed
# precision, name each device's shard and time, and write the files.
# Usage: devices_test.sh DYNBLOCKS_BINARY SOURCE_DIR
set -u
bin=$1 src=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1
python3 "$src/tests/cli/make_idx.py" data 96 32 || exit 1
common=(--data data --widths 4,8 --norm batch --steps 1 --batch 8 --train-size 0 --val-size 16
        --lr 0.1 --epochs 2 --augment)
"$bin" train "${common[@]}" --out one.safetensors --log one.csv >one.txt 2>one.err ||
  { echo "one device failed: $(cat one.err)"; exit 1; }
"$bin" train "${common[@]}" --devices 0,0 --split 5,3 --out two.safetensors --log two.csv \
  >two.txt 2>two.err || { echo "two replicas failed: $(cat two.err)"; exit 1; }
grep -q "^    1 " one.txt && grep -q "test loss" one.txt || { echo "no table: $(cat one.txt)"; exit 1; }
# The tables without the seconds column.
strip() { awk '{ $2 = ""; print }' "$1" | sed 's/best model [^)]*//'; }
if ! diff <(strip one.txt) <(strip two.txt); then
  echo "two replicas differ from one device (above)"
  exit 1
fi
grep -q "device 1 (.*): shard 3, forward+backward" two.err || { echo "no per-device line"; cat two.err; exit 1; }
[ -s two.safetensors ] && [ -s two.safetensors.ckpt ] || { echo "files missing"; exit 1; }
echo "ok"
