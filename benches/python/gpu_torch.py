"""PyTorch on CUDA for the workloads of examples/gpu_bench.rs (issue 7's table).

Prints `name<TAB>median_ms<TAB>extra` lines with the same names as gpu_bench's eager rows
without the `/eager` suffix, so scripts/gpu-check.sh can put them side by side. Optional: needs
PyTorch with CUDA; not run by CI.

    python3 benches/python/gpu_torch.py
"""

import time

import torch

# The same model definitions and training step as the CPU comparison script.
from bench_torch import LeNet, Mlp, train_step_fn


def median_ms(fn, warm=5, reps=30):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]


def report(name, ms, extra=""):
    print(f"{name}\t{ms:.4f}\t{extra}", flush=True)


def matmul(dtype, label):
    n = 4096
    a = torch.randn(n, n, device="cuda").to(dtype)
    b = torch.randn(n, n, device="cuda").to(dtype)
    ms = median_ms(lambda: a @ b, warm=3, reps=10)
    report(f"matmul_{label}_4096", ms, f"{2 * n**3 / (ms * 1e-3) / 1e12:.1f} TFLOP/s")


def step_bench(name, model, x, y):
    model = model.cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    report(name, median_ms(train_step_fn(model, opt, x, y)))


def main():
    # Full-precision f32 products, as Tandem's default (TF32 off).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    matmul(torch.float32, "f32")
    matmul(torch.bfloat16, "bf16")
    for n in (64, 1024):
        x = torch.rand(n, 784, device="cuda")
        y = (torch.arange(n, device="cuda") * 7 + 3) % 10
        step_bench(f"mlp_step_b{n}", Mlp(), x, y)
        step_bench(f"lenet_step_b{n}", LeNet(), x.view(n, 1, 28, 28), y)


if __name__ == "__main__":
    main()
