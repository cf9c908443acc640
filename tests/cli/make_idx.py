#!/usr/bin/env python3
"""Writes a tiny synthetic IDX data set for the CLI tests: 8x8 images whose
class (0..3) is the bright quadrant, the rest noise in 0..NOISE; training
images gzip'd, labels raw (both file forms get read).
Usage: make_idx.py DIR NTRAIN NTEST [NOISE]"""
import gzip
import os
import random
import struct
import sys


def write(d, prefix, n, noise, r):
    imgs, labs = bytearray(), bytearray()
    for i in range(n):
        c = i % 4
        for y in range(8):
            for x in range(8):
                q = (y >= 4) * 2 + (x >= 4)
                imgs.append(200 if q == c else r.randint(0, noise))
        labs.append(c)
    with gzip.open(f"{d}/{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 8, 8) + bytes(imgs))
    with open(f"{d}/{prefix}-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + bytes(labs))


if __name__ == "__main__":
    d, ntrain, ntest = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    noise = int(sys.argv[4]) if len(sys.argv) > 4 else 60
    os.makedirs(d, exist_ok=True)
    r = random.Random(3)
    write(d, "train", ntrain, noise, r)
    write(d, "t10k", ntest, noise, r)
