"""Helpers shared by the library's tests: tolerances and seeded random inputs.

Tolerances follow the policy in DESIGN.md.
"""

from __future__ import annotations

import torch

CUDA_AVAILABLE = torch.cuda.is_available()

# (rtol, atol) per dtype, from the tolerance policy.
TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (5e-2, 1e-2),
    torch.float16: (5e-2, 1e-2),
}

ALL_FLOAT_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """Keyword arguments rtol/atol for ``torch.testing.assert_close`` at ``dtype``."""
    rtol, atol = TOLERANCES[dtype]
    return {"rtol": rtol, "atol": atol}


def assert_close_policy(actual: torch.Tensor, expected: torch.Tensor, dtype=None) -> None:
    """Compare two tensors with the tolerance policy of ``dtype`` (default: actual's)."""
    dtype = actual.dtype if dtype is None else dtype
    torch.testing.assert_close(actual, expected, **tolerance(dtype), equal_nan=False)


def seeded(seed: int) -> torch.Generator:
    """A CPU generator with a fixed seed, so that every random case can be replayed."""
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, gen: torch.Generator, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Standard-normal tensor drawn on the CPU from ``gen``, then moved to dtype/device."""
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)


def random_bool_mask(*shape: int, gen: torch.Generator, keep: float = 0.6) -> torch.Tensor:
    """Boolean mask (True = may attend) with about ``keep`` of the entries True."""
    return torch.rand(*shape, generator=gen) < keep
