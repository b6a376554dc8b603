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
    """The dtype a result typically ends up in when the input's is not kept: float32
    (computed with a float32 constant, or upcast from half and not cast back), and
    float64 for float32 inputs."""
    return torch.float64 if dtype == torch.float32 else torch.float32
