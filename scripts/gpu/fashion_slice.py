"""Cuts the first N images and labels of each Fashion-MNIST split into new IDX
files (gzip, as data/fashion_mnist.cpp reads them), small enough to carry.

    python3 scripts/gpu/fashion_slice.py SRC_DIR DST_DIR N_TRAIN N_TEST
"""
import gzip
import os
import struct
import sys


def cut(src, dst, count):
    with gzip.open(src, "rb") as f:
        data = f.read()
    magic, items = struct.unpack(">II", data[:8])
    dims = magic & 0xFF  # IDX: the low byte of the magic number is the rank
    shape = struct.unpack(">" + "I" * (dims - 1), data[8:4 + 4 * dims])
    if count > items:
        sys.exit(f"fashion_slice: {src} holds {items} items, {count} asked")
    item_bytes = 1
    for d in shape:
        item_bytes *= d
    header = 4 + 4 * dims
    body = data[header:header + count * item_bytes]
    # mtime=0: the same slice gives the same bytes on every run.
    with open(dst, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(struct.pack(">II", magic, count) + data[8:header] + body)


def main():
    src, dst, n_train, n_test = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    os.makedirs(dst, exist_ok=True)
    for split, count in (("train", n_train), ("t10k", n_test)):
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            name = f"{split}-{kind}.gz"
            cut(os.path.join(src, name), os.path.join(dst, name), count)
    print(f"fashion_slice: {n_train} training and {n_test} test images in {dst}")


if __name__ == "__main__":
    main()
