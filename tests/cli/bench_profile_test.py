#!/usr/bin/python3
"""`dynblocks bench --profile` on a small spec: the family, layer and kernel
tables are printed, every kernel family the step uses appears, the
per-family device times add up to the measured step time within the
bounds below, and the last JSON line carries the roofline keys,
consistent with each other.

Bounds on  device busy / measured step  (both per step, over the same
profiled steps, each of which waits for the device):
  <= 1.02  The context's queue is in order, so its commands run one after
           another; each recorded span (a kernel's start to end, a CLBlast
           call's from the end of a marker enqueued before it to the end of
           its last kernel) lies inside the step's wall-clock interval and
           no two overlap. PoCL stamps events with the host's clock; 2 %
           covers the rounding of the tick counts and of the host timer.
           Counting a command twice, or a CLBlast call from before the
           commands ahead of it were done, would exceed it.
  >= 0.5   What the sum misses is the time between commands: PoCL's
           scheduling of each one, measured at 13-31 us per command on the
           shared 2-core development machine, about 224 commands per step
           of this network (7 ms at most of the ~41 ms step at batch 128, a
           busy fraction of 0.92 there). 0.5 allows gaps three times the
           largest seen. A family whose commands went unrecorded would
           show both here and in the family check.
The bounds are for PoCL's CPU device, the test device of CI."""
import json
import os
import re
import subprocess
import sys
import tempfile

SPEC = {"input": {"channels": 1, "height": 12, "width": 12}, "classes": 4,
        "open": {"width": 4, "norm": "batch"},
        "blocks": [{"width": 4, "layer": "doublesym", "norm": "tv", "scheme": "rk4",
                    "t_states": [0, 1], "t_controls": [0, 1]},
                   {"width": 8, "layer": "double", "norm": "batch", "scheme": "euler",
                    "t_states": [0, 1], "t_controls": [0, 1]}],
        "head_width": 8}
# Every family a training step of SPEC enqueues: convolutions (direct
# kernels or im2col), norms, per-channel sums, pooling, the linear head
# (CLBlast), activations, Runge-Kutta combinations, interpolation and the
# optimiser (param), the loss, and buffer copies and fills.
FAMILIES = {"norm", "channel", "pool", "clblast", "act", "rk", "param", "loss", "buffer"}
LAYERS = {"open", "block 0", "block 1", "connect 0", "connect 1", "head", "optimizer"}
BATCH, STEPS = 128, 3


def table(out, title):
    """Rows of the table whose header starts with `title`: name -> ms/step."""
    rows, on = {}, False
    for line in out.splitlines():
        if line.startswith(title + " "):
            on = True
            continue
        if on:
            if not line.strip() or line.startswith("(") or line.startswith("{"):
                break
            m = re.match(r"(.+?)\s+([0-9.]+)\s+([0-9.]+)%", line)
            if not m:
                sys.exit(f"unparsed row of {title}: {line!r}")
            rows[m.group(1).strip()] = float(m.group(2))
    return rows


def main():
    exe = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "tiny.json")
        with open(spec, "w") as f:
            json.dump(SPEC, f)
        env = dict(os.environ, DYNBLOCKS_TUNE_CACHE=os.path.join(tmp, "tune.txt"))
        r = subprocess.run([exe, "bench", "--spec", spec, "--batch", str(BATCH), "--iters",
                            str(STEPS), "--profile"], capture_output=True, text=True, env=env)
    out = r.stdout
    print(out)
    if r.returncode != 0:
        sys.exit(f"bench --profile failed ({r.returncode}): {r.stderr}")
    fam, layer = table(out, "family"), table(out, "layer")
    if not table(out, "kernel"):
        sys.exit("no kernel table")
    missing = FAMILIES - fam.keys()
    if not {"conv", "convd"} & fam.keys():
        missing.add("conv or convd")
    if missing:
        sys.exit(f"families missing from the profile: {sorted(missing)}")
    if LAYERS - layer.keys():
        sys.exit(f"layers missing from the profile: {sorted(LAYERS - layer.keys())}")
    m = re.search(r"profile: (\d+) training step\(s\), ([0-9.]+) ms/step measured, "
                  r"device busy ([0-9.]+) ms/step", out)
    if not m or int(m.group(1)) != STEPS:
        sys.exit("no profile summary line for the steps asked for")
    measured, busy = float(m.group(2)), float(m.group(3))
    fam_sum, layer_sum = sum(fam.values()), sum(layer.values())
    # The tables print ms/step with 3 decimals: each row rounds by 0.0005 ms.
    slack = 0.0005 * (len(fam) + len(layer))
    if abs(fam_sum - busy) > slack or abs(layer_sum - busy) > slack:
        sys.exit(f"tables sum to {fam_sum:.3f} (families), {layer_sum:.3f} (layers) ms, "
                 f"the summary says {busy:.3f}")
    ratio = fam_sum / measured
    print(f"families sum to {fam_sum:.3f} ms of a measured {measured:.3f} ms step: {ratio:.3f}")
    if not 0.5 <= ratio <= 1.02:
        sys.exit(f"busy / measured = {ratio:.3f}, outside [0.5, 1.02]")
    j = json.loads(out.strip().splitlines()[-1])
    for k in ("train_img_per_s", "infer_img_per_s", "peak_bytes", "conv_flops_per_step",
              "conv_gflops", "peak_gflops", "fraction_of_peak"):
        if k not in j:
            sys.exit(f"JSON line lacks {k}")
    if not (j["conv_flops_per_step"] > 0 and j["peak_gflops"] > 0):
        sys.exit("non-positive FLOP count or peak")
    # conv_gflops = FLOPs/step × steps/s; the line prints 3 decimals.
    want = j["conv_flops_per_step"] * j["train_img_per_s"] / BATCH / 1e9
    if abs(j["conv_gflops"] - want) > 1e-3 + 1e-6 * want:
        sys.exit(f"conv_gflops {j['conv_gflops']} != {want:.4f}")
    if abs(j["fraction_of_peak"] - j["conv_gflops"] / j["peak_gflops"]) > 1e-4:
        sys.exit("fraction_of_peak is not conv_gflops / peak_gflops")


if __name__ == "__main__":
    main()
