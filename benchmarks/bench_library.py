"""How fast is the library next to torch's own building blocks?

Cases (issue 2), float32 on the default device (the CPU here):

* ``mha_fwd_bwd``: ``MultiHeadAttention`` forward + backward against
  ``nn.MultiheadAttention`` with the same weights (B=8, L=512, d_model=512, h=8,
  self-attention, training mode, dropout 0, no weights returned). Target ratio <= 1.05.
* ``sdpa_fused``: ``functional.scaled_dot_product_attention`` without weights against
  ``F.scaled_dot_product_attention`` (B=8, h=8, L=S=512, d_head=64). Target <= 1.05.
* ``sdpa_weights``: the same with ``return_weights=True`` against a plain
  matmul -> softmax -> matmul that also keeps the weights. Target <= 1.10.
* ``sdpa_weights_causal`` (for information, no target): with weights and a causal mask,
  against matmul -> masked_fill -> softmax -> matmul.
* ``sdpa_fused_small`` (for information, no target): the fused case on a tiny input
  (2, 4, 32, 16), where the Python-level input checks are a visible share of the time.

Method: both sides get the same inputs and a few warm-up calls; then the two sides are
timed in alternating order (ours-torch, torch-ours, ...) so that slow phases of a shared
machine hit both alike. Each sample is the mean of ``inner`` calls; the table shows the
median sample of each side and the median of the per-pair ratios (ours / torch).

Run: ``python -m benchmarks library`` or ``python benchmarks/bench_library.py [--repeats N]``
(``--threads 1`` gives steadier numbers on a busy shared machine, where a second thread
often waits for a core). Writes ``benchmarks/results/library.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from attncourse import functional as AF
from attncourse.modules import MultiHeadAttention

RESULTS = Path(__file__).resolve().parent / "results" / "library.json"


@dataclass
class Case:
    """A pair of callables doing the same work, ours and torch's."""

    name: str
    description: str
    ours: Callable[[], object]
    theirs: Callable[[], object]
    target: float | None  # the largest acceptable ratio ours / torch, None = information
    inner: int | None = None  # calls per sample, when the default is too few for the case


@dataclass
class Result:
    name: str
    description: str
    ours_ms: float
    torch_ms: float
    ratio: float
    target: float | None
    meets_target: bool | None
    inner: int
    ours_samples_ms: list[float] = field(repr=False)
    torch_samples_ms: list[float] = field(repr=False)


# ---------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _sample_ms(fn: Callable[[], object], inner: int) -> float:
    """Mean wall time of one call in milliseconds, over ``inner`` calls."""
    _synchronize()
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    _synchronize()
    return (time.perf_counter() - start) / inner * 1e3


def measure(case: Case, repeats: int, inner: int, warmup: int) -> Result:
    """Time both sides in alternating order; medians and the median paired ratio."""
    for _ in range(warmup):
        case.ours()
        case.theirs()
    ours_samples, torch_samples = [], []
    for repeat in range(repeats):
        if repeat % 2 == 0:  # ours first on even repeats, torch first on odd ones
            ours_samples.append(_sample_ms(case.ours, inner))
            torch_samples.append(_sample_ms(case.theirs, inner))
        else:
            torch_samples.append(_sample_ms(case.theirs, inner))
            ours_samples.append(_sample_ms(case.ours, inner))
    ratio = statistics.median(o / t for o, t in zip(ours_samples, torch_samples))
    return Result(
        name=case.name,
        description=case.description,
        ours_ms=statistics.median(ours_samples),
        torch_ms=statistics.median(torch_samples),
        ratio=ratio,
        target=case.target,
        meets_target=None if case.target is None else ratio <= case.target,
        inner=inner,
        ours_samples_ms=ours_samples,
        torch_samples_ms=torch_samples,
    )


# ---------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------


def _forward_backward(layer: torch.nn.Module, call: Callable[[], torch.Tensor]):
    """forward, sum, backward; gradients reset so that no call pays for accumulation."""

    def step():
        for param in layer.parameters():
            param.grad = None
        call().sum().backward()

    return step


def mha_case(device: torch.device) -> Case:
    B, L, d_model, heads = 8, 512, 512, 8
    torch.manual_seed(0)
    ours = MultiHeadAttention(d_model, heads).to(device).train()
    theirs = ours.to_torch(batch_first=True).train()  # the same weights
    x = torch.randn(B, L, d_model, device=device)  # (B, L, d_model)
    return Case(
        name="mha_fwd_bwd",
        description=f"MultiHeadAttention fwd+bwd, B={B} L={L} d_model={d_model} h={heads}",
        ours=_forward_backward(ours, lambda: ours(x)[0]),
        theirs=_forward_backward(theirs, lambda: theirs(x, x, x, need_weights=False)[0]),
        target=1.05,
    )


def _qkv(device: torch.device):
    B, heads, L, d_head = 8, 8, 512, 64
    gen = torch.Generator().manual_seed(1)
    return tuple(torch.randn(B, heads, L, d_head, generator=gen).to(device) for _ in range(3))


def sdpa_fused_case(device: torch.device) -> Case:
    q, k, v = _qkv(device)  # (B, h, L, d_head) each
    return Case(
        name="sdpa_fused",
        description="scaled_dot_product_attention, no weights, (8, 8, 512, 64)",
        ours=lambda: AF.scaled_dot_product_attention(q, k, v),
        theirs=lambda: F.scaled_dot_product_attention(q, k, v),
        target=1.05,
    )


def _plain_attention(q, k, v, keep=None):
    """The textbook computation: (B, h, L, S) scores, softmax, weighted sum; weights kept."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, h, L, S); scale the
    # smaller tensor, as the library does, so that the baseline is not handicapped
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (B, h, L, S)
    return weights @ v, weights  # (B, h, L, d_head), (B, h, L, S)


def sdpa_fused_small_case(device: torch.device) -> Case:
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 4, 32, 16, generator=gen).to(device) for _ in range(3))
    return Case(
        name="sdpa_fused_small",
        description="no weights, (2, 4, 32, 16): the cost of checking the inputs",
        ours=lambda: AF.scaled_dot_product_attention(q, k, v),
        theirs=lambda: F.scaled_dot_product_attention(q, k, v),
        target=None,
        inner=200,
    )


def sdpa_weights_case(device: torch.device) -> Case:
    q, k, v = _qkv(device)
    return Case(
        name="sdpa_weights",
        description="scaled_dot_product_attention with weights vs matmul-softmax-matmul",
        ours=lambda: AF.scaled_dot_product_attention(q, k, v, return_weights=True),
        theirs=lambda: _plain_attention(q, k, v),
        target=1.10,
    )


def sdpa_weights_causal_case(device: torch.device) -> Case:
    q, k, v = _qkv(device)
    L = q.shape[-2]
    keep = torch.ones(L, L, dtype=torch.bool, device=device).tril()  # (L, S)
    return Case(
        name="sdpa_weights_causal",
        description="with weights and is_causal vs matmul-masked_fill-softmax-matmul",
        ours=lambda: AF.scaled_dot_product_attention(
            q, k, v, is_causal=True, return_weights=True
        ),
        theirs=lambda: _plain_attention(q, k, v, keep),
        target=None,
    )


CASES = (
    mha_case,
    sdpa_fused_case,
    sdpa_weights_case,
    sdpa_weights_causal_case,
    sdpa_fused_small_case,
)


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def _table(results: list[Result]) -> str:
    header = f"{'case':<22}{'ours ms':>10}{'torch ms':>10}{'ratio':>8}{'target':>8}  ok"
    lines = [header, "-" * len(header)]
    for r in results:
        target = "-" if r.target is None else f"{r.target:.2f}"
        ok = "-" if r.meets_target is None else ("yes" if r.meets_target else "NO")
        lines.append(
            f"{r.name:<22}{r.ours_ms:>10.2f}{r.torch_ms:>10.2f}{r.ratio:>8.3f}{target:>8}  {ok}"
        )
    return "\n".join(lines)


def _environment(device: torch.device, repeats: int, inner: int) -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "repeats": repeats,
        "inner": inner,
        "method": "alternating ABAB/BABA samples; medians; ratio = median of paired ratios",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="attncourse against torch's built-ins")
    parser.add_argument("--repeats", type=int, default=11, help="samples per side")
    parser.add_argument("--inner", type=int, default=2, help="calls per sample")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per side")
    parser.add_argument("--cases", nargs="*", default=None, help="names of cases to run")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args([] if argv is None else argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    for make in CASES:
        case = make(device)
        if args.cases and case.name not in args.cases:
            continue
        inner = case.inner or args.inner
        results.append(measure(case, args.repeats, inner, args.warmup))
        print(f"  {case.name}: ratio {results[-1].ratio:.3f}", flush=True)
    print(_table(results))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "environment": _environment(device, args.repeats, args.inner),
        "cases": [asdict(r) for r in results],
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
