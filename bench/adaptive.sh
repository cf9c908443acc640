#!/bin/bash
# Adaptive blocks (SPEC §1.5, docs/adaptive.md): the gradient error of
# "adjoint" against "discrete", and the time, evaluations and peak memory of
# each, at three tolerances, on a small network (one dopri5 block, 4
# channels, 8x8 inputs, tanh, no norm).
#
# Gradient error: one model trained for an epoch (so the weights are not
# their initial values), rewritten with each (gradient, rtol); `dynblocks
# grad` on one batch of 8; errors are max|g - g_ref| / max|g_ref| over every
# gradient tensor, g_ref the discrete gradient at rtol 1e-10 (the baseline of
# this script: the gradient of the ODE to ~1e-10; the model is f32, so errors
# under ~1e-6 are rounding). Cost: the evaluations `grad` reports for that
# batch (forward evaluations / accepted / rejected steps / backward
# evaluations), the wall time of the `grad` command (process start and
# kernel builds included, so only its ratio to discrete at the same rtol
# means much), and the plan's peak bytes from `dynblocks bench` (fixed at
# plan build; bench's own img/s is not shown: it feeds zero inputs, on
# which the flow is trivial and the steps do not depend on rtol).
#
# Usage: bench/adaptive.sh [BUILD_DIR]   (default: build). Prints `uptime`.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/build}/dynblocks
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export DYNBLOCKS_TUNE_CACHE="$work/no-tune-cache.txt"
echo "load: $(uptime)"
python3 "$here/tests/cli/make_idx.py" data 96 32 >/dev/null
cat > spec.json <<'JSON'
{"input": {"channels": 1, "height": 8, "width": 8}, "classes": 10,
 "open": {"width": 4, "norm": "none", "act": "tanh"},
 "blocks": [{"width": 4, "layer": "double", "norm": "none", "act": "tanh", "scheme": "dopri5",
             "t_states": [0, 1], "t_controls": [0, 0.5, 1], "rtol": 1e-3, "atol": 1e-5,
             "max_steps": 2000}],
 "connect": {"norm": "none", "act": "tanh"}}
JSON
"$bin" train --spec spec.json --data data --batch 8 --train-size 0 --val-size 16 --epochs 1 \
  --out m.safetensors --log log.csv >/dev/null 2>train.err || { cat train.err; exit 1; }
python3 - "$bin" <<'PY'
import json, re, struct, subprocess, sys, time
bin = sys.argv[1]

def read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return h, b[8 + n:]

def write(path, h, data):
    hb = json.dumps(h).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(hb)) + hb + data)

def tensors(path):
    h, data = read(path)
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = struct.unpack("<%df" % ((b - a) // 4), data[a:b])
    return out

h, data = read("m.safetensors")
spec = json.loads(h["__metadata__"]["dynblocks.spec"])

def variant(mode, rtol):
    s = json.loads(json.dumps(spec))
    for blk in s["blocks"]:
        blk["gradient"], blk["rtol"], blk["atol"] = mode, rtol, rtol / 100
    name = "%s-%g" % (mode, rtol)
    hh = json.loads(json.dumps(h))
    hh["__metadata__"]["dynblocks.spec"] = json.dumps(s)
    write(name + ".safetensors", hh, data)
    json.dump(s, open(name + ".json", "w"))
    return name

# One batch of 8 from the training images.
import gzip, random
random.seed(1)
xs = b"".join(struct.pack("<f", random.uniform(-1, 1)) for _ in range(8 * 64))
hb = {"x": {"dtype": "F32", "shape": [8, 1, 8, 8], "data_offsets": [0, len(xs)]},
      "y": {"dtype": "I64", "shape": [8], "data_offsets": [len(xs), len(xs) + 64]}}
write("batch.safetensors", hb, xs + struct.pack("<8q", *range(8)))

def grad(name):
    t0 = time.time()
    r = subprocess.run([bin, "grad", "--model", name + ".safetensors", "--input",
                        "batch.safetensors", "--out", name + ".grad"], capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr)
    return tensors(name + ".grad"), time.time() - t0, r.stderr.strip()

def err(g, ref):
    d = s = 0.0
    for k in ref:
        if k == "loss":
            continue
        for a, b in zip(g[k], ref[k]):
            d, s = max(d, abs(a - b)), max(s, abs(b))
    return d / s

def peak(name):
    r = subprocess.run([bin, "bench", "--spec", name + ".json", "--batch", "8", "--iters", "1"],
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_bytes"]

def counts(line):
    m = re.search(r"forward (\d+) evaluations, (\d+) accepted and (\d+) rejected steps; "
                  r"backward (\d+) evaluations", line)
    return "/".join(m.groups())

ref, _, _ = grad(variant("discrete", 1e-10))
print("%-8s %-9s %12s %12s %8s %12s %s" % ("rtol", "mode", "grad err", "adj-disc",
      "time x", "peak bytes", "evaluations fwd/acc/rej/bwd"))
for rtol in (1e-3, 1e-5, 1e-7):
    gd, td, ld = grad(variant("discrete", rtol))
    ga, ta, la = grad(variant("adjoint", rtol))
    pd, pa = peak("discrete-%g" % rtol), peak("adjoint-%g" % rtol)
    for mode, g, t, l, p in (("discrete", gd, td, ld, pd), ("adjoint", ga, ta, la, pa)):
        print("%-8g %-9s %12.3e %12.3e %8.2f %12d %s" % (
            rtol, mode, err(g, ref), err(ga, gd), t / td, p, counts(l)))
PY
