#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into corpus/<target>/: small
valid files and near-valid ones (one field wrong, cut short, gzip'd), so
that the fuzzers start deep inside each format. Deterministic; rerun after
changing a format and commit the result.
Usage: python3 tests/fuzz/make_corpus.py"""
import gzip
import io
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gz(data):
    buf = io.BytesIO()
    # mtime 0: the same bytes on every run
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(data)
    return buf.getvalue()


TINY = {"input": {"channels": 1, "height": 4, "width": 4}, "classes": 3,
        "open": {"width": 2},
        "blocks": [{"width": 2, "layer": "doublesym", "norm": "tv", "scheme": "euler",
                    "t_states": [0, 1]}]}


def specs():
    for name in sorted(os.listdir(os.path.join(ROOT, "specs"))):
        shutil.copy(os.path.join(ROOT, "specs", name), os.path.join(HERE, "corpus", "spec", name))
    out("spec", "tiny.json", json.dumps(TINY))
    full = json.loads(json.dumps(TINY))
    full["blocks"][0].update({"t_controls": [0, 0.5, 1], "act": "relu", "kernel": 3,
                              "scheme": {"c": [0, 1], "A": [[0, 0], [1, 0]], "b": [0.5, 0.5]}})
    full.update({"connect": {"norm": "batch", "act": "relu"}, "head_width": 2, "time_reg": 0.01,
                 "clip": {"min": -1, "max": 1}})
    out("spec", "every-key.json", json.dumps(full))
    bad = json.loads(json.dumps(TINY))
    bad["blocks"][0]["t_states"] = [0, 2, 1]
    out("spec", "decreasing-grid.json", json.dumps(bad))
    out("spec", "trailing-comma.json", json.dumps(TINY)[:-1] + ",}")
    out("spec", "cut.json", json.dumps(TINY)[:40])


def safetensors(tensors, meta=None, pad=True):
    header, data = {}, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, (dt, shape, raw) in tensors:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


def tensors():
    counters = ("I64", [3], struct.pack("<3q", 2, 12345, 7))
    model = [("open.conv.weight", ("F32", [2, 1, 1, 1], f32(0.5, -0.25))),
             ("open.conv.bias", ("F32", [2], f32(0, 0))),
             ("train.counters", counters),
             ("train.input_norm", ("F64", [8], struct.pack("<8d", *([0.5] * 8))))]
    out("safetensors", "model.safetensors",
        safetensors(model, {"dynblocks.spec": json.dumps(TINY), "dynblocks.version": "0.1.0"}))
    out("safetensors", "batch.safetensors",
        safetensors([("x", ("F32", [1, 1, 2, 2], f32(1, 2, 3, 4))), ("y", ("I64", [1], struct.pack("<q", 1)))]))
    out("safetensors", "every-dtype.safetensors", safetensors(
        [(t, (t, [2], b"\0" * (2 * s))) for t, s in
         [("F64", 8), ("I32", 4), ("U8", 1), ("BOOL", 1), ("I8", 1), ("I16", 2), ("U16", 2),
          ("U32", 4), ("U64", 8), ("F16", 2), ("BF16", 2), ("F8_E5M2", 1), ("F8_E4M3", 1),
          ("F8_E8M0", 1), ("C64", 8)]]))
    out("safetensors", "empty-tensor.safetensors",
        safetensors([("e", ("F32", [0, 3], b"")), ("s", ("F32", [], f32(1)))], None))
    out("safetensors", "no-tensors.safetensors", safetensors([], {"k": "v"}))
    good = safetensors(model[:2])
    out("safetensors", "cut.safetensors", good[:-3])
    overlap = bytearray(good)
    i = overlap.index(b"[0,8]")
    overlap[i:i + 5] = b"[0,4]"
    out("safetensors", "gap.safetensors", bytes(overlap))


def idx():
    images = struct.pack(">IIII", 0x803, 2, 3, 2) + bytes(range(12))
    labels = struct.pack(">II", 0x801, 3) + bytes([0, 9, 4])
    # The first byte picks the rank: odd for images (3), even for labels (1).
    out("idx", "images", b"\x01" + images)
    out("idx", "images.gz", b"\x01" + gz(images))
    out("idx", "labels", b"\x00" + labels)
    out("idx", "labels.gz", b"\x00" + gz(labels))
    out("idx", "labels-two-members.gz", b"\x00" + gz(labels[:5]) + gz(labels[5:]))
    out("idx", "images-cut", b"\x01" + images[:-1])
    out("idx", "float-type", b"\x01" + struct.pack(">IIII", 0x0D03, 1, 1, 1) + b"\0\0\0\0")
    out("idx", "bad-label", b"\x00" + struct.pack(">II", 0x801, 1) + b"\x0a")


def cifar():
    rec = bytes([3]) + bytes(i % 256 for i in range(3072))
    rec2 = bytes([9]) + bytes(3072)
    # The first byte says where the two appended files are cut.
    out("cifar", "two-records", b"\x00" + rec + rec2)
    out("cifar", "two-files", b"\x80" + rec + rec2)
    out("cifar", "record.gz", b"\x00" + gz(rec))
    out("cifar", "cut", b"\x00" + rec[:-1])
    out("cifar", "bad-label", b"\x00" + bytes([10]) + rec[1:])


def cli():
    # The index of a command is its first byte (fuzz_cli.c: data[0] % 8).
    cmds = ["train", "devices", "eval", "predict", "grad", "bench", "tune", "fold"]
    cases = {
        "train": ["--epochs", "2", "--batch", "32", "--lr", "0.1@0,0.01@2", "--widths", "4,8",
                  "--steps", "3", "--optim", "adam", "--memory", "checkpoint", "--nesterov",
                  "--val-size", "0.1", "--out", "m.safetensors", "--t-controls", "0,1"],
        "devices": ["--device", "0"],
        "eval": ["--model", "m.safetensors", "--split", "train", "--batch", "10"],
        "predict": ["--model", "m", "--input", "b", "--out", "o"],
        "grad": ["--model", "m", "--input", "b", "--out", "o", "--help"],
        "bench": ["--spec", "s.json", "--batch", "2", "--memory", "store", "--iters", "1"],
        "fold": ["--model", "m", "--out", "f"],
        "tune": ["--spec", "s.json", "--batch", "2", "--cache", "t.txt", "--time-limit", "0.5",
                 "--candidates", "clblast,i_m32n8", "--reps", "1", "--memory", "checkpoint"],
    }
    for i, c in enumerate(cmds):
        out("cli", c, bytes([i]) + "\n".join(cases[c]).encode())
    out("cli", "train-t-states", b"\x00" + "\0".join(["--t-states", "0,0.5,2", "--scheme", "rk4",
                                                     "--head-width", "8", "--norm", "batch"]).encode())
    out("cli", "train-bad-number", b"\x00--batch\nzero")
    # refine is command 9 (fuzz_cli.c: data[0] % 10); train --refine is train's.
    out("cli", "refine", b"\x09" + "\n".join(["--model", "m", "--factor", "2", "--out", "r"]).encode())
    out("cli", "refine-grids", b"\x09" + "\n".join(["--model", "m", "--t-states", "0,0.5,1.5",
                                                     "--t-controls", "0,1.5", "--block", "1",
                                                     "--out", "r"]).encode())
    out("cli", "train-refine", b"\x00" + "\n".join(["--refine", "2,5", "--epochs", "6"]).encode())


if __name__ == "__main__":
    shutil.rmtree(os.path.join(HERE, "corpus"), ignore_errors=True)
    for t in ["spec", "safetensors", "idx", "cifar", "cli"]:
        os.makedirs(os.path.join(HERE, "corpus", t))
    specs()
    tensors()
    idx()
    cifar()
    cli()
