"""Where attention learns order: positional encodings and position-dependent scores.

Attention without positions treats its keys as a set: permute the tokens and the outputs
permute the same way. The schemes here tell a model where each token sits.

* :func:`sinusoidal_encoding` (Vaswani et al., 2017): a fixed (L, d) table added to the
  token embeddings, sin on even and cos on odd features.
* :func:`rope` (rotary position embedding, Su et al., 2021): rotates pairs of features of
  queries and keys by an angle proportional to the position, so that the dot product of a
  rotated query and key depends only on their offset.
* :func:`alibi_slopes` and :func:`alibi_bias` (Press et al., 2022): a floating mask that
  subtracts ``slope * distance`` from the scores, one slope per head.

Letters for shapes, as in :mod:`attncourse.functional`: ``...`` batch dimensions, ``L`` =
n_q queries, ``S`` = n_k keys, ``E`` = d_k, ``h`` heads, ``d`` the width of an encoding.

Frequencies. Feature pair ``i`` (i = 0 .. E/2 - 1) of RoPE, and the sin/cos pair at
features 2i and 2i + 1 of the sinusoidal table, turn at ``theta_i = base ** (-2 i / E)``
radians per position.

Half-precision results are computed in float32 and cast back, as torch's kernels do.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from . import _checks
from .masks import ALIGNMENTS

__all__ = [
    "sinusoidal_encoding",
    "rope_frequencies",
    "rope",
    "alibi_slopes",
    "alibi_bias",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _check_base(base: object) -> float:
    if isinstance(base, bool) or not isinstance(base, (int, float)):
        raise TypeError(f"base must be a positive float, got {_checks.type_name(base)}")
    if not (math.isfinite(float(base)) and float(base) > 1.0):
        raise ValueError(f"base must be a finite float greater than 1, got {base}")
    return float(base)


def _check_float_dtype(dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            f"dtype must be a floating torch dtype (float16, bfloat16, float32 or float64), "
            f"got {dtype!r}"
        )
    return dtype


def _check_alignment(alignment: object) -> str:
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    return alignment


# ---------------------------------------------------------------------------------------
# The sinusoidal encoding
# ---------------------------------------------------------------------------------------


def sinusoidal_encoding(
    L: int,
    d: int,
    base: float = 10000.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The fixed positional encoding of "Attention Is All You Need", shape (L, d).

    Row p is the encoding of position p; features 2i and 2i + 1 hold
    ``sin(p * theta_i)`` and ``cos(p * theta_i)`` with ``theta_i = base ** (-2i / d)``.
    An odd d ends with a sine.

    Args:
        L: number of positions (0 .. L - 1), at least 1.
        d: width of the encoding, at least 1 (usually d_model).
        base: the wavelength scale; 10000 in the paper.
        dtype: floating dtype of the result.
        device: where to create it.

    Returns:
        Tensor (L, d).
    """
    _checks.check_positive_int("L", L)
    _checks.check_positive_int("d", d)
    base = _check_base(base)
    dtype = _check_float_dtype(dtype)
    compute = _compute_dtype(dtype)
    pairs = (d + 1) // 2
    theta = base ** (-2.0 * torch.arange(pairs, dtype=compute, device=device) / d)  # (d/2,)
    angles = torch.arange(L, dtype=compute, device=device)[:, None] * theta  # (L, d/2)
    table = torch.empty(L, 2 * pairs, dtype=compute, device=device)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table[:, :d].to(dtype)  # (L, d)


# ---------------------------------------------------------------------------------------
# Rotary position embedding
# ---------------------------------------------------------------------------------------


def rope_frequencies(
    E: int,
    base: float = 10000.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The angle per position of each of RoPE's E/2 feature pairs: theta_i = base^(-2i/E).

    Returns:
        Tensor (E/2,): theta_0 = 1 radian per position, then ever slower.
    """
    _checks.check_positive_int("E", E)
    if E % 2:
        raise ValueError(f"E must be even (RoPE rotates pairs of features), got {E}")
    base = _check_base(base)
    dtype = _check_float_dtype(dtype)
    return base ** (-2.0 * torch.arange(E // 2, dtype=dtype, device=device) / E)


def _check_positions(positions: object, x: torch.Tensor) -> torch.Tensor:
    """Integer positions >= 0 that broadcast against (..., L); returned on x's device."""
    if not isinstance(positions, torch.Tensor):
        if isinstance(positions, (bool, int, float)) or not isinstance(positions, Sequence):
            raise TypeError(
                "positions must be a tensor or a sequence of ints of shape (L,) or "
                f"broadcastable to (..., L), got {_checks.type_name(positions)}"
            )
        try:
            positions = torch.as_tensor(positions)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"positions must be a sequence of ints, got {positions!r:.80}"
            ) from None
    if positions.dtype == torch.bool or positions.is_floating_point() or positions.is_complex():
        raise TypeError(f"positions must hold integers, got dtype {positions.dtype}")
    target = (*x.shape[:-2], x.shape[-2])  # (..., L)
    if positions.dim() > len(target) or _checks.broadcast_shapes(positions.shape, target) != target:
        raise ValueError(
            f"positions must have shape (L,) = ({x.shape[-2]},) or broadcast to (..., L) = "
            f"{target}, got shape {tuple(positions.shape)}"
        )
    if positions.numel() and int(positions.min()) < 0:
        raise ValueError(f"positions must be >= 0, got a minimum of {int(positions.min())}")
    return positions.to(x.device)


def rope(
    x: torch.Tensor,
    positions: torch.Tensor | Sequence[int] | None = None,
    base: float = 10000.0,
    interleaved: bool = False,
) -> torch.Tensor:
    """Rotary position embedding: rotate each pair of features of x by its position's angle.

    The token at position p has its feature pair i (a, b) turned by the angle
    ``phi = p * theta_i``: ``(a cos phi - b sin phi, a sin phi + b cos phi)``. Apply it to
    queries and to keys (never to values); then the dot product of a query at position m
    and a key at position n depends on the positions only through m - n.

    Two layouts of the pairs exist, the same rotation up to a permutation of features:
    ``interleaved=False`` pairs feature i with i + E/2 (GPT-NeoX, Llama), and
    ``interleaved=True`` pairs 2i with 2i + 1 (the RoFormer paper, GPT-J).

    Args:
        x: queries or keys (..., L, E), floating, E even.
        positions: integer positions >= 0, shape (L,) or broadcastable to (..., L);
            None means 0 .. L - 1. With a key/value cache the new queries start at the
            number of cached tokens: ``positions=torch.arange(cached, cached + L)``.
        base: the wavelength scale; 10000 in the paper.
        interleaved: the pair layout, see above.

    Returns:
        The rotated tensor, shape and dtype of x.
    """
    _checks.require_floating("x", x)
    _checks.require_min_dims("x", x, 2, "(..., L, E)")
    _checks.require_bool("interleaved", interleaved)
    E, L = x.shape[-1], x.shape[-2]
    if E % 2:
        raise ValueError(
            f"x must have an even last dimension E (RoPE rotates pairs of features), got "
            f"shape {tuple(x.shape)}"
        )
    base = _check_base(base)
    if positions is None:
        positions = torch.arange(L, device=x.device)
    else:
        positions = _check_positions(positions, x)
    input_dtype, compute = x.dtype, _compute_dtype(x.dtype)
    theta = rope_frequencies(E, base, dtype=compute, device=x.device)  # (E/2,)
    angles = positions.to(compute).unsqueeze(-1) * theta  # (..., L, E/2)
    cos, sin = torch.cos(angles), torch.sin(angles)
    x = x.to(compute)
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]  # (..., L, E/2) each
    else:
        a, b = x[..., : E // 2], x[..., E // 2 :]
    turned_a = a * cos - b * sin
    turned_b = a * sin + b * cos
    if interleaved:
        rotated = torch.stack((turned_a, turned_b), dim=-1).flatten(-2)  # (..., L, E)
    else:
        rotated = torch.cat((turned_a, turned_b), dim=-1)  # (..., L, E)
    return rotated.to(input_dtype)


# ---------------------------------------------------------------------------------------
# ALiBi: attention with linear biases
# ---------------------------------------------------------------------------------------


def _geometric_slopes(n: int) -> list[float]:
    """n slopes for n a power of two: r, r^2, ..., r^n with r = 2^(-8/n)."""
    ratio = 2.0 ** (-8.0 / n)
    return [ratio ** (k + 1) for k in range(n)]


def _slopes_list(h: int) -> list[float]:
    power = 2 ** int(math.floor(math.log2(h)))
    if power == h:
        return _geometric_slopes(h)
    # Press et al.'s rule for other h: the slopes of the power of two below h, then every
    # other slope of twice that power, as many as are missing.
    return _geometric_slopes(power) + _geometric_slopes(2 * power)[0::2][: h - power]


def alibi_slopes(
    h: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """The head-specific slopes m_1 .. m_h of ALiBi (Press et al., 2022), shape (h,).

    For h a power of two they are the geometric sequence r, r^2, ..., r^h with
    r = 2^(-8/h): 1/2, 1/4, ..., 1/256 for 8 heads. For other h, the slopes of the power
    of two below h come first, then every other slope of twice that power until there
    are h.
    """
    _checks.check_positive_int("h", h)
    dtype = _check_float_dtype(dtype)
    return torch.tensor(_slopes_list(h), dtype=torch.float64, device=device).to(dtype)


def alibi_bias(
    h: int,
    L: int,
    S: int | None = None,
    *,
    alignment: str = "top_left",
    causal: bool = True,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """ALiBi as a floating mask (h, L, S): added to the scores, ``-m_h * distance``.

    Query i sits at position i + offset, with offset 0 for ``alignment="top_left"`` and
    S - L for ``"bottom_right"`` (the last query lines up with the last key, as when
    decoding with a key/value cache), as for :func:`attncourse.masks.causal_mask`.
    The distance from query i to key j is ``i + offset - j``.

    * ``causal=True`` (the paper's setting): entry (k, i, j) is ``-m_k * (i + offset - j)``
      where the key is not in the query's future and ``-inf`` where it is, so the mask
      is also the causal mask. Pass it as ``attn_mask`` (not together with
      ``is_causal``); a query with no key at or before it gets a zero output.
    * ``causal=False`` (a symmetric form used by encoders): ``-m_k * |i + offset - j|``.

    Args:
        h: number of heads (one slope each, see :func:`alibi_slopes`).
        L: number of queries n_q, at least 1.
        S: number of keys n_k, at least 1; defaults to L.
        alignment: ``"top_left"`` or ``"bottom_right"``.
        causal: hide future keys with ``-inf`` (True) or penalise both directions.
        dtype: floating dtype of the result.
        device: where to create it.

    Returns:
        Tensor (h, L, S); it broadcasts against scores (B, h, L, S).
    """
    _checks.check_positive_int("h", h)
    _checks.check_positive_int("L", L)
    S = L if S is None else _checks.check_positive_int("S", S)
    _check_alignment(alignment)
    _checks.require_bool("causal", causal)
    dtype = _check_float_dtype(dtype)
    compute = _compute_dtype(dtype)
    offset = 0 if alignment == "top_left" else S - L
    query_pos = torch.arange(L, device=device).unsqueeze(-1) + offset  # (L, 1)
    key_pos = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
    distance = query_pos - key_pos  # (L, S) ints, > 0 for keys in the past
    slopes = alibi_slopes(h, dtype=compute, device=device)[:, None, None]  # (h, 1, 1)
    if not causal:
        return (slopes * (-distance.abs()).to(compute)).to(dtype)  # (h, L, S)
    bias = slopes * (-distance).to(compute)  # (h, L, S); integer negation keeps 0 as +0
    return bias.masked_fill(distance < 0, float("-inf")).to(dtype)
