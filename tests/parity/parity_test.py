#!/usr/bin/python3
"""Parity of dynblocks against an independent PyTorch implementation.

For each spec below: train one short epoch with the dynblocks CLI (so the
weights, norm affine terms and batch-norm running statistics are no longer
their trivial initial values), then run `dynblocks predict` and `dynblocks
grad` on a fixed batch and compare with tests/parity/dynblocks_torch.py
(float64) built from the same model file:

  * predict: eval-mode logits (running statistics);
  * grad: train-mode loss, grad.x and grad.<every trainable tensor>.

The error of a tensor is max|ours - torch| / max|torch| (the whole tensor's
scale, so elements near zero do not dominate). Exit 0 when every error is at
most TOL, 1 otherwise, 77 (ctest SKIP_RETURN_CODE) when torch is missing.

Usage: parity_test.py DYNBLOCKS_BINARY [--keep DIR] [--only NAME] [--mutants]
  --keep DIR   work in DIR and keep it (models, batches, CLI outputs, cli.log)
  --only NAME  run only the specs whose name contains NAME
  --mutants    then plant known errors in the reference, one at a time, and
               fail unless every one is detected (shows the test has teeth)
"""
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time

try:
    import torch
except Exception as e:  # pragma: no cover - the skip path
    print(f"SKIP: PyTorch is not available ({e}); install python3-torch")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dynblocks_torch as dt  # noqa: E402

# dynblocks computes in float32; the reference in float64. Errors are
# relative to each tensor's largest magnitude.
TOL = 1e-4

CUSTOM = {"c": [0, 0.3, 0.8], "A": [[0, 0, 0], [0.3, 0, 0], [0.1, 0.7, 0]], "b": [0.2, 0.3, 0.5]}


def spec(layer, norm, scheme, ts, tc=None, act="relu", open_norm="batch", connect=None,
         kernel=None, size=8, widths=(4, 3), head=None):
    blocks = []
    for b, w in enumerate(widths):
        blk = {"width": w, "layer": layer, "norm": norm, "scheme": scheme, "t_states": ts,
               "act": act}
        if tc is not None:
            blk["t_controls"] = tc
        if kernel is not None:
            blk["kernel"] = kernel
        blocks.append(blk)
    s = {"input": {"channels": 1, "height": size, "width": size}, "classes": 4,
         "open": {"width": widths[0], "norm": open_norm}, "blocks": blocks}
    if connect:
        s["connect"] = connect
    if head:
        s["head_width"] = head
    return s


NONUNI = [0, 0.3, 1.0, 1.6]
# (name, spec): every layer × norm, several schemes, non-uniform grids,
# controls fewer than states and off the grid (stage times outside the
# control range use the end points), a custom tableau.
SPECS = [
    ("doublesym-tv-rk4", spec("doublesym", "tv", "rk4", [0, 1, 2], head=5)),
    ("doublesym-batch-euler-nonuni", spec("doublesym", "batch", "euler", NONUNI, [0.1, 0.9])),
    ("doublesym-none-midpoint-offgrid", spec("doublesym", "none", "midpoint", NONUNI,
                                             [0.2, 0.7, 1.3], act="tanh", open_norm="tv")),
    ("double-none-rk4-nonuni", spec("double", "none", "rk4", [0, 0.4, 1.0], [0.25, 0.8])),
    ("double-tv-ssprk3", spec("double", "tv", "ssprk3", NONUNI, [0, 1.6], act="leaky_relu")),
    ("double-batch-custom", spec("double", "batch", CUSTOM, [0, 0.5, 1.2], [0.3])),
    ("preact-none-euler", spec("preact", "none", "euler", [0, 0.5, 1.5, 2.0],
                               open_norm="none", connect={"norm": "tv", "act": "tanh"})),
    ("preact-tv-custom-offgrid", spec("preact", "tv", CUSTOM, [0, 0.7, 1.0], [-0.2, 0.45, 0.9],
                                      size=7)),
    ("preact-batch-rk4-nonuni-identity", spec("preact", "batch", "rk4", [0, 0.35, 1.0],
                                              [0.2, 0.6, 0.9], act="identity", size=6)),
    ("doublesym-batch-rk38-k5", spec("doublesym", "batch", "rk38", [0, 0.6, 1.0], [0.3, 0.8],
                                     kernel=5, act="leaky_relu", connect={"norm": "none"})),
    # The reversible schemes of SPEC §1.4 on non-uniform grids.
    ("leapfrog-double-tv-nonuni", spec("double", "tv", "leapfrog", NONUNI, [0.2, 0.9], act="tanh")),
    ("leapfrog-doublesym-batch", spec("doublesym", "batch", "leapfrog", [0, 0.5, 1.2, 1.5])),
    ("verlet-hamiltonian-batch-nonuni", spec("hamiltonian", "batch", "verlet", NONUNI,
                                             [0.1, 1.0], act="leaky_relu")),
    ("verlet-hamiltonian-tv", spec("hamiltonian", "tv", "verlet", [0, 0.6, 1.0], act="tanh")),
]


def adaptive(s, **keys):
    for b in s["blocks"]:
        b.update(keys)
    return s


# An adaptive block (SPEC §1.5) against the reference's own dopri5 and
# controller. The f32 and f64 step sequences may differ, and each solution
# and its discrete gradient is within ~rtol of the flow's: at rtol 1e-5 the
# worst gradient tensor (a small one, block 1's first conv1.bias) differed by
# 1.7e-4 of its own scale, at rtol 1e-6 by 1.5e-5 (logits 5e-7), so 1e-6 is
# used. tanh and no norm in the blocks keep the field smooth. One spec only:
# each adds ~30 s (bosh3 on doublesym passed at 4.9e-6, rtol 1e-5).
SPECS += [
    ("double-none-dopri5-adaptive", adaptive(spec("double", "none", "dopri5", [0, 1.0],
                                                  [0, 0.4, 1.0], act="tanh"),
                                             rtol=1e-6, atol=1e-7, max_steps=500)),
]


def write_st(path, tensors):
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def write_idx(d, size, n_train=48, n_test=16):
    """Images whose class (0..3) is the bright quadrant, as IDX files."""
    os.makedirs(d, exist_ok=True)
    rnd = random.Random(size)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs, labs = bytearray(), bytearray()
        half = size // 2
        for i in range(n):
            c = i % 4
            for y in range(size):
                for x in range(size):
                    q = (y >= half) * 2 + (x >= half)
                    imgs.append(200 if q == c else rnd.randint(0, 60))
            labs.append(c)
        with open(f"{d}/{prefix}-images-idx3-ubyte", "wb") as f:
            f.write(struct.pack(">IIII", 0x803, n, size, size) + bytes(imgs))
        with open(f"{d}/{prefix}-labels-idx1-ubyte", "wb") as f:
            f.write(struct.pack(">II", 0x801, n) + bytes(labs))


def write_batch(path, size, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g, dtype=torch.float32)
    y = torch.tensor([i % 4 for i in range(n)], dtype=torch.int64)
    write_st(path, {"x": ("F32", [n, 1, size, size], x.numpy().tobytes()),
                    "y": ("I64", [n], y.numpy().tobytes())})
    return x, y


# A gradient that is zero in exact arithmetic (a convolution bias followed by
# a batch norm: the norm removes any per-channel shift) comes out of float32
# as rounding noise, so its "relative" error is meaningless. Such a tensor
# (reference below ZERO_REL times the largest gradient of the network) is
# judged by its absolute error over that largest gradient instead.
ZERO_REL = 1e-9


def rel_err(ours, ref, floor=0.0):
    ours = ours.to(torch.float64).reshape(ref.shape)
    scale = ref.abs().max().item()
    diff = (ours - ref).abs().max().item()
    if scale <= floor * ZERO_REL:
        scale = floor
    return diff / scale if scale > 0 else diff


def run(cmd, log):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-2000:]}")
    log.write(r.stdout)


def produce(binary, name, s, work, log):
    """Trains a model with the CLI and runs predict and grad; returns the folder."""
    size = s["input"]["height"]
    data = os.path.join(work, f"data{size}")
    if not os.path.isdir(data):
        write_idx(data, size)
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    sp, model = f"{d}/spec.json", f"{d}/m.safetensors"
    with open(sp, "w") as f:
        json.dump(s, f)
    run([binary, "train", "--spec", sp, "--data", data, "--epochs", "1", "--batch", "8",
         "--train-size", "0", "--val-size", "16", "--lr", "0.05", "--seed", "7", "--out", model,
         "--log", f"{d}/log.csv"], log)
    write_batch(f"{d}/batch.safetensors", size)
    run([binary, "predict", "--model", model, "--input", f"{d}/batch.safetensors",
         "--out", f"{d}/logits.safetensors"], log)
    run([binary, "grad", "--model", model, "--input", f"{d}/batch.safetensors",
         "--out", f"{d}/grads.safetensors"], log)
    return d


def compare(d):
    """Returns [(what, error)]: the CLI's outputs in folder d against torch."""
    batch, _ = dt.read_safetensors(f"{d}/batch.safetensors")
    x, y = batch["x"], batch["y"]
    logits, _ = dt.read_safetensors(f"{d}/logits.safetensors")
    grads, _ = dt.read_safetensors(f"{d}/grads.safetensors")

    net = dt.DynNet.from_file(f"{d}/m.safetensors")
    errs = []
    with torch.no_grad():
        ref_logits = net(x.to(dt.DT), train=False)
    errs.append(("logits", rel_err(logits["logits"], ref_logits)))

    xr = x.to(dt.DT).clone().requires_grad_(True)
    loss = net.loss(xr, y)
    loss.backward()
    errs.append(("loss", rel_err(grads["loss"], loss.detach().reshape(1))))
    errs.append(("grad.x", rel_err(grads["grad.x"], xr.grad)))
    expected = {f"grad.{n}" for n in net.params}
    got = {n for n in grads if n.startswith("grad.") and n != "grad.x"}
    if expected != got:
        raise RuntimeError(f"gradient names differ: only ours {sorted(got - expected)}, "
                           f"only torch {sorted(expected - got)}")
    refs = {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in net.params.items()}
    gmax = max(r.abs().max().item() for r in refs.values())
    for n, ref in refs.items():
        errs.append((f"grad.{n}", rel_err(grads[f"grad.{n}"], ref, gmax)))
    # sanity: the model is not trivially at its initialisation
    rs = [v for k, v in net.running.items() if k.endswith("running_mean")]
    if rs and max(v.abs().max().item() for v in rs) == 0:
        raise RuntimeError("running means are all zero: training did not update them")
    return errs


def worst(errs):
    w = max(errs, key=lambda e: e[1] if e[1] == e[1] else float("inf"))
    return w, w[1] <= TOL


# ---- mutants: small errors planted in the reference, each of which the test
# must detect on at least one spec (run with --mutants) ----------------------

def _patch(obj, attr, value):
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    return lambda: setattr(obj, attr, old)


def _negate_b2():
    orig = dt.DynNet.layer_f

    def f(self, blk, th, y, sp, train):
        if blk["layer"] == "doublesym":
            th = dict(th, **{"convt.bias": -th["convt.bias"]})
        return orig(self, blk, th, y, sp, train)
    return _patch(dt.DynNet, "layer_f", f)


def _nearest_control():
    orig = dt.interp_weights
    return _patch(dt, "interp_weights", lambda tc, t: (orig(tc, t)[0], 0.0))


def _stage_time_zero():
    orig = dt.tableau
    return _patch(dt, "tableau", lambda sc: ([0.0] * len(orig(sc)[0]),) + tuple(orig(sc)[1:]))


def _rk4_weights():
    t = dt.BUILTIN_TABLEAUX
    old = t["rk4"]
    t["rk4"] = (old[0], old[1], [0.17, 0.33, 0.33, 0.17])
    return lambda: t.__setitem__("rk4", old)


def _bn_unbiased():
    orig = dt.norm

    def n(kind, x, w, b, rm, rv, train):
        if kind == "batch" and train:
            m, v = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=True)
            return orig(kind, x, w, b, m, v, False)  # eval form with these statistics
        return orig(kind, x, w, b, rm, rv, train)
    return _patch(dt, "norm", n)


def _tv_mean():
    orig = dt.norm

    def n(kind, x, w, b, rm, rv, train):
        if kind == "tv":
            return x / torch.sqrt((x * x).mean(dim=1, keepdim=True) + dt.TV_EPS) + b.view(1, -1, 1, 1)
        return orig(kind, x, w, b, rm, rv, train)
    return _patch(dt, "norm", n)


MUTANTS = [("doublesym b2 sign flipped", _negate_b2),
           ("nearest control instead of linear interpolation", _nearest_control),
           ("stage times t_k instead of t_k + c_i h", _stage_time_zero),
           ("rk4 weights 0.17/0.33", _rk4_weights),
           ("batch norm with unbiased batch variance", _bn_unbiased),
           ("tv norm over the channel mean, not the sum", _tv_mean)]


def run_mutants(dirs):
    missed = 0
    for label, make in MUTANTS:
        restore = make()
        try:
            caught = [n for n, d in dirs if not worst(compare(d))[1]]
        finally:
            restore()
        print(f"{'ok  ' if caught else 'MISS'} mutant '{label}' caught by {len(caught)} spec(s)")
        missed += not caught
    return missed


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        print(__doc__)
        return 2
    binary, keep, only = os.path.abspath(args[0]), None, None
    if "--keep" in args:
        keep = args[args.index("--keep") + 1]
    if "--only" in args:
        only = args[args.index("--only") + 1]
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    work = keep or tempfile.mkdtemp(prefix="dynb-parity-")
    os.makedirs(work, exist_ok=True)
    failed, ran, dirs = 0, 0, []
    t0 = time.time()
    try:
        with open(os.path.join(work, "cli.log"), "w") as log:
            for name, s in SPECS:
                if only and only not in name:
                    continue
                ran += 1
                t1 = time.time()
                try:
                    d = produce(binary, name, s, work, log)
                    dirs.append((name, d))
                    errs = compare(d)
                except Exception as e:
                    print(f"FAIL {name}: {e}")
                    failed += 1
                    continue
                (wname, _), ok = worst(errs)
                fwd = max(e for w, e in errs if w == "logits")
                loss = max(e for w, e in errs if w == "loss")
                grad = max(e for w, e in errs if w.startswith("grad."))
                print(f"{'ok  ' if ok else 'FAIL'} {name:34s} logits {fwd:.1e}  loss {loss:.1e}  "
                      f"grads {grad:.1e} (worst {wname})  {time.time() - t1:.1f}s", flush=True)
                if not ok:
                    failed += 1
                    for w, e in errs:
                        if not e <= TOL:
                            print(f"       {w}: {e:.3e}")
        print(f"parity: {ran} specs, {failed} failed, tolerance {TOL:g}, {time.time() - t0:.1f}s")
        if "--mutants" in args:
            missed = run_mutants(dirs)
            print(f"mutants: {len(MUTANTS) - missed} of {len(MUTANTS)} caught")
            failed += missed
    finally:
        if not keep:
            import shutil
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
