"""Peak memory of one attention case, measured in a process of its own.

    python benchmarks/_memory_probe.py IMPL MODE LENGTH [--dim D] [--causal]

IMPL is ``plain`` (matmul, softmax, matmul), ``blockwise`` (attncourse.efficient) or
``sdpa`` (torch's fused scaled_dot_product_attention); ``none`` runs only the setup, to
measure the baseline. MODE is ``forward`` (under no_grad) or ``backward`` (forward, then
backward of the sum of the output). Every run does the same setup first: import torch and
the library, allocate query, key and value (1, 1, LENGTH, D) in float32 (batch 1, one
head), and run each implementation once on a tiny input so that thread pools and kernels
are loaded.

Prints one JSON line: the process's peak resident set size (VmHWM) in KiB and the seconds
the case took. The caller subtracts the peak of the ``none`` run to get the case's own peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from attncourse.efficient import blockwise_attention

IMPLS = ("none", "plain", "blockwise", "sdpa")
MODES = ("forward", "backward")


def plain_attention(query, key, value, is_causal=False):
    """softmax(Q K^T / sqrt(E)) V with the whole (L, S) matrix in memory, twice."""
    scale = query.shape[-1] ** -0.5
    scores = query @ key.transpose(-2, -1) * scale  # (..., L, S)
    if is_causal:
        L, S = scores.shape[-2:]
        visible = torch.ones(L, S, dtype=torch.bool, device=scores.device).tril()  # (L, S)
        scores = scores.masked_fill(~visible, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (..., L, S)
    return weights @ value  # (..., L, Ev)


def sdpa(query, key, value, is_causal=False):
    return torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=is_causal)


def blockwise(query, key, value, is_causal=False):
    return blockwise_attention(query, key, value, is_causal=is_causal)


FUNCTIONS = {"plain": plain_attention, "blockwise": blockwise, "sdpa": sdpa}


def peak_rss_kib() -> int:
    """The peak resident set size of this process so far, in KiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def make_inputs(length: int, dim: int, requires_grad: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(1, 1, length, dim, generator=gen).requires_grad_(requires_grad)
        for _ in range(3)
    )  # query, key, value: (1, 1, L, d) each


def warm_up(dim: int) -> None:
    """Run every implementation once on a tiny input, forward and backward."""
    for fn in FUNCTIONS.values():
        tiny = make_inputs(64, dim, requires_grad=True, seed=1)
        fn(*tiny).sum().backward()


def run_case(impl: str, mode: str, length: int, dim: int, is_causal: bool) -> float:
    """Run the case once; return its wall-clock seconds."""
    inputs = make_inputs(length, dim, requires_grad=(mode == "backward"))
    warm_up(dim)
    start = time.perf_counter()
    if impl == "none":
        return 0.0
    fn = FUNCTIONS[impl]
    if mode == "forward":
        with torch.no_grad():
            fn(*inputs, is_causal=is_causal)
    else:
        fn(*inputs, is_causal=is_causal).sum().backward()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("impl", choices=IMPLS)
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("length", type=int)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--causal", action="store_true")
    args = parser.parse_args(argv)
    seconds = run_case(args.impl, args.mode, args.length, args.dim, args.causal)
    print(json.dumps({"peak_kib": peak_rss_kib(), "seconds": seconds}))


if __name__ == "__main__":
    main()
