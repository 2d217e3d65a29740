"""Shared helpers of the Python peer benchmarks: timing, machine description, JSON output.

The JSON written here is what `cargo run --release --example bench_report` reads from
`benches/python/results/*.json`:

    {"framework": "...", "machine": {...}, "date": "YYYY-MM-DD",
     "results": [{"group": "W1_mlp_step", "case": "b64", "system": "pytorch",
                  "median_ns": 1.1e6, "min_ns": 1.0e6, "max_ns": 1.4e6}, ...]}

Groups and cases are those of `benches/modes.rs`; a W4 result is the time of the whole
chain of 1,000 adds, like the Rust benchmark.
"""

import datetime
import json
import os
import platform
import statistics
import time

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# W4: number of sequential adds in one chain.
CHAIN = 1000


def measure(fn, warmup=3, min_samples=10, max_samples=200, budget_s=3.0):
    """Calls `fn` a few times to warm up, then times single calls until `budget_s` seconds or
    `max_samples` calls have passed (at least `min_samples`). Returns (median, min, max) in ns."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_samples and (
        len(times) < min_samples or time.perf_counter() - start < budget_s
    ):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times), min(times), max(times)


def machine():
    """Core count and CPU model of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count()}


def result(group, case, system, timing):
    median, lo, hi = timing
    return {
        "group": group,
        "case": case,
        "system": system,
        "median_ns": median,
        "min_ns": lo,
        "max_ns": hi,
    }


def write(name, framework, results):
    """Writes `results/NAME.json` and prints one line per result."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    doc = {
        "framework": framework,
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "results": results,
    }
    path = os.path.join(RESULTS_DIR, name + ".json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    for r in results:
        print(f"{r['group']}/{r['case']}/{r['system']}: median {r['median_ns'] / 1e3:.1f} us")
    print(f"wrote {path}")
