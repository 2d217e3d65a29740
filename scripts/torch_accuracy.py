#!/usr/bin/env python3
"""Test accuracy of a Tandem MNIST checkpoint loaded into PyTorch.

    MNIST_DIR=path/to/mnist python scripts/torch_accuracy.py mlp model.safetensors
    MNIST_DIR=path/to/mnist python scripts/torch_accuracy.py cnn lenet.safetensors
    MNIST_DIR=path/to/mnist python scripts/torch_accuracy.py --normalize mlp mixed.safetensors

The checkpoint is what `cargo run --release --example mnist -- --save PATH` writes (any
`--mode`; `--model cnn` for LeNet-5). The script builds the same models as ordinary PyTorch
modules (those of `benches/python/bench_torch.py`: the seed's SimpleNet with fc1, fc2, and
LeNet-5 with conv1, conv2, fc1, fc2, fc3), loads the file with
`safetensors.torch.load_file` and `load_state_dict(strict=True)` -- so every name, shape and
dtype must be PyTorch's -- and prints the test accuracy, which must equal the
`test_accuracy=` of the example's summary line. `--mode mixed` trains on inputs normalized with
MNIST's mean and std (0.1307, 0.3081) in its preprocessing graph, so its checkpoints are
evaluated with `--normalize`, which applies the same normalization before the model. Needs
`torch`, `safetensors` and `numpy`.
"""

import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "benches", "python"))
from bench_torch import LeNet, Mlp  # noqa: E402  (the benchmarks' PyTorch models)
from mnist_idx import read_idx  # noqa: E402


def main():
    args = sys.argv[1:]
    normalize = "--normalize" in args
    args = [a for a in args if a != "--normalize"]
    if len(args) != 2 or args[0] not in ("mlp", "cnn"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    kind, path = args
    model = Mlp() if kind == "mlp" else LeNet()
    model.load_state_dict(load_file(path), strict=True)
    model.eval()
    directory = os.environ.get("MNIST_DIR", "data/mnist")
    images = read_idx(directory, "t10k-images-idx3-ubyte")
    labels = torch.from_numpy(read_idx(directory, "t10k-labels-idx1-ubyte").astype(np.int64))
    x = torch.from_numpy(images.reshape(len(images), 784).astype(np.float32) / np.float32(255.0))
    if normalize:
        x = (x - 0.1307) / 0.3081
    if kind == "cnn":
        x = x.view(-1, 1, 28, 28)
    with torch.no_grad():
        hits = int((model(x).argmax(dim=1) == labels).sum())
    print(f"{path}: torch {torch.__version__} test_accuracy={hits / len(labels):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
