"""Masks: causal and padding masks, and conversions between conventions.

The library's convention is the one of ``torch.nn.functional.scaled_dot_product_attention``:

* a **boolean** mask is ``True`` where a query *may attend* to a key;
* a **floating** mask is *added* to the scores (``0`` keeps, ``-inf`` removes).

``torch.nn.MultiheadAttention`` uses the opposite meaning for its boolean masks
(``True`` = *ignore* this key). The ``*_to_mha`` and ``*_from_mha`` converters below
translate in both directions; floating masks mean the same in both and pass unchanged.

Letters: ``L`` = n_q (queries), ``S`` = n_k (keys), ``B`` = batch, ``h`` = heads.
"""

from __future__ import annotations

from typing import Sequence

import torch

from . import _checks

__all__ = [
    "ALIGNMENTS",
    "causal_mask",
    "padding_mask",
    "key_padding_from_lengths",
    "mask_to_mha",
    "mask_from_mha",
    "key_padding_to_mha",
    "key_padding_from_mha",
    "bool_to_additive",
    "merge_masks",
]

ALIGNMENTS = ("top_left", "bottom_right")


def causal_mask(
    L: int,
    S: int | None = None,
    *,
    alignment: str = "top_left",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean causal mask of shape (L, S): True where query i may attend to key j.

    ``alignment="top_left"`` (the default, as ``is_causal=True`` in torch) lets query i
    see keys 0..i. ``alignment="bottom_right"`` lines the last query up with the last key,
    so query i sees keys 0..i + (S - L): the mask to use when L new queries are appended
    to S - L cached keys during decoding. With L == S both alignments agree.

    Args:
        L: number of queries n_q.
        S: number of keys n_k; defaults to L.
        alignment: ``"top_left"`` or ``"bottom_right"``.
        device: where to create the mask.

    Returns:
        Bool tensor (L, S).
    """
    _checks.check_positive_int("L", L)
    S = L if S is None else _checks.check_positive_int("S", S)
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    offset = 0 if alignment == "top_left" else S - L
    query_pos = torch.arange(L, device=device).unsqueeze(-1)  # (L, 1)
    key_pos = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
    return key_pos <= query_pos + offset  # (L, S)


def key_padding_from_lengths(
    lengths: torch.Tensor | Sequence[int], S: int, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean key-padding mask of shape (B, S): True for the first ``lengths[b]`` keys.

    Args:
        lengths: valid length of each sequence, ints in [0, S], shape (B,).
        S: padded length n_k.
        device: where to create the mask (defaults to the device of ``lengths``).

    Returns:
        Bool tensor (B, S), True = a real key, False = padding.
    """
    _checks.check_positive_int("S", S)
    if not isinstance(lengths, torch.Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"lengths must be a 1-D sequence or tensor of ints, got {type(lengths).__name__}"
            ) from None
    if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
        raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be 1-D (B,), got shape {tuple(lengths.shape)}")
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > S):
        raise ValueError(
            f"lengths must lie in [0, S={S}], got values from {int(lengths.min())} "
            f"to {int(lengths.max())}"
        )
    device = lengths.device if device is None else device
    key_pos = torch.arange(S, device=device)  # (S,)
    return key_pos.unsqueeze(0) < lengths.to(device).unsqueeze(-1)  # (B, S)


def padding_mask(
    lengths: torch.Tensor | Sequence[int],
    S: int,
    *,
    heads: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean attention mask from valid lengths, ready to broadcast over queries and heads.

    Sequence b has ``lengths[b]`` real keys followed by padding. Every query of sequence
    b may attend to those real keys and to nothing else.

    Args:
        lengths: ints in [0, S], shape (B,).
        S: padded length n_k.
        heads: if True (default) the mask has shape (B, 1, 1, S) and broadcasts against
            scores (B, h, L, S); if False it has shape (B, 1, S) for scores (B, L, S).
        device: where to create the mask.

    Returns:
        Bool tensor (B, 1, 1, S) or (B, 1, S), True = may attend.
    """
    keep = key_padding_from_lengths(lengths, S, device=device)  # (B, S)
    keep = keep.unsqueeze(-2)  # (B, 1, S): same for every query
    return keep.unsqueeze(-3) if heads else keep  # (B, 1, 1, S) or (B, 1, S)


def _require_mask(name: str, mask: object) -> torch.Tensor:
    _checks.require_tensor(name, mask)
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"{name} must be a boolean or floating mask, got dtype {mask.dtype}")
    return mask


def mask_to_mha(attn_mask: torch.Tensor) -> torch.Tensor:
    """Convert an attention mask from the library's convention to ``nn.MultiheadAttention``'s.

    Boolean masks are negated (True = may attend becomes True = ignore); floating masks
    are returned as they are. The shape is unchanged, e.g. (L, S).
    """
    _require_mask("attn_mask", attn_mask)
    return ~attn_mask if attn_mask.dtype == torch.bool else attn_mask


def mask_from_mha(attn_mask: torch.Tensor) -> torch.Tensor:
    """Convert an ``nn.MultiheadAttention`` attention mask (True = ignore) to ours."""
    _require_mask("attn_mask", attn_mask)
    return ~attn_mask if attn_mask.dtype == torch.bool else attn_mask


def key_padding_to_mha(key_padding: torch.Tensor) -> torch.Tensor:
    """Convert a (B, S) key-padding mask, True = real key, to torch's True = padding."""
    _require_mask("key_padding", key_padding)
    return ~key_padding if key_padding.dtype == torch.bool else key_padding


def key_padding_from_mha(key_padding_mask: torch.Tensor) -> torch.Tensor:
    """Convert torch's (B, S) ``key_padding_mask`` (True = padding) to True = real key."""
    _require_mask("key_padding_mask", key_padding_mask)
    return ~key_padding_mask if key_padding_mask.dtype == torch.bool else key_padding_mask


def bool_to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turn a boolean mask (True = may attend) into an additive one: 0 kept, -inf removed."""
    _checks.require_tensor("mask", mask)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be boolean, got dtype {mask.dtype}")
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return additive.masked_fill(~mask, float("-inf"))


def merge_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Combine masks in the library's convention into one; ``None`` entries are skipped.

    Boolean masks are combined with logical and (a key stays visible only if every mask
    allows it). If any mask is floating, boolean ones are first turned into 0/-inf and
    all are added. Shapes broadcast.
    """
    present = [m for m in masks if m is not None]
    for i, m in enumerate(present):
        _require_mask(f"masks[{i}]", m)
    if not present:
        return None
    floating = [m for m in present if m.is_floating_point()]
    if not floating:
        merged = present[0]
        for m in present[1:]:
            merged = merged & m
        return merged
    dtype = floating[0].dtype
    merged = None
    for m in present:
        additive = bool_to_additive(m, dtype) if m.dtype == torch.bool else m
        merged = additive if merged is None else merged + additive
    return merged
