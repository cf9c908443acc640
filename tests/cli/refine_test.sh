#!/usr/bin/env bash
# Multilevel training end to end (SPEC §4 `train --refine`, `refine`):
# the epoch table marks the refinement and the CSV's last column says it;
# the checkpoint holds the refined grids; a run resumed from a checkpoint
# taken after a refinement continues as the uninterrupted run (same rows,
# same test result), and does not refine again; two replicas refine alike
# (bitwise, checked every epoch, and the one-device table); `dynblocks refine` writes refined models (a finer
# control grid predicts the same logits) and refuses bad flags, grids and
# files by name, writing nothing.
# Usage: refine_test.sh DYNBLOCKS_BINARY SOURCE_DIR
set -u
bin=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
export DYNBLOCKS_TUNE_CACHE="$work/no-tune-cache.txt"
# Debian's python directly: a version manager's shim costs a second per call under load.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
expect_fail() {
  local name=$1 needle=$2
  shift 2
  "$@" >out.txt 2>err.txt
  local rc=$?
  if [ $rc -eq 0 ]; then bad "$name: exit 0"; return; fi
  if [ $rc -ge 128 ]; then bad "$name: killed by signal $((rc - 128))"; return; fi
  if grep -qF -- "$needle" err.txt; then ok "$name"; else bad "$name: stderr lacks '$needle': $(cat err.txt)"; fi
}
# grids FILE: every block's t_states and t_controls from a model file's spec.
grids() {
  "$py" - "$1" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]
spec = json.loads(json.loads(b[8:8 + n])["__metadata__"]["dynblocks.spec"])
print(" ".join("%s/%s" % (",".join("%g" % t for t in bl["t_states"]),
                          ",".join("%g" % t for t in bl["t_controls"])) for bl in spec["blocks"]))
PY
}
# The table rows without the seconds column, and the test line without the file name.
strip() { grep -E '^ +[0-9]+\*? |^test' "$1" | awk '{ $2 = ""; print }' | sed 's/best model [^)]*//'; }

"$py" "$src/tests/cli/make_idx.py" data 96 32 || exit 1
common=(--data data --widths 4,8 --norm batch --steps 1 --batch 8 --train-size 0 --val-size 16
        --lr 0.1 --refine 1)

# --- train --refine -------------------------------------------------------------------
if "$bin" train "${common[@]}" --epochs 3 --out a.safetensors --log a.csv >a.txt 2>a.err; then
  ok "train --refine runs"
else
  bad "train --refine: $(cat a.err)"
fi
grep -qE '^   1\* ' a.txt && grep -qE '^    2 ' a.txt && ok "table marks epoch 1 as refined" ||
  bad "no refinement mark: $(cat a.txt)"
grep -q "epoch 1: refined block 1 to 2 steps, 3 control points" a.err && ok "refinement reported" ||
  bad "no refinement line: $(cat a.err)"
[ "$(head -n 1 a.csv | awk -F, '{ print $NF }')" = refined ] &&
  [ "$(tail -n +2 a.csv | awk -F, '{ printf "%s", $NF }')" = 010 ] &&
  ok "csv's last column says which epoch refined" || bad "csv: $(cat a.csv)"
[ "$(grids a.safetensors.ckpt)" = "0,0.5,1/0,0.5,1 0,0.5,1/0,0.5,1" ] &&
  ok "checkpoint holds the refined grids" || bad "checkpoint grids: $(grids a.safetensors.ckpt)"

# Stopped after epoch 1 (refined), resumed to 3: the same rows and test result.
"$bin" train "${common[@]}" --epochs 2 --out b.safetensors --log b.csv >b1.txt 2>b1.err ||
  bad "train to epoch 2: $(cat b1.err)"
if "$bin" train "${common[@]}" --epochs 3 --out b.safetensors --log b.csv \
  --resume b.safetensors.ckpt >b2.txt 2>b2.err; then
  if diff <(strip a.txt | tail -n 2) <(strip b2.txt); then
    ok "resumed after a refinement: same epoch 2 and test result"
  else
    bad "resumed run differs (above)"
  fi
  grep -q "refined" b2.err && bad "resumed run refined again" || ok "resumed run does not refine again"
  [ "$(grids b.safetensors.ckpt)" = "$(grids a.safetensors.ckpt)" ] && ok "resumed grids" ||
    bad "resumed grids: $(grids b.safetensors.ckpt)"
else
  bad "resume: $(cat b2.err)"
fi

# Two replicas (two contexts on one device) refine alike: the trainer checks
# after every epoch that the replicas' tensors are bitwise equal (a run that
# ends well passed it), the grids are the one-device run's, and so are the
# first two rows (refinement included) at the printed precision. Later rows
# may drift in the last digit: two shards sum f32 gradients in another
# order (1e-4 parameter differences after 3 epochs, with or without
# --refine); devices_test.sh compares 2 epochs for the same reason.
if "$bin" train "${common[@]}" --epochs 3 --devices 0,0 --out c.safetensors --log c.csv \
  >c.txt 2>c.err; then
  diff <(strip a.txt | head -n 2) <(strip c.txt | head -n 2) && ok "two replicas refine as one device" ||
    bad "two replicas differ from one device (above)"
  [ "$(grids c.safetensors.ckpt)" = "$(grids a.safetensors.ckpt)" ] && ok "two replicas' grids" ||
    bad "two replicas' grids: $(grids c.safetensors.ckpt)"
else
  bad "train --devices --refine: $(cat c.err)"
fi

# --- refine ----------------------------------------------------------------------------
if "$bin" refine --model a.safetensors --factor 2 --out r.safetensors 2>r.err; then
  want=$(grids a.safetensors | "$py" -c '
import sys
def half(g):
    t = [float(x) for x in g.split(",")]
    out = [v for a, b in zip(t, t[1:]) for v in (a, a + (b - a) / 2)] + [t[-1]]
    return ",".join("%g" % v for v in out)
print(" ".join("/".join(half(g) for g in bl.split("/")) for bl in sys.stdin.read().split()))')
  [ "$(grids r.safetensors)" = "$want" ] && ok "refine --factor 2 halves every interval" ||
    bad "refine grids: $(grids r.safetensors), want $want"
else
  bad "refine --factor: $(cat r.err)"
fi
"$py" - <<'PY'
import json, random, struct
random.seed(5)
xs = b"".join(struct.pack("<f", random.uniform(-1, 1)) for _ in range(4 * 64))
h = json.dumps({"x": {"dtype": "F32", "shape": [4, 1, 8, 8], "data_offsets": [0, len(xs)]}}).encode()
open("batch.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + xs)
PY
# The best model may be the coarse one of epoch 0; the checkpoint is refined.
m=a.safetensors.ckpt
# Finer control grids only (the state grids stay): the same function θ(t).
if "$bin" refine --model $m --t-controls 0,0.25,0.5,0.75,1 --out k.safetensors 2>k.err &&
  "$bin" predict --model $m --input batch.safetensors --out l1.safetensors 2>>k.err &&
  "$bin" predict --model k.safetensors --input batch.safetensors --out l2.safetensors 2>>k.err; then
  [ "$(grids k.safetensors)" = "0,0.5,1/0,0.25,0.5,0.75,1 0,0.5,1/0,0.25,0.5,0.75,1" ] &&
    ok "refine --t-controls keeps the state grids" || bad "k grids: $(grids k.safetensors)"
  "$py" - <<'PY' && ok "finer control grid predicts the same logits" || bad "refined logits differ"
import json, struct
def logits(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    s, e = h["logits"]["data_offsets"]; d = b[8 + n + s:8 + n + e]
    return struct.unpack("<%df" % (len(d) // 4), d)
a, b = logits("l1.safetensors"), logits("l2.safetensors")
m = max(abs(x) for x in a)
# float32: the new control points are θ(t) rounded to float (2^-24 relative
# each) and θ at the stage times is interpolated from them: ~ulps per
# parameter through a few layers; 1e-5 relative is ~100 ulps of logits of order 1.
d = max(abs(x - y) for x, y in zip(a, b))
print("max logit change %.3g (largest logit %.3g)" % (d, m))
raise SystemExit(0 if d <= 1e-5 * max(1, m) else 1)
PY
else
  bad "refine --t-controls: $(cat k.err)"
fi
"$bin" refine --model $m --t-states 0,0.25,1 --block 0 --out s.safetensors 2>s.err &&
  [ "$(grids s.safetensors)" = "0,0.25,1/0,0.25,1 0,0.5,1/0,0.5,1" ] && ok "refine --block 0 --t-states" ||
  bad "refine --block: $(cat s.err) $(grids s.safetensors 2>&1)"

expect_fail "refine --factor 0" "--factor must be an integer in 1..4096, got '0'" \
  "$bin" refine --model a.safetensors --factor 0 --out bad.safetensors
expect_fail "refine non-increasing grid" "--t-states must be strictly increasing: 0.5 after 1" \
  "$bin" refine --model a.safetensors --t-states 0,1,0.5 --out bad.safetensors
expect_fail "refine bad number" "--t-controls '0,x': item 2 ('x') is not a finite number" \
  "$bin" refine --model a.safetensors --t-controls 0,x --out bad.safetensors
expect_fail "refine one time" "--t-states needs at least 2 times" \
  "$bin" refine --model a.safetensors --t-states 3 --out bad.safetensors
expect_fail "refine factor and grid" "not both" \
  "$bin" refine --model a.safetensors --factor 2 --t-states 0,1 --out bad.safetensors
expect_fail "refine neither" "give --factor N or --t-states LIST" \
  "$bin" refine --model a.safetensors --out bad.safetensors
expect_fail "refine no --out" "--model and --out are required" \
  "$bin" refine --model a.safetensors --factor 2
expect_fail "refine missing model" "missing.safetensors" \
  "$bin" refine --model missing.safetensors --factor 2 --out bad.safetensors
expect_fail "refine no such block" "--block 5: a.safetensors.ckpt has 2 blocks" \
  "$bin" refine --model $m --t-states 0,2 --block 5 --out bad.safetensors
expect_fail "refine grid too long" "blocks[0]: refining by 4096 gives 8193 state" \
  "$bin" refine --model $m --factor 4096 --out bad.safetensors
[ -e bad.safetensors ] && bad "a refused refine wrote its output" || ok "refused refines write nothing"
expect_fail "train --refine decreasing" "--refine '3,2': epochs must be strictly increasing" \
  "$bin" train --refine 3,2
expect_fail "train --refine not a number" "item 2 ('x') is not an epoch number" \
  "$bin" train --refine 1,x

[ $fails -eq 0 ] && echo "all ok" || echo "$fails failed"
exit $((fails > 0))
