#!/usr/bin/env bash
# End-to-end checks of the dynblocks tool on a tiny synthetic IDX data set:
# train, resume, eval, predict, grad, bench, and clear failures on bad input.
# Usage: cli_test.sh DYNBLOCKS_BINARY SOURCE_DIR
set -u
bin=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# Built-in CLBlast parameters unless a test names a tuning cache.
export DYNBLOCKS_TUNE_CACHE="$work/no-tune-cache.txt"
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
# expect_fail NAME NEEDLE CMD...: non-zero exit and NEEDLE in stderr
expect_fail() {
  local name=$1 needle=$2
  shift 2
  "$@" >out.txt 2>err.txt
  local rc=$?
  if [ $rc -eq 0 ]; then bad "$name: exit 0"; return; fi
  if [ $rc -ge 128 ]; then bad "$name: killed by signal $((rc - 128))"; return; fi
  if grep -qF -- "$needle" err.txt; then ok "$name"; else bad "$name: stderr lacks '$needle': $(cat err.txt)"; fi
}

# 96 training and 32 test images of 8x8 whose class is the bright quadrant.
python3 "$src/tests/cli/make_idx.py" data 96 32
python3 - <<'PY'
import json, random, struct
random.seed(3)
# batch files: x float32 [4,1,8,8], y int64 [4]
def st(path, tensors):
    header, data = {}, b""
    for name, (dt, shape, raw) in tensors.items():
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
xs = b"".join(struct.pack("<f", random.uniform(-1, 1)) for _ in range(4 * 64))
st("batch.safetensors", {"x": ("F32", [4, 1, 8, 8], xs), "y": ("I64", [4], struct.pack("<4q", 0, 1, 2, 3))})
st("badlabel.safetensors", {"x": ("F32", [4, 1, 8, 8], xs), "y": ("I64", [4], struct.pack("<4q", 0, 1, 2, 11))})
st("wrongshape.safetensors", {"x": ("F32", [4, 1, 7, 8], xs[: 4 * 56 * 4])})
PY

common=(--data data --widths 4,8 --steps 1 --batch 8 --train-size 0 --val-size 16 --lr 0.1)
if "$bin" train "${common[@]}" --epochs 2 --out m.safetensors --log log.csv >train.txt 2>train.err; then
  ok "train runs"
else
  bad "train: $(cat train.err)"
fi
[ "$(wc -l <log.csv)" = 3 ] && ok "csv has a header and 2 rows" || bad "csv rows: $(cat log.csv)"
[ -s log.svg ] && grep -q "<polyline" log.svg && ok "plot written" || bad "no plot"
grep -q "test accuracy" train.txt && ok "final test accuracy printed" || bad "no test accuracy"
if "$bin" train "${common[@]}" --epochs 3 --out m.safetensors --log log.csv --resume m.safetensors.ckpt >resume.txt 2>resume.err; then
  [ "$(wc -l <log.csv)" = 4 ] && ok "resume continues at epoch 2" || bad "resume rows: $(cat log.csv)"
else
  bad "resume: $(cat resume.err)"
fi
"$bin" eval --model m.safetensors --data data >eval.txt 2>&1 && grep -q "accuracy" eval.txt && ok "eval" || bad "eval: $(cat eval.txt)"
"$bin" predict --model m.safetensors --input batch.safetensors --out logits.safetensors 2>p.err && [ -s logits.safetensors ] && ok "predict" || bad "predict: $(cat p.err)"
"$bin" grad --model m.safetensors --input batch.safetensors --out grads.safetensors 2>g.err && grep -q "grad.open.conv.weight" grads.safetensors && grep -q '"loss"' grads.safetensors && grep -q '"grad.x"' grads.safetensors && ok "grad" || bad "grad: $(cat g.err)"
if "$bin" fold --model m.safetensors --out folded.safetensors 2>f.err &&
  "$bin" predict --model folded.safetensors --input batch.safetensors --out logits2.safetensors 2>>f.err; then
  python3 - <<'PY' && ok "folded model predicts the same logits" || bad "fold: logits differ"
import json, struct
def logits(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    s, e = h["logits"]["data_offsets"]; d = b[8 + n + s:8 + n + e]
    return struct.unpack("<%df" % (len(d) // 4), d)
a, b = logits("logits.safetensors"), logits("logits2.safetensors")
m = max(abs(x) for x in a)
# float32 logits of order 1 through a few reordered multiply-adds
raise SystemExit(0 if max(abs(x - y) for x, y in zip(a, b)) <= 1e-5 * max(1, m) else 1)
PY
else
  bad "fold: $(cat f.err)"
fi
"$bin" bench --spec "$src/specs/small.json" --batch 2 --iters 1 >bench.txt 2>&1 && tail -n 1 bench.txt | grep -q '"train_img_per_s"' && ok "bench JSON line" || bad "bench: $(cat bench.txt)"

# A checkpoint's convolution routes are input like any other: set every
# route to 'row' (which 1x1 layers lack) and the resumed run still works.
python3 - m.safetensors.ckpt routes.ckpt <<'PY'
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
s, e = h["train.routes"]["data_offsets"]
for at in range(8 + n + s + 8, 8 + n + e, 16):
    b[at:at + 8] = struct.pack("<q", 1 | 1 << 2 | 1 << 4)
open(sys.argv[2], "wb").write(b)
raise SystemExit(0 if e - s >= 16 else 1)
PY
[ $? -eq 0 ] && ok "checkpoint records convolution routes" || bad "no routes in the checkpoint"
"$bin" train "${common[@]}" --epochs 4 --out r.safetensors --log r.csv --checkpoint r.ckpt --resume routes.ckpt >/dev/null 2>r.err && ok "resume ignores routes that do not fit" || bad "resume with bad routes: $(cat r.err)"

# Divergence: a huge learning rate stops training with a message naming the
# first non-finite tensor and the step; the model and checkpoint are kept.
cp m.safetensors kept.safetensors && cp m.safetensors.ckpt kept.ckpt
expect_fail "divergence is reported" "training diverged at epoch 3, step" "$bin" train "${common[@]}" --lr 1e30 --epochs 5 --out m.safetensors --log log.csv --resume m.safetensors.ckpt
grep -qE "grad\.[a-z0-9_.]+\[[0-9]+\] is (nan|-?inf)|the loss is" err.txt && ok "divergence names the tensor" || bad "divergence message: $(cat err.txt)"
cmp -s kept.safetensors m.safetensors && cmp -s kept.ckpt m.safetensors.ckpt && ok "files kept after divergence" || bad "files changed by a diverged run"

# tune: a tiny spec, the no-override candidate (plus the built-in one), one
# timed batch each; then bench applies the cache, and a broken line in it is
# reported and skipped.
echo '{"input": {"channels": 1, "height": 8, "width": 8}, "classes": 4, "open": {"width": 4}, "blocks": [{"width": 4, "layer": "doublesym", "norm": "tv", "scheme": "euler", "t_states": [0, 1]}]}' >tiny.json
if "$bin" tune --spec tiny.json --batch 2 --cache tune.txt --candidates clblast --reps 1 >tune.out 2>tune.err; then
  grep -q "^gemm.f32.config = " tune.txt && grep -q "^gemm.f32.form.nn.4x128x36 = " tune.txt &&
    grep -q "GEMM time per step" tune.out && ok "tune writes the cache" || bad "tune: $(cat tune.out tune.err)"
  grep -q "^conv.f32.n2.c4x4.k3.8x8 = " tune.txt && grep -q "convolution routes of tiny.json" tune.out &&
    ok "tune times the convolution routes under the tuned GEMMs" || bad "tune routes: $(cat tune.out tune.err)"
else
  bad "tune: $(cat tune.err)"
fi
config=$(sed -n 's/^gemm.f32.config = //p' tune.txt)
DYNBLOCKS_TUNE_CACHE=tune.txt DYNBLOCKS_LOG=info "$bin" bench --spec tiny.json --batch 2 --iters 1 >bench2.txt 2>&1 &&
  grep -q "tuned configuration $config from tune.txt" bench2.txt && ok "bench applies the cache" || bad "bench with cache: $(cat bench2.txt)"
echo "not an entry" >>tune.txt
lines=$(wc -l <tune.txt)
DYNBLOCKS_TUNE_CACHE=tune.txt "$bin" bench --spec tiny.json --batch 2 --iters 1 >bench3.txt 2>&1 &&
  grep -q "tune.txt:$lines: expected 'key = value'" bench3.txt && ok "a broken cache line is reported and skipped" || bad "broken cache: $(cat bench3.txt)"
expect_fail "tune: time limit" "no candidate was compiled, verified and timed" "$bin" tune --spec tiny.json --batch 2 --cache t2.txt --candidates clblast --time-limit 0.001
[ ! -e t2.txt ] && ok "no cache after a failed tune" || bad "t2.txt written"
expect_fail "tune: unknown candidate" "'frob' is not a candidate" "$bin" tune --spec tiny.json --batch 2 --cache t2.txt --candidates clblast,frob

expect_fail "unknown flag" "unknown flag '--epoch'" "$bin" train --epoch 2
expect_fail "bad number" "--batch must be an integer" "$bin" train --batch zero
expect_fail "bad schedule" "bad learning-rate schedule" "$bin" train --data data --lr 0.1@x
expect_fail "missing model" "nope.safetensors" "$bin" eval --model nope.safetensors --data data
head -c 100 m.safetensors >cut.safetensors
expect_fail "truncated model" "cut.safetensors" "$bin" predict --model cut.safetensors --input batch.safetensors --out o.safetensors
echo '{"input": {"channels": 1, "height": 8, "width": 8}, "classes": 10, "open": {"width": 4}, "blocks": [{"width": 4, "layer": "doublesym", "norm": "tv", "scheme": "rk9", "t_states": [0, 1]}]}' >bad.json
expect_fail "bad spec names the key" "bad.json: blocks[0].scheme" "$bin" train --spec bad.json --data data --val-size 16
expect_fail "bad label" "y[3] = 11" "$bin" grad --model m.safetensors --input badlabel.safetensors --out o.safetensors
expect_fail "wrong input shape" "needs 'x' as F32 [N, 1, 8, 8]" "$bin" predict --model m.safetensors --input wrongshape.safetensors --out o.safetensors
expect_fail "missing data" "no-such-dir" "$bin" train --data no-such-dir
[ ! -e o.safetensors ] && ok "no output file after failures" || bad "o.safetensors written"
expect_fail "unwritable output" "/proc/forbidden.safetensors: cannot create" "$bin" predict --model m.safetensors --input batch.safetensors --out /proc/forbidden.safetensors

# Reversible schemes (SPEC §1.4): reconstruct mode with its rec_err column, verlet's layer.
# With --warn-reconstruction 1e-30 the same run warns (rec_err > 0 is asserted below).
if "$bin" train "${common[@]}" --epochs 1 --t-states 0,0.5,1,1.5 --scheme leapfrog --memory reconstruct --log-reconstruction \
    --warn-reconstruction 1e-30 --out lf.safetensors --log lf.csv >lf.txt 2>lf.err; then
  head -1 lf.csv | grep -q ',rec_err$' && grep -q 'rec_err' lf.txt &&
    python3 -c "import csv; r = list(csv.DictReader(open('lf.csv'))); assert 0 < float(r[-1]['rec_err']) < 1e-3" &&
    ok "leapfrog reconstruct logs rec_err" || bad "rec_err column: $(cat lf.csv)"
  grep -qE '^dynblocks train: warning: epoch 0: reconstruction error [0-9.e+-]+ of the rebuilt first state is above --warn-reconstruction 1e-30$' lf.err &&
    ok "rec_err above the bound warns" || bad "no warning at 1e-30: $(cat lf.err)"
else
  bad "leapfrog reconstruct: $(cat lf.err)"
fi
# rec_err < 1e-3 (asserted above): a bound of 1 never warns.
"$bin" train "${common[@]}" --epochs 1 --t-states 0,0.5,1,1.5 --scheme leapfrog --memory reconstruct \
  --warn-reconstruction 1 --out lf1.safetensors --log lf1.csv >/dev/null 2>lf1.err &&
  ! grep -q 'warning' lf1.err && ok "rec_err below the bound is quiet" || bad "bound 1: $(cat lf1.err)"
expect_fail "negative bound" "--warn-reconstruction must be a number" "$bin" train --memory reconstruct --warn-reconstruction -1
expect_fail "bound not a number" "--warn-reconstruction must be a number" "$bin" train --memory reconstruct --warn-reconstruction x
expect_fail "bound needs reconstruct" "--warn-reconstruction needs --memory reconstruct" "$bin" train --warn-reconstruction 1e-3
"$bin" train "${common[@]}" --epochs 1 --scheme verlet --layer hamiltonian --norm batch --memory checkpoint \
  --out vl.safetensors --log vl.csv >/dev/null 2>vl.err && ok "verlet hamiltonian trains" || bad "verlet: $(cat vl.err)"
expect_fail "verlet needs hamiltonian" "blocks[0].layer: scheme 'verlet' takes only layer 'hamiltonian'" "$bin" train "${common[@]}" --scheme verlet
expect_fail "bad memory mode" "--memory must be store, checkpoint or reconstruct" "$bin" train --memory all

if [ "$fails" -eq 0 ]; then echo "cli tests: all passed"; else echo "cli tests: $fails failed"; fi
exit $((fails > 0))
