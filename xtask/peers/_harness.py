"""Shared timing and I/O for the peer scripts of `cargo xtask bench`.

Each workload is timed like criterion times ours: a warm-up, then several batches of many
iterations timed with time.perf_counter_ns; the reported figure is the mean over batches of
the time per iteration (median and minimum are kept too).
"""

import argparse
import json
import platform
import statistics
import sys
import time
import traceback


def args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="target/bench-data directory")
    parser.add_argument("--out", required=True, help="JSON file to write the results to")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter batches")
    parser.add_argument("--sets", default="100k", help="metrics data sets, comma-separated")
    parser.add_argument("--work", default=None, help="scratch directory")
    parser.add_argument("--days", type=int, default=7, help="query window in days (metrics)")
    return parser.parse_args()


def measure(fn, quick, setup_per_batch=None):
    """Mean ns per call of fn() over timed batches (each batch about 50 ms quick, 200 ms full)."""
    batch_ns = 50_000_000 if quick else 200_000_000
    batches = 10 if quick else 30
    # warm-up and calibration: grow the iteration count until one batch takes batch_ns
    iters = 1
    while True:
        if setup_per_batch:
            setup_per_batch()
        start = time.perf_counter_ns()
        for _ in range(iters):
            fn()
        took = time.perf_counter_ns() - start
        if took >= batch_ns // 4 or iters >= 1 << 24:
            iters = max(1, int(iters * batch_ns / max(took, 1)))
            break
        iters *= 4
    per_iter = []
    for _ in range(batches):
        if setup_per_batch:
            setup_per_batch()
        start = time.perf_counter_ns()
        for _ in range(iters):
            fn()
        per_iter.append((time.perf_counter_ns() - start) / iters)
    return summary(per_iter, iters)


def measure_runs(fn, runs):
    """For slow workloads (one call is a whole query): time `runs` calls after one warm-up."""
    fn()
    per_run = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        per_run.append(time.perf_counter_ns() - start)
    return summary(per_run, 1)


def summary(samples, iters):
    return {
        "mean_ns": statistics.fmean(samples),
        "median_ns": statistics.median(samples),
        "min_ns": min(samples),
        "samples": len(samples),
        "iters_per_sample": iters,
    }


class Results:
    """Collects workloads; one that raises is recorded as an error, the others still run."""

    def __init__(self, out, versions):
        self.out = out
        self.doc = {
            "python": platform.python_version(),
            "versions": versions,
            "results": {},
            "checks": {},
        }

    def run(self, name, thunk):
        print(f"    {name}", file=sys.stderr, flush=True)
        try:
            self.doc["results"][name] = thunk()
        except Exception as exc:  # noqa: BLE001 - reported, not hidden
            traceback.print_exc()
            self.doc["results"][name] = {"error": f"{type(exc).__name__}: {exc}"}

    def check(self, name, value):
        self.doc["checks"][name] = value

    def write(self):
        with open(self.out, "w", encoding="utf-8") as f:
            json.dump(self.doc, f, indent=2)
            f.write("\n")
