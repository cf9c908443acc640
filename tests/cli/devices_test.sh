#!/bin/bash
# train --devices end to end: two replicas (two contexts on one device, so
# it runs anywhere; test_parallel covers two devices) with unequal shards
# give the one-device run's epoch table and test result at the printed
# precision, name each device's shard and time, and write the files.
# With SPLIT auto (the balancer, which may move the shards between epochs):
# the same table, and every CSV row's shards (its `shards` column) are two
# positive sizes summing to the batch, with a busy time for each.
# Usage: devices_test.sh DYNBLOCKS_BINARY SOURCE_DIR [SPLIT (default 5,3)]
set -u
bin=$1 src=$2 split=${3:-5,3}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1
python3 "$src/tests/cli/make_idx.py" data 96 32 || exit 1
common=(--data data --widths 4,8 --norm batch --steps 1 --batch 8 --train-size 0 --val-size 16
        --lr 0.1 --epochs 2 --augment)
"$bin" train "${common[@]}" --out one.safetensors --log one.csv >one.txt 2>one.err ||
  { echo "one device failed: $(cat one.err)"; exit 1; }
"$bin" train "${common[@]}" --devices 0,0 --split "$split" --out two.safetensors --log two.csv \
  >two.txt 2>two.err || { echo "two replicas failed: $(cat two.err)"; exit 1; }
grep -q "^    1 " one.txt && grep -q "test loss" one.txt || { echo "no table: $(cat one.txt)"; exit 1; }
# The tables without the seconds column.
strip() { awk '{ $2 = ""; print }' "$1" | sed 's/best model [^)]*//'; }
if ! diff <(strip one.txt) <(strip two.txt); then
  echo "two replicas differ from one device (above)"
  exit 1
fi
if [ "$split" = auto ]; then
  grep -q "device 1 (.*): shard [1-7], forward+backward" two.err || { echo "no per-device line"; cat two.err; exit 1; }
  # The columns appended at the end of each row: shards a;b, busy seconds a;b.
  head -1 two.csv | grep -q ",time_reg,shards,busy_seconds" || { echo "csv header: $(head -1 two.csv)"; exit 1; }
  awk -F, 'NR > 1 { split($12, s, ";"); split($13, b, ";");
                    if (length(s) != 2 || s[1] < 1 || s[2] < 1 || s[1] + s[2] != 8 || length(b) != 2) bad = 1; n++ }
           END { exit bad || n != 2 }' two.csv || { echo "csv shards: $(cat two.csv)"; exit 1; }
  awk -F, 'NR > 1 && $12 != "8" { exit 1 }' one.csv || { echo "one-device shards: $(cat one.csv)"; exit 1; }
else
  grep -q "device 1 (.*): shard 3, forward+backward" two.err || { echo "no per-device line"; cat two.err; exit 1; }
  awk -F, 'NR > 1 && $12 != "5;3" { exit 1 }' two.csv || { echo "csv shards: $(cat two.csv)"; exit 1; }
fi
[ -s two.safetensors ] && [ -s two.safetensors.ckpt ] || { echo "files missing"; exit 1; }
echo "ok"
