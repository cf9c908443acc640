"""Training images/s of PyTorch on a dynblocks spec, for comparison with
`dynblocks bench` (the full side-by-side benchmark is issue 5's
bench/compare_torch). Uses the independent model of tests/parity in
float32, with doublesym's transposed convolution either as PyTorch's
conv_transpose2d ("naive") or as conv2d with flipped, transposed weights
("fast", PyTorch's fastest correct formulation here).

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/torch_speed.py specs/reference.json 64
"""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "parity"))
import dynblocks_torch as dt  # noqa: E402

dt.DT = torch.float32
_conv_transpose = F.conv_transpose2d


def fast_conv_transpose(s, K, bias=None, padding=0):
    return F.conv2d(s, K.transpose(0, 1).flip(2, 3), bias, padding=padding)


def random_tensors(spec):
    s = dt.normalise_spec(spec)
    g = torch.Generator().manual_seed(1)
    t = {}

    def conv(name, cout, cin, k):
        t[name + ".weight"] = torch.randn(cout, cin, k, k, generator=g) * (2 / (cin + cout) / k / k) ** 0.5
        t[name + ".bias"] = torch.zeros(cout)

    def bn(name, c, kind):
        if kind == "batch":
            t[name + ".weight"], t[name + ".running_mean"], t[name + ".running_var"] = torch.ones(c), torch.zeros(c), torch.ones(c)
        if kind != "none":
            t[name + ".bias"] = torch.zeros(c)

    conv("open.conv", s["open"]["width"], s["input"]["channels"], s["open"]["kernel"])
    bn("open.norm", s["open"]["width"], s["open"]["norm"])
    for b, blk in enumerate(s["blocks"]):
        w, k = blk["width"], blk["kernel"]
        names, norms = dt.layer_param_names(blk["layer"], blk["norm"])
        for j in range(len(blk["t_controls"])):
            p = f"blocks.{b}.controls.{j}."
            for n in names:
                if n.endswith("conv.weight") or n.endswith("conv1.weight") or n.endswith("conv2.weight"):
                    t[p + n] = torch.randn(w, w, k, k, generator=g) * (1 / w / k / k) ** 0.5
                else:
                    t[p + n] = torch.ones(w) if n.endswith("norm.weight") or n.endswith("1.weight") or n.endswith("2.weight") else torch.zeros(w)
        stages = len(dt.tableau(blk["scheme"])[0])
        for kk in range(len(blk["t_states"]) - 1):
            for i in range(stages):
                for n in norms:
                    if blk["norm"] == "batch":
                        t[f"blocks.{b}.steps.{kk}.stages.{i}.{n}.running_mean"] = torch.zeros(w)
                        t[f"blocks.{b}.steps.{kk}.stages.{i}.{n}.running_var"] = torch.ones(w)
        nxt = s["blocks"][b + 1]["width"] if b + 1 < len(s["blocks"]) else s["head_width"]
        conv(f"connect.{b}.conv", nxt, w, 1)
        bn(f"connect.{b}.norm", nxt, s["connect"]["norm"])
    t["linear.weight"] = torch.randn(s["classes"], s["head_width"], generator=g) * 0.1
    t["linear.bias"] = torch.zeros(s["classes"])
    return t


def train_speed(spec, batch, iters=3):
    net = dt.DynNet(spec, random_tensors(spec))
    s = net.spec
    x = torch.randn(batch, s["input"]["channels"], s["input"]["height"], s["input"]["width"])
    y = torch.randint(0, s["classes"], (batch,))
    times = []
    for i in range(iters + 1):
        t0 = time.perf_counter()
        loss = net.loss(x, y)
        loss.backward()
        with torch.no_grad():
            for p in net.params.values():
                p -= 0.01 * p.grad
                p.grad = None
        if i:
            times.append(time.perf_counter() - t0)
    return batch / (sum(times) / len(times))


def main():
    spec = json.load(open(sys.argv[1]))
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    torch.set_num_threads(os.cpu_count() or 2)
    for name, fn in (("naive", _conv_transpose), ("fast", fast_conv_transpose)):
        F.conv_transpose2d = fn
        print(f"torch {name:5s} train img/s: {train_speed(spec, batch):.1f}")


if __name__ == "__main__":
    main()
