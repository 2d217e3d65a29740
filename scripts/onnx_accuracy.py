#!/usr/bin/env python3
"""Accuracy of an exported MNIST model on the test set, run by ONNX Runtime.

    MNIST_DIR=path/to/mnist python scripts/onnx_accuracy.py model.onnx [more.onnx ...]

Each model must take `input` float32 [N, 784] (pixels in [0, 1]) and return `logits` [N, 10],
as `cargo run --release --example mnist -- --export-onnx PATH` writes it. The script also runs
`onnx.checker.check_model` on each file. Needs `onnxruntime`, `numpy` and `onnx`.
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_idx import read_idx  # noqa: E402


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
