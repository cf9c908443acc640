#!/bin/bash
# Training throughput of two MPI ranks against one process (issue 12,
# docs/distributed.md), and the time a SIGKILLed rank takes to end the job.
#
#   bench/scaling_mpi/run.sh [BINARY] [TRAIN_SAMPLES] [BATCH]
#   (defaults: build/dynblocks, 512, 64)
#
# Each process is pinned with taskset to one core of its own (rank r on
# core r) and sees a one-compute-unit PoCL device (POCL_CPU_MAX_CU_NUM=1),
# so two ranks have twice the hardware of one. Networks (a) and (d) of
# bench/specs on synthetic 28x28 data; epoch 1's seconds (epoch 0 pays the
# kernel builds) from the CSV log; ratio = one process's epoch time / two
# ranks' epoch time (ideal 2). The fault run kills rank 1 in epoch 1
# (DYNBLOCKS_TEST_FAIL_STEP=1:STEP:kill) and reports the time from its
# death, taken as the last progress line of the run, to mpirun's exit, with
# mpirun's exit code and whether the checkpoint of epoch 0 still loads.
# Prints `uptime` first: on a shared machine the ratios mean little
# without the load beside them.
set -u
bin=$(realpath "${1:-build/dynblocks}")
ntrain=${2:-512}
batch=${3:-64}
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export POCL_DEVICES=pthread POCL_CPU_MAX_CU_NUM=1 DYNBLOCKS_TUNE_CACHE=$work/tune.txt
uptime
python3 - "$work/data" "$ntrain" <<'PY'
import gzip, os, random, struct, sys
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d)
r = random.Random(5)
for prefix, count in (("train", n + 16), ("t10k", 64)):
    imgs = bytes(r.randrange(256) for _ in range(count * 784))
    labs = bytes(r.randrange(10) for _ in range(count))
    with gzip.open(f"{d}/{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, count, 28, 28) + imgs)
    with open(f"{d}/{prefix}-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 0x801, count) + labs)
PY
# Pins rank r (Open MPI's local rank; 0 without mpirun) to core r.
pin() { exec taskset -c "${OMPI_COMM_WORLD_LOCAL_RANK:-0}" "$@"; }
export -f pin
common=(--data "$work/data" --val-size 16 --train-size "$ntrain" --batch "$batch" --epochs 2 --lr 0.05)
epoch1() { awk -F, 'NR == 3 { print $2 }' "$1"; }
for net in a d; do
  spec="$here/bench/specs/$net.json"
  bash -c 'pin "$@"' _ "$bin" train "${common[@]}" --spec "$spec" --out "$work/one.st" \
    --log "$work/one.csv" >/dev/null 2>"$work/one.err" || { cat "$work/one.err"; exit 1; }
  mpirun -np 2 --oversubscribe --bind-to none bash -c 'pin "$@"' _ "$bin" train "${common[@]}" \
    --spec "$spec" --out "$work/two.st" --log "$work/two.csv" >/dev/null 2>"$work/two.err" ||
    { cat "$work/two.err"; exit 1; }
  t1=$(epoch1 "$work/one.csv") t2=$(epoch1 "$work/two.csv")
  echo "network ($net), $ntrain samples, batch $batch: one process ${t1} s/epoch, two ranks ${t2} s/epoch," \
       "throughput ratio $(python3 -c "print(f'{$t1 / $t2:.2f}')")"
done
# The fault: rank 1 SIGKILLed from outside once epoch 1 has begun; the time
# from the kill to mpirun's exit (every rank gone), and the files then.
mpirun -np 2 --oversubscribe --bind-to none bash -c 'pin "$@"' _ "$bin" train "${common[@]}" \
  --epochs 3 --spec "$here/bench/specs/d.json" --out "$work/k.st" --log "$work/k.csv" \
  >"$work/k.txt" 2>"$work/k.err" &
mpid=$!
until grep -q "epoch 1: batch" "$work/k.err" || ! kill -0 "$mpid" 2>/dev/null; do sleep 0.05; done
victim=
for p in $(ps -o pid= --ppid "$mpid"); do
  if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then victim=$p; fi
done
[ -n "$victim" ] || { echo "fault: rank 1 not found among mpirun's children"; wait "$mpid"; exit 1; }
start=$(date +%s.%N)
kill -KILL "$victim"
wait "$mpid"
rc=$?
end=$(date +%s.%N)
left=$(ps -o pid= --ppid "$mpid" | wc -l)
ckpt="does not load"
"$bin" eval --model "$work/k.st.ckpt" --data "$work/data" >/dev/null 2>&1 && ckpt="loads (dynblocks eval)"
echo "fault: rank 1 SIGKILLed in epoch 1: mpirun exit $rc $(python3 -c "print(f'{$end - $start:.2f}')") s" \
     "after the kill, $left ranks left; epochs logged $(($(wc -l <"$work/k.csv") - 1));" \
     "checkpoint of epoch 0 $ckpt"
