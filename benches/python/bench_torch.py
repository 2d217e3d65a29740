"""PyTorch peer benchmarks for the workloads of `benches/modes.rs` (W1, W3, W4, W5, W6).

Optional, not run by CI. Usage (2 threads, like the Rust benchmarks):

    OMP_NUM_THREADS=2 python benches/python/bench_torch.py [--compile]

Systems: `pytorch` (eager, torch.optim.Adam), `pytorch_fused` (Adam(fused=True), W1/W3),
`torch_compile` (W4 chain under torch.compile, only with --compile: compiling takes a while).
Writes `benches/python/results/torch.json`.
"""

import argparse
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import CHAIN, measure, result, write


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def train_step_fn(model, opt, x, y):
    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def training(results):
    g = torch.Generator().manual_seed(0)
    cases = [
        ("W1_mlp_step", "b64", Mlp, (64, 784)),
        ("W1_mlp_step", "b1024", Mlp, (1024, 784)),
        ("W3_lenet_step", "b64", LeNet, (64, 1, 28, 28)),
    ]
    for group, case, cls, shape in cases:
        x = torch.randn(*shape, generator=g)
        y = torch.randint(0, 10, (shape[0],), generator=g)
        for system, fused in [("pytorch", False), ("pytorch_fused", True)]:
            model = cls()
            try:
                opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
            except (TypeError, RuntimeError):
                continue  # fused Adam on CPU needs a recent PyTorch
            results.append(result(group, case, system, measure(train_step_fn(model, opt, x, y))))


def add_chain(x):
    y = x
    for _ in range(CHAIN):
        y = y + x
    return y


def w4(results, compile_chain):
    for case, n in [("n16", 16), ("n1M", 1_000_000)]:
        x = torch.randn(n)
        with torch.no_grad():
            results.append(result("W4_add_chain", case, "pytorch", measure(lambda: add_chain(x))))
            if compile_chain:
                f = torch.compile(add_chain)
                f(x)
                results.append(result("W4_add_chain", case, "torch_compile", measure(lambda: f(x))))


def w5(results):
    for n in [512, 1024, 2048]:
        a, b = torch.randn(n, n), torch.randn(n, n)
        with torch.no_grad():
            results.append(result("W5_matmul", str(n), "pytorch", measure(lambda: a @ b)))


def w6(results):
    model = Mlp().eval()
    x = torch.randn(1, 784)
    with torch.inference_mode():
        results.append(result("W6_mlp_infer", "b1", "pytorch", measure(lambda: model(x))))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compile", action="store_true", help="also time the W4 chain under torch.compile")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    results = []
    training(results)
    w4(results, args.compile)
    w5(results)
    w6(results)
    write("torch", f"torch {torch.__version__}", results)


if __name__ == "__main__":
    main()
