#!/bin/bash
# train under mpirun -np 2 end to end (issue 12, docs/distributed.md), one
# PoCL device per rank:
#  - two ranks with unequal shards print the one-device run's epoch table
#    and test result at the printed precision, once (rank 0 alone prints),
#    and rank 0 alone writes the model, checkpoint and log; so does the
#    default --split auto (the balancer across ranks);
#  - ranks started with different flags stop at start, naming the rank;
#  - an error injected on rank 1 (DYNBLOCKS_TEST_FAIL_STEP) ends both ranks,
#    rank 0 naming rank 1 and the step;
#  - rank 1 SIGKILLed in epoch 1 ends the job (mpirun, no hang), epoch 0's
#    checkpoint is intact, and resuming it on one process gives the
#    uninterrupted run's epoch 1.
# Every mpirun under `timeout 120`: a hang fails the test instead of
# stalling ctest. Usage: mpi_test.sh DYNBLOCKS_BINARY SOURCE_DIR MPIEXEC
set -u
bin=$1 src=$2 mpiexec=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun=(timeout 120 "$mpiexec" --oversubscribe)
python3 "$src/tests/cli/make_idx.py" data 96 32 || exit 1
common=(--data data --widths 4,8 --norm batch --steps 1 --batch 8 --train-size 0 --val-size 16
        --lr 0.1 --epochs 2 --augment)
"$bin" train "${common[@]}" --out one.safetensors --log one.csv >one.txt 2>one.err ||
  { echo "one device failed: $(cat one.err)"; exit 1; }
mkdir two && cd two || exit 1
"${mpirun[@]}" -np 2 "$bin" train "${common[@]}" --data ../data --split 5,3 --out two.safetensors \
  --log two.csv >../two.txt 2>../two.err || { echo "mpirun -np 2 failed: $(cat ../two.err)"; exit 1; }
cd .. || exit 1
strip() { awk '{ $2 = ""; print }' "$1" | sed 's/best model [^)]*//'; }
if ! diff <(strip one.txt) <(strip two.txt); then
  echo "two ranks differ from one device (above; a doubled table means rank 1 printed)"
  exit 1
fi
[ "$(grep -c "2 MPI ranks, shards 5,3" two.err)" = 1 ] || { echo "no single rank line"; cat two.err; exit 1; }
[ "$(ls two)" = "$(printf 'two.csv\ntwo.safetensors\ntwo.safetensors.ckpt\ntwo.svg')" ] ||
  { echo "files: $(ls two)"; exit 1; }
[ "$(wc -l <two/two.csv)" = 3 ] || { echo "log not written once per epoch"; cat two/two.csv; exit 1; }
# --split auto (the default): the balancer across ranks, the same table.
"${mpirun[@]}" -np 2 "$bin" train "${common[@]}" --out auto.safetensors --log auto.csv \
  >auto.txt 2>auto.err || { echo "mpirun -np 2 --split auto failed: $(cat auto.err)"; exit 1; }
grep -q "2 MPI ranks, shards auto" auto.err || { echo "auto not in force"; cat auto.err; exit 1; }
if ! diff <(strip one.txt) <(strip auto.txt); then
  echo "two ranks with --split auto differ from one device (above)"
  exit 1
fi

"${mpirun[@]}" -np 1 "$bin" train "${common[@]}" --out m.safetensors --log m.csv : \
  -np 1 "$bin" train "${common[@]}" --epochs 3 --out m.safetensors --log m.csv >m.txt 2>m.err
rc=$?
[ $rc != 0 ] && [ $rc != 124 ] || { echo "mismatched flags: rc $rc"; exit 1; }
grep -q "rank 1's flags differ from rank 0's" m.err || { echo "no mismatch message"; cat m.err; exit 1; }
[ ! -e m.safetensors ] && [ ! -e m.csv ] || { echo "files written by a refused run"; exit 1; }

"${mpirun[@]}" -np 2 -x DYNBLOCKS_TEST_FAIL_STEP=1:3 "$bin" train "${common[@]}" \
  --out f.safetensors --log f.csv >f.txt 2>f.err
rc=$?
[ $rc != 0 ] && [ $rc != 124 ] || { echo "injected failure: rc $rc"; exit 1; }
grep -q "epoch 0, step 3: rank 1 failed: injected failure at step 3" f.err ||
  { echo "rank 0 did not name rank 1 and the step"; cat f.err; exit 1; }

"${mpirun[@]}" -np 2 -x DYNBLOCKS_TEST_FAIL_STEP=1:14:kill "$bin" train "${common[@]}" \
  --out k.safetensors --log k.csv >k.txt 2>k.err
rc=$?
[ $rc != 0 ] && [ $rc != 124 ] || { echo "SIGKILL: rc $rc"; exit 1; }
grep -q "^    0 " k.txt && ! grep -q "^    1 " k.txt || { echo "not killed in epoch 1"; cat k.txt; exit 1; }
"$bin" train "${common[@]}" --out k.safetensors --log k.csv --resume k.safetensors.ckpt >k2.txt 2>k2.err ||
  { echo "resume on one process failed: $(cat k2.err)"; exit 1; }
if ! diff <(grep "^    1 " one.txt | strip /dev/stdin) <(grep "^    1 " k2.txt | strip /dev/stdin); then
  echo "the resumed epoch 1 differs from the uninterrupted run's (above)"
  exit 1
fi
echo "ok"
