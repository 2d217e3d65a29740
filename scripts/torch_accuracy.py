#!/usr/bin/env python3
"""Test accuracy of a Tandem MNIST checkpoint loaded into PyTorch.

    MNIST_DIR=path/to/mnist python scripts/torch_accuracy.py mlp model.safetensors
    MNIST_DIR=path/to/mnist python scripts/torch_accuracy.py cnn lenet.safetensors
    MNIST_DIR=path/to/mnist python scripts/torch_accuracy.py --normalize mlp mixed.safetensors

The checkpoint is what `cargo run --release --example mnist -- --save PATH` writes (any
`--mode`; `--model cnn` for LeNet-5). The script defines the same models as ordinary PyTorch
modules (SimpleNet: fc1, fc2; LeNet-5: conv1, conv2, fc1, fc2, fc3), loads the file with
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
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_idx import read_idx  # noqa: E402


class SimpleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x.view(-1, 1, 28, 28))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def main():
    args = sys.argv[1:]
    normalize = "--normalize" in args
    args = [a for a in args if a != "--normalize"]
    if len(args) != 2 or args[0] not in ("mlp", "cnn"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    kind, path = args
    model = SimpleNet() if kind == "mlp" else LeNet()
    model.load_state_dict(load_file(path), strict=True)
    model.eval()
    directory = os.environ.get("MNIST_DIR", "data/mnist")
    images = read_idx(directory, "t10k-images-idx3-ubyte")
    labels = torch.from_numpy(read_idx(directory, "t10k-labels-idx1-ubyte").astype(np.int64))
    x = torch.from_numpy(images.reshape(len(images), 784).astype(np.float32) / np.float32(255.0))
    if normalize:
        x = (x - 0.1307) / 0.3081
    with torch.no_grad():
        hits = int((model(x).argmax(dim=1) == labels).sum())
    print(f"{path}: torch {torch.__version__} test_accuracy={hits / len(labels):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
