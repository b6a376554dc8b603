"""Blockwise attention against plain attention and torch's fused SDPA: memory and time.

    python -m benchmarks efficient                              (through the dispatcher)
    python -m benchmarks.bench_efficient [--quick] [--write-book-data]

For each sequence length L = S in the sweep (1024 ... 16384; d = 64, one head, float32):

* peak memory of a forward pass (under no_grad) and of a forward + backward pass, for
  ``plain`` (matmul, softmax, matmul: the whole (L, S) matrix in memory), ``blockwise``
  (attncourse.efficient.blockwise_attention) and ``sdpa`` (torch's fused kernel). Every
  case runs in a fresh process (benchmarks/_memory_probe.py) and reports its peak resident
  set size; the peak of a process that did the same setup (import torch, allocate the
  inputs, warm up every implementation on a tiny input) but no case is subtracted.
* median time of a forward pass and of a forward + backward pass of each implementation,
  measured in this process with the repetitions of the three implementations interleaved
  (the machine may be shared: interleaving spreads the noise evenly, the median drops
  outliers).

Also, at L = 4096: the forward time of blockwise attention for several block sizes (how the
library's default was chosen) and of all three implementations on one thread (on a busy
machine, thread synchronisation penalises the many smaller operations of the blockwise
loop). Under load the full run takes tens of minutes; --quick stops at L = 2048.

Prints the headline figures at the largest length and the ratios against the targets
(blockwise peak <= 10% of plain, blockwise forward time <= 1.5x plain), writes everything
to benchmarks/results/efficient.json and, with --write-book-data, to
book/data/efficient_sweep.json, which chapter 8 plots.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PROBE = HERE / "_memory_probe.py"
RESULTS = HERE / "results" / "efficient.json"
BOOK_DATA = HERE.parent / "book" / "data" / "efficient_sweep.json"

if __package__ in (None, ""):
    sys.path.insert(0, str(HERE.parent))
from benchmarks._memory_probe import FUNCTIONS, make_inputs  # noqa: E402

from attncourse.efficient import DEFAULT_BLOCK_SIZE, blockwise_attention  # noqa: E402

IMPLS = ("plain", "blockwise", "sdpa")
DIM = 64
LENGTHS = (1024, 2048, 4096, 8192, 16384)
QUICK_LENGTHS = (512, 1024, 2048)
MEMORY_TARGET = 0.10  # blockwise peak / plain peak
TIME_TARGET = 1.5  # blockwise forward time / plain forward time
MIB = 1024.0


# ---------------------------------------------------------------------------------------
# Memory: one process per case
# ---------------------------------------------------------------------------------------


def probe(impl: str, mode: str, length: int) -> dict:
    """Run one case in a fresh Python process; return its JSON report."""
    command = [sys.executable, str(PROBE), impl, mode, str(length), "--dim", str(DIM)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {impl} {mode} {length} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_at(length: int) -> dict:
    """Peak memory above the baseline, in MiB, for every implementation and mode."""
    baseline_kib = probe("none", "forward", length)["peak_kib"]
    peaks = {}
    for impl in IMPLS:
        peaks[impl] = {}
        for mode in ("forward", "backward"):  # one at a time: plain needs GiBs at 16384
            report = probe(impl, mode, length)
            peaks[impl][mode] = max(report["peak_kib"] - baseline_kib, 0) / MIB
    return {"baseline_mib": baseline_kib / MIB, "peak_mib": peaks}


# ---------------------------------------------------------------------------------------
# Time: interleaved repetitions in this process
# ---------------------------------------------------------------------------------------


def time_once(impl: str, mode: str, inputs) -> float:
    fn = FUNCTIONS[impl]
    start = time.perf_counter()
    if mode == "forward":
        with torch.no_grad():
            fn(*inputs)
    else:
        for t in inputs:
            t.grad = None
        fn(*inputs).sum().backward()
    return time.perf_counter() - start


def repetitions(length: int, mode: str) -> int:
    """More repetitions where one is cheap; at least 3 for a median."""
    budget = 7 if mode == "forward" else 5
    return budget if length <= 4096 else 3


def times_at(length: int) -> dict:
    """Median seconds per implementation for forward and for forward + backward."""
    inputs = make_inputs(length, DIM, requires_grad=True)
    medians = {}
    for mode in ("forward", "backward"):
        samples = {impl: [] for impl in IMPLS}
        for rep in range(repetitions(length, mode)):
            order = IMPLS[rep % len(IMPLS) :] + IMPLS[: rep % len(IMPLS)]  # rotate the order
            for impl in order:
                samples[impl].append(time_once(impl, mode, inputs))
        medians[mode] = {impl: statistics.median(s) for impl, s in samples.items()}
    return medians


BLOCK_SWEEP_LENGTH = 4096
BLOCK_SWEEP = ((256, 512), (512, 1024), (1024, 1024), (1024, 2048), (2048, 2048), (1024, 4096))


def block_size_sweep(length: int = BLOCK_SWEEP_LENGTH, reps: int = 3) -> dict:
    """Median forward seconds of blockwise attention for several block sizes (interleaved)."""
    inputs = make_inputs(length, DIM, requires_grad=False)
    samples = {blocks: [] for blocks in BLOCK_SWEEP}
    with torch.no_grad():
        for _ in range(reps):
            for blocks in BLOCK_SWEEP:
                start = time.perf_counter()
                blockwise_attention(*inputs, block_size=blocks)
                samples[blocks].append(time.perf_counter() - start)
    medians = {f"{q}x{k}": statistics.median(s) for (q, k), s in samples.items()}
    return {"length": length, "median_s": medians}


def single_thread_times(length: int = BLOCK_SWEEP_LENGTH, reps: int = 5) -> dict:
    """Median forward seconds of each implementation with torch limited to one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        inputs = make_inputs(length, DIM, requires_grad=False)
        samples = {impl: [] for impl in IMPLS}
        for rep in range(reps):
            for impl in IMPLS[rep % 3 :] + IMPLS[: rep % 3]:
                samples[impl].append(time_once(impl, "forward", inputs))
    finally:
        torch.set_num_threads(threads)
    medians = {impl: statistics.median(s) for impl, s in samples.items()}
    return {"length": length, "median_s": medians}


def sdpa_cpu_kernels() -> list[str]:
    """Names of the aten operators torch's SDPA dispatches to, seen by the profiler."""
    query, key, value = make_inputs(256, DIM, requires_grad=False)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        FUNCTIONS["sdpa"](query, key, value)
    names = {event.key for event in prof.key_averages()}
    return sorted(n for n in names if "scaled_dot_product" in n or "flash" in n)


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            names = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        model = names[0] if names else model
    except OSError:
        pass
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "system": platform.system(),
        "measured_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
    }


def ratios(entry: dict) -> dict:
    peak, seconds = entry["peak_mib"], entry["time_s"]
    return {
        "memory_forward_blockwise_over_plain": peak["blockwise"]["forward"]
        / peak["plain"]["forward"],
        "memory_backward_blockwise_over_plain": peak["blockwise"]["backward"]
        / peak["plain"]["backward"],
        "time_forward_blockwise_over_plain": seconds["forward"]["blockwise"]
        / seconds["forward"]["plain"],
        "time_forward_blockwise_over_sdpa": seconds["forward"]["blockwise"]
        / seconds["forward"]["sdpa"],
        "time_backward_blockwise_over_plain": seconds["backward"]["blockwise"]
        / seconds["backward"]["plain"],
    }


def print_headline(entry: dict, summary: dict) -> None:
    L = entry["length"]
    print(f"L = S = {L}, d = {DIM}, one head, float32, blocks {DEFAULT_BLOCK_SIZE}")
    header = f"{'peak fwd MiB':>13s} {'peak fwd+bwd MiB':>17s} {'fwd s':>8s} {'fwd+bwd s':>10s}"
    print(f"{'':10s} {header}")
    for impl in IMPLS:
        peak, secs = entry["peak_mib"][impl], entry["time_s"]
        print(
            f"{impl:10s} {peak['forward']:13.1f} {peak['backward']:17.1f} "
            f"{secs['forward'][impl]:8.3f} {secs['backward'][impl]:10.3f}"
        )
    checks = (
        ("memory_forward_blockwise_over_plain", MEMORY_TARGET, "memory fwd blockwise/plain"),
        ("memory_backward_blockwise_over_plain", MEMORY_TARGET, "memory fwd+bwd blockwise/plain"),
        ("time_forward_blockwise_over_plain", TIME_TARGET, "time fwd blockwise/plain"),
    )
    for key, target, label in checks:
        value = summary[key]
        verdict = "met" if value <= target else "MISSED"
        print(f"{label:32s} {value:7.3f}  (target <= {target}: {verdict})")
    print(f"{'time fwd blockwise/sdpa':32s} {summary['time_forward_blockwise_over_sdpa']:7.3f}")
    training_ratio = summary["time_backward_blockwise_over_plain"]
    print(f"{'time fwd+bwd blockwise/plain':32s} {training_ratio:7.3f}")


def _rounded(mapping: dict) -> dict:
    return {key: round(value, 3) for key, value in mapping.items()}


def run(lengths, write_book_data: bool) -> dict:
    sweep = []
    for length in lengths:
        started = time.perf_counter()
        entry = {"length": length, **memory_at(length), "time_s": times_at(length)}
        sweep.append(entry)
        print(f"  L = {length:6d} measured in {time.perf_counter() - started:6.1f} s", flush=True)
    headline = sweep[-1]
    summary = ratios(headline)
    result = {
        "machine": machine(),
        "config": {
            "dim": DIM,
            "heads": 1,
            "dtype": "float32",
            "block_size": list(DEFAULT_BLOCK_SIZE),
            "memory": "peak RSS (VmHWM) of a fresh process minus that of a baseline process",
            "time": "median of interleaved repetitions",
        },
        "sdpa_cpu_kernels": sdpa_cpu_kernels(),
        "block_size_sweep": block_size_sweep(),
        "single_thread": single_thread_times(),
        "targets": {"memory_ratio_max": MEMORY_TARGET, "time_ratio_max": TIME_TARGET},
        "headline_length": headline["length"],
        "ratios": summary,
        "sweep": sweep,
    }
    print_headline(headline, summary)
    blocks, single = result["block_size_sweep"]["median_s"], result["single_thread"]["median_s"]
    print(f"block sizes at L = {BLOCK_SWEEP_LENGTH}, forward seconds:", _rounded(blocks))
    print(f"one thread at L = {BLOCK_SWEEP_LENGTH}, forward seconds:", _rounded(single))
    kernels = ", ".join(result["sdpa_cpu_kernels"]) or "nothing recognisable"
    print(f"SDPA on this CPU ran: {kernels}")
    targets = [BOOK_DATA, RESULTS] if write_book_data else [RESULTS]
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path.relative_to(HERE.parent)}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"lengths {QUICK_LENGTHS} only")
    parser.add_argument(
        "--write-book-data", action="store_true", help=f"also write {BOOK_DATA.name} for the book"
    )
    args = parser.parse_args([] if argv is None else argv)
    if args.quick and args.write_book_data:
        parser.error("the book's data must come from the full sweep: drop --quick")
    run(QUICK_LENGTHS if args.quick else LENGTHS, args.write_book_data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
