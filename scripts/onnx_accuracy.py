#!/usr/bin/env python3
"""Accuracy of an exported MNIST model on the test set, run by ONNX Runtime.

    MNIST_DIR=path/to/mnist python scripts/onnx_accuracy.py model.onnx [more.onnx ...]

Each model must take `input` float32 [N, 784] (pixels in [0, 1]) and return `logits` [N, 10],
as `cargo run --release --example mnist -- --export-onnx PATH` writes it. The script also runs
`onnx.checker.check_model` on each file. Needs `onnxruntime`, `numpy` and `onnx`.
"""

import gzip
import os
import struct
import sys

import numpy as np
import onnx
import onnxruntime as ort


def read_idx(directory, stem):
    """The array of an IDX file `stem` (plain or `.gz`) in `directory`."""
    for name in (stem, stem + ".gz"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as f:
                data = f.read()
            break
    else:
        raise FileNotFoundError(f"{stem}(.gz) not found in {directory}")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{stem}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{stem}: header says {dims}, body has {body.size} bytes")
    return body.reshape(dims)


def accuracy(model_path, images, labels, batch=1000):
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    hits = 0
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        (logits,) = session.run(["logits"], {"input": x})
        hits += int((logits.argmax(axis=1) == labels[start : start + batch]).sum())
    return hits / len(images)


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    directory = os.environ.get("MNIST_DIR", "data/mnist")
    images = read_idx(directory, "t10k-images-idx3-ubyte")
    labels = read_idx(directory, "t10k-labels-idx1-ubyte").astype(np.int64)
    images = (images.reshape(len(images), 784).astype(np.float32)) / np.float32(255.0)
    for path in sys.argv[1:]:
        onnx.checker.check_model(onnx.load(path), full_check=True)
        acc = accuracy(path, images, labels)
        print(f"{path}: check_model ok, onnxruntime test_accuracy={acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
