"""An independent PyTorch implementation of a DynamicBlocks network (SPEC §1),
built from a dynblocks spec (SPEC §3) and loaded from a dynblocks model file.

Written from the specification, not from the C sources: it shares no code
with dynblocks. Everything runs in float64 so that, compared with dynblocks'
float32 results, the error measured is dynblocks' own.

    net = DynNet.from_file("model.safetensors")
    logits = net(x, train=False)                     # eval mode: running statistics
    loss = net.loss(x, y)                            # train mode: batch statistics
    loss.backward(); net.params["open.conv.weight"].grad
"""
import json
import struct

import torch
import torch.nn.functional as F

DT = torch.float64

# ---- safetensors, read with the standard library and torch only ------------

_DTYPES = {"F32": torch.float32, "F64": torch.float64, "I32": torch.int32, "I64": torch.int64,
           "F16": torch.float16, "U8": torch.uint8}


def read_safetensors(path):
    """Returns ({name: tensor}, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + hlen
    out = {}
    for name, d in header.items():
        lo, hi = d["data_offsets"]
        dt = _DTYPES[d["dtype"]]
        buf = bytearray(raw[base + lo:base + hi])  # writable copy for frombuffer
        t = torch.frombuffer(buf, dtype=dt) if hi > lo else torch.zeros(0, dtype=dt)
        out[name] = t.reshape(d["shape"]).clone()
    return out, meta


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: torch tensor (F32/F64/I32/I64)}."""
    names = {v: k for k, v in _DTYPES.items()}
    header, chunks, at = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        b = t.numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [at, at + len(b)]}
        chunks.append(b)
        at += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))


# ---- the spec ----------------------------------------------------------------

BUILTIN_TABLEAUX = {
    "euler": ([0.0], [[0.0]], [1.0]),
    "midpoint": ([0.0, 0.5], [[0, 0], [0.5, 0]], [0.0, 1.0]),
    "heun": ([0.0, 1.0], [[0, 0], [1.0, 0]], [0.5, 0.5]),
    "rk3": ([0.0, 0.5, 1.0], [[0, 0, 0], [0.5, 0, 0], [-1.0, 2.0, 0]], [1 / 6, 2 / 3, 1 / 6]),
    "ssprk3": ([0.0, 1.0, 0.5], [[0, 0, 0], [1.0, 0, 0], [0.25, 0.25, 0]], [1 / 6, 1 / 6, 2 / 3]),
    "rk4": ([0.0, 0.5, 0.5, 1.0], [[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1.0, 0]],
            [1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    "rk38": ([0.0, 1 / 3, 2 / 3, 1.0], [[0, 0, 0, 0], [1 / 3, 0, 0, 0], [-1 / 3, 1.0, 0, 0],
                                         [1.0, -1.0, 1.0, 0]], [1 / 8, 3 / 8, 3 / 8, 1 / 8]),
}
BUILTIN_TABLEAUX["rk1"] = BUILTIN_TABLEAUX["euler"]

# Embedded pairs (SPEC §1.5): (c, A, b, b_err, order of b), typed from
# Dormand & Prince (1980) and Bogacki & Shampine (1989).
EMBEDDED = {
    "dopri5": ([0.0, 0.2, 0.3, 0.8, 8 / 9, 1.0, 1.0],
               [[0] * 7, [0.2] + [0] * 6, [3 / 40, 9 / 40] + [0] * 5,
                [44 / 45, -56 / 15, 32 / 9] + [0] * 4,
                [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729] + [0] * 3,
                [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656] + [0] * 2,
                [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0]],
               [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0],
               [5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40],
               5),
    "bosh3": ([0.0, 0.5, 0.75, 1.0], [[0] * 4, [0.5, 0, 0, 0], [0, 0.75, 0, 0],
                                      [2 / 9, 1 / 3, 4 / 9, 0]],
              [2 / 9, 1 / 3, 4 / 9, 0], [7 / 24, 1 / 4, 1 / 3, 1 / 8], 3),
    "heun_euler": ([0.0, 1.0], [[0, 0], [1.0, 0]], [0.5, 0.5], [1.0, 0.0], 2),
}


def embedded(scheme):
    """(c, A, b, b_err, order) of an embedded scheme, or None."""
    if isinstance(scheme, str):
        return EMBEDDED.get(scheme)
    if "b_err" in scheme:
        return scheme["c"], scheme["A"], scheme["b"], scheme["b_err"], scheme["order"]
    return None


def tableau(scheme):
    if scheme in ("leapfrog", "verlet"):  # one evaluation per step at c = 0 (SPEC §1.4)
        return [0], [[0]], [1]
    if isinstance(scheme, str):
        return BUILTIN_TABLEAUX[scheme]
    return scheme["c"], scheme["A"], scheme["b"]


def normalise_spec(spec):
    """Fills the defaults of SPEC §3."""
    s = json.loads(json.dumps(spec))
    blocks = []
    for b in s["blocks"]:
        b = dict(b)
        b.setdefault("act", "relu")
        b.setdefault("kernel", 3)
        b.setdefault("t_controls", b["t_states"])
        blocks.append(b)
    s["blocks"] = blocks
    op = dict(s.get("open", {}))
    op.setdefault("width", blocks[0]["width"])
    op.setdefault("kernel", 3)
    op.setdefault("norm", "batch")
    op.setdefault("act", "relu")
    s["open"] = op
    cn = dict(s.get("connect", {}))
    cn.setdefault("norm", "batch")
    cn.setdefault("act", "relu")
    s["connect"] = cn
    s.setdefault("head_width", blocks[-1]["width"])
    return s


# ---- building pieces -------------------------------------------------------------

def act(name, x):
    if name == "relu":
        return torch.relu(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "leaky_relu":
        return F.leaky_relu(x, 0.01)
    if name == "identity":
        return x
    raise ValueError(name)


TV_EPS = 1e-4
BN_EPS = 1e-5


def norm(kind, x, weight, bias, running_mean, running_var, train):
    """kind none | tv | batch. tv: x / sqrt(Σ_c x² + ε) + β_c per pixel (w fixed at 1)."""
    if kind == "none":
        return x
    if kind == "tv":
        return x / torch.sqrt((x * x).sum(dim=1, keepdim=True) + TV_EPS) + bias.view(1, -1, 1, 1)
    if kind == "batch":
        if train:
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=False)
        else:
            mean, var = running_mean, running_var
        xh = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + BN_EPS)
        return xh * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
    raise ValueError(kind)


def interp_weights(tc, t):
    """(j0, w): θ(t) = (1-w) θ_j0 + w θ_j0+1; constant outside [tc[0], tc[-1]]."""
    J = len(tc)
    if J == 1 or t <= tc[0]:
        return 0, 0.0
    if t >= tc[-1]:
        return J - 1, 0.0
    j = max(i for i in range(J - 1) if tc[i] <= t)
    return j, (t - tc[j]) / (tc[j + 1] - tc[j])


def layer_param_names(layer, norm_kind):
    if layer == "doublesym":
        names = ["conv.weight", "conv.bias", "convt.bias"]
        norms = ["norm"]
    elif layer == "hamiltonian":
        names = ["conv.weight", "convt.bias", "conv.bias"]
        norms = ["norm1", "norm2"]
    else:
        names = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
        norms = ["norm1", "norm2"]
    for n in norms:
        if norm_kind == "batch":
            names.append(n + ".weight")
        if norm_kind != "none":
            names.append(n + ".bias")
    return names, norms


class DynNet:
    """The network of SPEC §1.3 over float64 leaf tensors named as in SPEC §3."""

    def __init__(self, spec, tensors):
        self.spec = normalise_spec(spec)
        self.params = {}
        self.running = {}
        for name, t in tensors.items():
            if name.startswith("train."):
                continue
            t = t.to(DT)
            if name.endswith("running_mean") or name.endswith("running_var"):
                self.running[name] = t
            else:
                self.params[name] = t.clone().requires_grad_(True)

    @classmethod
    def from_file(cls, path):
        tensors, meta = read_safetensors(path)
        return cls(json.loads(meta["dynblocks.spec"]), tensors)

    # one conv + norm + act unit (opening and connecting layers)
    def unit(self, prefix, x, kernel, norm_kind, act_name, train):
        P, R = self.params, self.running
        z = F.conv2d(x, P[prefix + ".conv.weight"], P[prefix + ".conv.bias"], padding=kernel // 2)
        a = norm(norm_kind, z, P.get(prefix + ".norm.weight"), P.get(prefix + ".norm.bias"),
                 R.get(prefix + ".norm.running_mean"), R.get(prefix + ".norm.running_var"), train)
        return act(act_name, a)

    def layer_f(self, blk, th, y, stats_prefix, train):
        """f(y, θ) of SPEC §1.2; th maps 'conv.weight' etc. to interpolated tensors."""
        R = self.running
        kind, nk, an, pad = blk["layer"], blk["norm"], blk["act"], blk["kernel"] // 2

        def N(x, n):
            return norm(nk, x, th.get(n + ".weight"), th.get(n + ".bias"),
                        R.get(f"{stats_prefix}.{n}.running_mean"),
                        R.get(f"{stats_prefix}.{n}.running_var"), train)

        if kind == "doublesym":
            K = th["conv.weight"]
            s = act(an, N(F.conv2d(y, K, th["conv.bias"], padding=pad), "norm"))
            g = F.conv_transpose2d(s, K, th["convt.bias"], padding=pad)
            return -g
        if kind == "double":
            s1 = act(an, N(F.conv2d(y, th["conv1.weight"], th["conv1.bias"], padding=pad), "norm1"))
            return act(an, N(F.conv2d(s1, th["conv2.weight"], th["conv2.bias"], padding=pad), "norm2"))
        if kind == "preact":
            s0 = act(an, y)
            s1 = act(an, N(F.conv2d(s0, th["conv1.weight"], th["conv1.bias"], padding=pad), "norm1"))
            return N(F.conv2d(s1, th["conv2.weight"], th["conv2.bias"], padding=pad), "norm2")
        raise ValueError(kind)

    def adaptive_block(self, blk, theta, y, train, pair):
        """SPEC §1.5, written independently of controller.c: the RMS error
        ratio over the batch, accept at r <= 1, factor
        min(10, max(0.2, 0.9 r^(-1/q))) (>= 1 after an accepted step), Hairer's
        first step, steps ending on t_states and interior control times. The
        step decisions are taken outside autograd; the gradient is that of
        the accepted steps (the "discrete" mode)."""
        c, A, bw, be, q = pair
        rtol, atol = blk.get("rtol", 1e-3), blk.get("atol", 1e-4)
        max_steps = blk.get("max_steps", 100)
        ts, tc = blk["t_states"], blk["t_controls"]
        stops = sorted(set(ts) | {t for t in tc if ts[0] < t < ts[-1]})

        def f(t, v):
            return self.layer_f(blk, theta(t), v, None, train)

        def rms(v, scale):
            return (v / scale).pow(2).mean().sqrt().item()

        with torch.no_grad():
            scale = atol + rtol * y.abs()
            f0 = f(stops[0], y)
            d0, d1 = rms(y, scale), rms(f0, scale)
            h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
            f1 = f(stops[0] + h0, y + h0 * f0)
            d2 = rms(f1 - f0, scale) / h0
            m = max(d1, d2)
            h1 = max(1e-6, h0 * 1e-3) if m <= 1e-15 else (0.01 / m) ** (1 / q)
            h = min(100 * h0, h1, stops[-1] - stops[0])
        t, nxt, tries = stops[0], 1, 0
        while nxt < len(stops):
            if tries >= max_steps:
                raise RuntimeError("max_steps reached")
            tries += 1
            left = stops[nxt] - t
            cut = h >= left * (1 - 1e-10)
            hs = left if cut else h
            Ks = []
            for i in range(len(c)):
                Yi = y
                for j in range(i):
                    if A[i][j] != 0:
                        Yi = Yi + (hs * A[i][j]) * Ks[j]
                Ks.append(f(t + c[i] * hs, Yi))
            y1, err = y, 0
            for i in range(len(c)):
                if bw[i] != 0:
                    y1 = y1 + (hs * bw[i]) * Ks[i]
                if bw[i] != be[i]:
                    err = err + (hs * (bw[i] - be[i])) * Ks[i]
            with torch.no_grad():
                tol = atol + rtol * torch.maximum(y.abs(), y1.abs())
                r = rms(err, tol)
            ok = r <= 1
            fac = 10.0 if r == 0 else min(10.0, max(0.2, 0.9 * r ** (-1.0 / q)))
            h = hs * (max(1.0, fac) if ok else fac)
            if ok:
                y = y1
                if cut:
                    t = stops[nxt]
                    nxt += 1
                else:
                    t = t + hs
        return y

    def hamiltonian_half(self, blk, th, x, half, stats_prefix, train):
        """SPEC §1.4: half 0 σ(N₁(Kᵀ x + b₁)), half 1 σ(N₂(K x + b₂))."""
        R, pad, n = self.running, blk["kernel"] // 2, "norm1" if half == 0 else "norm2"
        K = th["conv.weight"]
        if half == 0:
            z = F.conv_transpose2d(x, K, th["convt.bias"], padding=pad)
        else:
            z = F.conv2d(x, K, th["conv.bias"], padding=pad)
        a = norm(blk["norm"], z, th.get(n + ".weight"), th.get(n + ".bias"),
                 R.get(f"{stats_prefix}.{n}.running_mean"), R.get(f"{stats_prefix}.{n}.running_var"),
                 train)
        return act(blk["act"], a)

    def reversible(self, b, blk, theta, y, train):
        """leapfrog and verlet of SPEC §1.4, written from the formulas there."""
        ts = blk["t_states"]
        if blk["scheme"] == "verlet":
            z = torch.zeros_like(y)
            for k in range(len(ts) - 1):
                h, th, sp = ts[k + 1] - ts[k], theta(ts[k]), f"blocks.{b}.steps.{k}.stages.0"
                z = z - h * self.hamiltonian_half(blk, th, y, 0, sp, train)
                y = y + h * self.hamiltonian_half(blk, th, z, 1, sp, train)
            return y
        prev = None
        for k in range(len(ts) - 1):
            h = ts[k + 1] - ts[k]
            f = self.layer_f(blk, theta(ts[k]), y, f"blocks.{b}.steps.{k}.stages.0", train)
            if k == 0:
                nxt = y + 0.5 * h * h * f
            else:
                hp = ts[k] - ts[k - 1]
                nxt = y + (h / hp) * (y - prev) + 0.5 * h * (h + hp) * f
            prev, y = y, nxt
        return y

    def block(self, b, y, train):
        blk = self.spec["blocks"][b]
        pair = embedded(blk["scheme"])
        if pair is not None:
            names, _ = layer_param_names(blk["layer"], blk["norm"])
            tc = blk["t_controls"]
            ctrl = [{n: self.params[f"blocks.{b}.controls.{j}.{n}"] for n in names}
                    for j in range(len(tc))]

            def theta_a(t):
                j0, w = interp_weights(tc, t)
                if w == 0.0:
                    return dict(ctrl[j0])
                return {n: (1 - w) * ctrl[j0][n] + w * ctrl[j0 + 1][n] for n in names}
            return self.adaptive_block(blk, theta_a, y, train, pair)
        c, A, bw = tableau(blk["scheme"])
        ts, tc = blk["t_states"], blk["t_controls"]
        names, _ = layer_param_names(blk["layer"], blk["norm"])
        ctrl = [{n: self.params[f"blocks.{b}.controls.{j}.{n}"] for n in names}
                for j in range(len(tc))]

        def theta(t):
            j0, w = interp_weights(tc, t)
            if w == 0.0:
                return dict(ctrl[j0])
            return {n: (1 - w) * ctrl[j0][n] + w * ctrl[j0 + 1][n] for n in names}

        if blk["scheme"] in ("leapfrog", "verlet"):
            return self.reversible(b, blk, theta, y, train)
        for k in range(len(ts) - 1):
            h = ts[k + 1] - ts[k]
            Ks = []
            for i in range(len(c)):
                Yi = y
                for j in range(i):
                    if A[i][j] != 0:
                        Yi = Yi + (h * A[i][j]) * Ks[j]
                t = ts[k] + c[i] * h
                Ks.append(self.layer_f(blk, theta(t), Yi, f"blocks.{b}.steps.{k}.stages.{i}", train))
            for i in range(len(c)):
                if bw[i] != 0:
                    y = y + (h * bw[i]) * Ks[i]
        return y

    def __call__(self, x, train=False):
        s = self.spec
        y = self.unit("open", x, s["open"]["kernel"], s["open"]["norm"], s["open"]["act"], train)
        nb = len(s["blocks"])
        for b in range(nb):
            y = self.block(b, y, train)
            y = self.unit(f"connect.{b}", y, 1, s["connect"]["norm"], s["connect"]["act"], train)
            y = F.avg_pool2d(y, 2) if b + 1 < nb else y.mean(dim=(2, 3))
        return F.linear(y, self.params["linear.weight"], self.params["linear.bias"])

    def loss(self, x, y):
        return F.cross_entropy(self(x, train=True), y)
