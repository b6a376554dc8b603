"""Helpers to build seeded inputs for cases."""

from __future__ import annotations

import torch


def generator(seed: int, salt: int = 0) -> torch.Generator:
    """A CPU generator seeded from the suite's seed and a per-task salt."""
    return torch.Generator().manual_seed(1000 * seed + salt)


def randn(gen: torch.Generator, *shape: int, dtype=torch.float64, scale: float = 1.0) -> torch.Tensor:
    """Standard normal numbers times ``scale``, drawn in float64 then cast to ``dtype``."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


def tensor(rows, dtype=torch.float64) -> torch.Tensor:
    """A hand-written tensor, float64 unless told otherwise."""
    return torch.tensor(rows, dtype=dtype)


def other_float_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float64 and float64 for everything else: a dtype that is *not* kept."""
    return torch.float32 if dtype == torch.float64 else torch.float64
