"""Attention as functions: score functions, the masked softmax, and whole mechanisms.

Letters used for shapes throughout (as in the book):

* ``...`` batch dimensions (for example batch and heads), which broadcast;
* ``L`` = n_q, the number of queries; ``S`` = n_k, the number of keys (= values);
* ``E`` = d_k, the query/key size; ``Ev`` = d_v, the value size;
* ``Eq`` = d_q and ``Ek`` = d_k when queries and keys may have different sizes
  (additive, bilinear);
* ``H`` = d_h, the hidden size of additive attention;
* ``Hq`` = h query heads and ``Hkv`` = g key/value heads (grouped-query attention).

(The book's notation table, in its preface, lists every symbol with these letters.)

Rows are queries and columns are keys: scores and weights have shape (..., L, S).

Masks follow ``torch.nn.functional.scaled_dot_product_attention``: a boolean mask is True
where a query may attend to a key, a floating mask is added to the scores. A query that
may attend to no key at all gets all-zero weights and a zero output (never NaN), with
finite gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _checks
from .masks import causal_mask

__all__ = [
    "masked_softmax",
    "dot_scores",
    "scaled_dot_scores",
    "general_scores",
    "additive_scores",
    "dot_product_attention",
    "scaled_dot_product_attention",
    "general_attention",
    "additive_attention",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to compute in: float32 for half-precision inputs, as torch's kernels do."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


# ---------------------------------------------------------------------------------------
# The masked softmax
# ---------------------------------------------------------------------------------------


def _softmax_kept(
    scores: torch.Tensor,
    mask: torch.Tensor | None,
    dim: int,
    *,
    every_row_keeps: bool = False,
    scores_are_scratch: bool = False,
) -> torch.Tensor:
    """Masked softmax on checked inputs; fully masked rows give zeros.

    The softmax itself (``torch.softmax``) subtracts the row maximum before exponentiating.
    Half-precision scores are handled in float32 and the result is cast back.
    ``every_row_keeps=True`` promises that the mask keeps at least one entry of every row
    (a top-left causal mask does), which skips the search for fully masked rows.
    ``scores_are_scratch=True`` says that the caller made ``scores`` and needs them no
    more, so the mask is applied in place: at (B, h, L, S) that saves allocating, and
    touching, a second tensor as large as the scores.
    """
    compute_dtype = _compute_dtype(scores.dtype)
    scores = scores.to(compute_dtype)
    if mask is None or scores.shape[dim] == 0:  # nothing to mask, or no keys at all
        return torch.softmax(scores, dim=dim)
    in_place = scores_are_scratch and _checks.broadcast_shapes(mask.shape, scores.shape) == tuple(scores.shape)
    if mask.dtype == torch.bool:
        fill = scores.masked_fill_ if in_place else scores.masked_fill
        scores = fill(~mask, float("-inf"))
    else:
        scores = scores.add_(mask.to(compute_dtype)) if in_place else scores + mask.to(compute_dtype)
    if every_row_keeps:
        return torch.softmax(scores, dim=dim)
    # 1. Rows in which every score is -inf have nothing to attend to. (Detached: the
    #    maximum only locates those rows, it needs no gradient and saves nothing for one.)
    row_max = scores.detach().amax(dim=dim, keepdim=True)  # (..., 1) along dim
    dead = row_max == float("-inf")
    if not dead.any():  # the common case: every row keeps something
        return torch.softmax(scores, dim=dim)
    # 2. Give those rows harmless finite scores so softmax (and its gradient) stays finite,
    # 3. then zero their weights.
    scores = scores.masked_fill(dead, 0.0)
    return torch.softmax(scores, dim=dim).masked_fill(dead, 0.0)


def masked_softmax(
    scores: torch.Tensor, mask: torch.Tensor | None = None, dim: int = -1
) -> torch.Tensor:
    """Numerically stable softmax along ``dim`` that skips masked entries.

    Args:
        scores: floating tensor, e.g. (..., L, S).
        mask: optional, broadcastable to ``scores``. Boolean: True = keep. Floating: added
            to the scores (use -inf to remove an entry).
        dim: the axis to normalise over; -1, the keys, for attention weights.

    Returns:
        Weights with the shape and dtype of ``scores``. Along ``dim`` the kept entries sum
        to 1 and masked entries are 0; a slice with nothing kept is all zeros, not NaN.
    """
    _checks.require_floating("scores", scores)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if not -scores.dim() <= dim < max(scores.dim(), 1):
        raise ValueError(f"dim must index a dimension of scores {tuple(scores.shape)}, got {dim}")
    if mask is not None:
        _checks.check_mask(mask, scores.shape, scores, name="mask")
    return _softmax_kept(scores, mask, dim).to(scores.dtype)


# ---------------------------------------------------------------------------------------
# Score functions: (..., L, Eq) and (..., S, Ek) -> (..., L, S)
# ---------------------------------------------------------------------------------------


def _check_query_key(q: torch.Tensor, k: torch.Tensor, same_size: bool) -> torch.Size:
    """Check a query/key pair and return their broadcast batch shape."""
    _checks.require_floating("q", q)
    _checks.require_floating("k", k)
    _checks.require_min_dims("q", q, 2, "(..., L, E)")
    _checks.require_min_dims("k", k, 2, "(..., S, E)")
    _checks.require_same_dtype_device(["q", "k"], [q, k])
    if same_size and q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same last dimension d_k, got q {tuple(q.shape)} "
            f"and k {tuple(k.shape)}"
        )
    return _checks.broadcast_batch(["q", "k"], [q.shape[:-2], k.shape[:-2]])


def _check_weight(name: str, w: object, shape: tuple[int, ...], like: torch.Tensor) -> None:
    _checks.require_floating(name, w)
    _checks.require_same_dtype_device(["q", name], [like, w])
    if tuple(w.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(w.shape)}")


def _check_additive_weights(W_q, W_k, w_v, q: torch.Tensor, k: torch.Tensor) -> None:
    """W_q (H, Eq), W_k (H, Ek) and w_v (H,) must agree with each other and with q, k."""
    _checks.require_tensor("W_q", W_q)
    if W_q.dim() != 2:
        raise ValueError(f"W_q must have shape (H, Eq), got {tuple(W_q.shape)}")
    hidden = W_q.shape[0]
    _check_weight("W_q", W_q, (hidden, q.shape[-1]), q)
    _check_weight("W_k", W_k, (hidden, k.shape[-1]), q)
    _check_weight("w_v", w_v, (hidden,), q)


def _dot(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return q @ k.transpose(-2, -1)  # (..., L, E) @ (..., E, S) -> (..., L, S)


def _bilinear(q: torch.Tensor, k: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return (q @ W) @ k.transpose(-2, -1)  # (..., L, Ek) @ (..., Ek, S) -> (..., L, S)


def _additive(
    q: torch.Tensor, k: torch.Tensor, W_q: torch.Tensor, W_k: torch.Tensor, w_v: torch.Tensor
) -> torch.Tensor:
    projected_q = q @ W_q.T  # (..., L, H)
    projected_k = k @ W_k.T  # (..., S, H)
    hidden = torch.tanh(projected_q.unsqueeze(-2) + projected_k.unsqueeze(-3))  # (..., L, S, H)
    return hidden @ w_v  # (..., L, S)


def dot_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Dot-product scores S = q k^T.

    Args:
        q: queries (..., L, E).
        k: keys (..., S, E).

    Returns:
        Scores (..., L, S); entry (i, j) is the dot product of query i and key j.
    """
    _check_query_key(q, k, same_size=True)
    return _dot(q, k)


def scaled_dot_scores(q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Scaled dot-product scores S = q k^T * scale, with scale = 1 / sqrt(d_k) by default.

    Args:
        q: queries (..., L, E).
        k: keys (..., S, E).
        scale: multiplier of the scores; None means 1 / sqrt(E).

    Returns:
        Scores (..., L, S).
    """
    _check_query_key(q, k, same_size=True)
    scale = _checks.check_scale(scale)
    return _dot(q, k) * _default_scale(q, scale)


def general_scores(q: torch.Tensor, k: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Bilinear ("general", Luong) scores S = q W k^T.

    Args:
        q: queries (..., L, Eq).
        k: keys (..., S, Ek).
        W: (Eq, Ek) matrix; queries and keys may have different sizes.

    Returns:
        Scores (..., L, S); entry (i, j) is q_i^T W k_j.
    """
    _check_query_key(q, k, same_size=False)
    _check_weight("W", W, (q.shape[-1], k.shape[-1]), q)
    return _bilinear(q, k, W)


def additive_scores(
    q: torch.Tensor, k: torch.Tensor, W_q: torch.Tensor, W_k: torch.Tensor, w_v: torch.Tensor
) -> torch.Tensor:
    """Additive (Bahdanau) scores: entry (i, j) is w_v^T tanh(W_q q_i + W_k k_j).

    Weights follow ``nn.Linear``: ``W_q q_i`` is computed as ``q @ W_q.T``.

    Args:
        q: queries (..., L, Eq).
        k: keys (..., S, Ek).
        W_q: (H, Eq) query projection.
        W_k: (H, Ek) key projection.
        w_v: (H,) scoring vector.

    Returns:
        Scores (..., L, S). Memory grows as L * S * H.
    """
    _check_query_key(q, k, same_size=False)
    _check_additive_weights(W_q, W_k, w_v, q, k)
    return _additive(q, k, W_q, W_k, w_v)


def _default_scale(q: torch.Tensor, scale: float | None) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale


# ---------------------------------------------------------------------------------------
# From scores to outputs
# ---------------------------------------------------------------------------------------


def _check_attention_inputs(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    same_size: bool,
    enable_gqa: bool = False,
) -> torch.Size:
    """Check query (..., L, Eq), key (..., S, Ek), value (..., S, Ev); return batch shape."""
    for name, t, layout in (
        ("query", query, "(..., L, E)"),
        ("key", key, "(..., S, E)"),
        ("value", value, "(..., S, Ev)"),
    ):
        _checks.require_floating(name, t)
        _checks.require_min_dims(name, t, 2, layout)
    _checks.require_same_dtype_device(["query", "key", "value"], [query, key, value])
    if same_size and query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"query and key must have the same last dimension d_k, got query "
            f"{tuple(query.shape)} and key {tuple(key.shape)}"
        )
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"key and value must have the same number of positions n_k (dimension -2), "
            f"got key {tuple(key.shape)} and value {tuple(value.shape)}"
        )
    if key.shape[:-2] != value.shape[:-2]:
        raise ValueError(
            f"key and value must have the same batch dimensions, got key "
            f"{tuple(key.shape)} and value {tuple(value.shape)}"
        )
    if not enable_gqa:
        return _checks.broadcast_batch(["query", "key"], [query.shape[:-2], key.shape[:-2]])
    if query.dim() < 3 or key.dim() < 3:
        raise ValueError(
            "enable_gqa=True needs a head dimension: query (..., Hq, L, E) and key "
            f"(..., Hkv, S, E), got query {tuple(query.shape)} and key {tuple(key.shape)}"
        )
    q_heads, kv_heads = query.shape[-3], key.shape[-3]
    if kv_heads == 0:
        raise ValueError(
            "with enable_gqa=True key and value need at least one head (dimension -3), got "
            f"key {tuple(key.shape)}"
        )
    if q_heads % kv_heads != 0:
        raise ValueError(
            f"with enable_gqa=True the number of query heads ({q_heads}, dimension -3 of "
            f"query) must be a multiple of the number of key/value heads ({kv_heads})"
        )
    outer = _checks.broadcast_batch(["query", "key"], [query.shape[:-3], key.shape[:-3]])
    return torch.Size((*outer, q_heads))


def _combined_mask(
    attn_mask: torch.Tensor | None, is_causal: bool, L: int, S: int, device: torch.device
) -> tuple[torch.Tensor | None, bool]:
    """The mask to apply, and whether it surely keeps something in every row.

    A top-left causal mask does whenever there is a key: query i keeps keys 0..i.
    """
    if is_causal and L > 0 and S > 0:
        return causal_mask(L, S, device=device), True  # (L, S), top-left aligned
    return attn_mask, False  # (with no queries or no keys there is nothing to mask)


def _check_mask_args(
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    batch: torch.Size,
    L: int,
    S: int,
    like: torch.Tensor,
) -> None:
    _checks.require_bool("is_causal", is_causal)
    if is_causal and attn_mask is not None:
        raise ValueError(
            "pass either attn_mask or is_causal=True, not both: to combine a causal mask "
            "with another, build attncourse.masks.causal_mask(L, S) and merge them"
        )
    if attn_mask is not None:
        _checks.check_mask(attn_mask, (*batch, L, S), like)


def _weights_and_output(
    scores: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    dropout_p: float,
    every_row_keeps: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax, optional dropout, weighted sum: (..., L, S), (..., S, Ev) -> output, weights.

    ``scores`` must be a tensor the caller just computed: the mask is applied in place.
    """
    weights = _softmax_kept(
        scores, mask, dim=-1, every_row_keeps=every_row_keeps, scores_are_scratch=True
    )
    weights = weights.to(value.dtype)  # (..., L, S)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    output = weights @ value  # (..., L, S) @ (..., S, Ev) -> (..., L, Ev)
    return output, weights


def _repeat_kv_heads(t: torch.Tensor, q_heads: int) -> torch.Tensor:
    """(..., Hkv, S, E) -> (..., Hq, S, E): each key/value head serves Hq / Hkv query heads."""
    return t.repeat_interleave(q_heads // t.shape[-3], dim=-3)


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    return_weights: bool = False,
):
    """Scaled dot-product attention, O = softmax(Q K^T * scale + mask) V.

    Same semantics as ``torch.nn.functional.scaled_dot_product_attention``: boolean masks
    (True = may attend) and floating masks (added), broadcast over batch dimensions;
    ``is_causal=True`` applies a top-left aligned causal mask; ``enable_gqa=True`` lets
    Hkv key/value heads serve Hq query heads (Hq a multiple of Hkv). Fully masked rows
    give zero weights and a zero output.

    Without ``return_weights`` the work goes to torch's fused kernel. With it, the weights
    are computed explicitly and returned (float16 and bfloat16 inputs are computed in
    float32 and cast back, as torch's kernels do); with dropout they are the weights
    actually applied to the values (after dropout), as ``nn.MultiheadAttention`` returns
    them.

    Stricter than torch, on purpose (each raises a ValueError or TypeError that says
    why): ``scale`` must be a positive finite Python number; ``dropout_p`` must be below 1;
    a floating mask must have the query's dtype; key and value must have the same batch
    dimensions; a mask may not enlarge the batch; ``is_causal`` with ``attn_mask`` is
    refused for every input rank (torch refuses it only for some).

    Args:
        query: (..., L, E), or (..., Hq, L, E) with GQA.
        key: (..., S, E), or (..., Hkv, S, E) with GQA.
        value: (..., S, Ev), or (..., Hkv, S, Ev) with GQA.
        attn_mask: optional boolean or floating mask broadcastable to (..., L, S).
        dropout_p: dropout probability on the weights, in [0, 1).
        is_causal: apply a top-left aligned causal mask; not together with attn_mask.
        scale: multiplier of the scores; None means 1 / sqrt(E).
        enable_gqa: allow fewer key/value heads than query heads.
        return_weights: also return the weights.

    Returns:
        output (..., L, Ev), or ``(output, weights)`` with weights (..., L, S).
    """
    _checks.require_bool("enable_gqa", enable_gqa)
    _checks.require_bool("return_weights", return_weights)
    batch = _check_attention_inputs(query, key, value, same_size=True, enable_gqa=enable_gqa)
    L, S = query.shape[-2], key.shape[-2]
    _check_mask_args(attn_mask, is_causal, batch, L, S, query)
    dropout_p = _checks.check_dropout(dropout_p)
    scale = _checks.check_scale(scale)

    if not return_weights:
        if attn_mask is not None and attn_mask.dim() < 2:  # torch's 4-d kernels want 2 dims
            attn_mask = attn_mask.reshape((1,) * (2 - attn_mask.dim()) + tuple(attn_mask.shape))
        return F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attn_mask,
            dropout_p=dropout_p,
            is_causal=is_causal,
            scale=scale,
            enable_gqa=enable_gqa,
        )

    if enable_gqa:
        key = _repeat_kv_heads(key, query.shape[-3])  # (..., Hq, S, E)
        value = _repeat_kv_heads(value, query.shape[-3])  # (..., Hq, S, Ev)
    compute = _compute_dtype(query.dtype)
    scores = _dot(query.to(compute) * _default_scale(query, scale), key.to(compute))  # (..., L, S)
    return _attention_from_scores(
        scores, value, attn_mask, is_causal, return_weights=True, dropout_p=dropout_p
    )


def dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    return_weights: bool = False,
    *,
    is_causal: bool = False,
):
    """Unscaled dot-product attention, O = softmax(Q K^T + mask) V.

    Args:
        query: (..., L, E).
        key: (..., S, E).
        value: (..., S, Ev).
        attn_mask: optional boolean (True = may attend) or floating mask, broadcastable
            to (..., L, S).
        return_weights: also return the weights (..., L, S).
        is_causal: apply a top-left aligned causal mask; not together with attn_mask.

    Returns:
        output (..., L, Ev), or ``(output, weights)``.
    """
    return scaled_dot_product_attention(
        query, key, value, attn_mask, is_causal=is_causal, scale=1.0, return_weights=return_weights
    )


def _attention_from_scores(scores, value, attn_mask, is_causal, return_weights, dropout_p=0.0):
    """Mask, softmax, optional dropout and weighted sum, for scores (..., L, S) that the
    caller just computed in ``_compute_dtype`` of the inputs (float32 for half precision);
    the results come back in the dtype of ``value`` (..., S, Ev)."""
    L, S = scores.shape[-2], scores.shape[-1]
    mask, every_row_keeps = _combined_mask(attn_mask, is_causal, L, S, scores.device)
    output, weights = _weights_and_output(
        scores, value.to(scores.dtype), mask, dropout_p, every_row_keeps
    )
    output, weights = output.to(value.dtype), weights.to(value.dtype)
    return (output, weights) if return_weights else output


def general_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    W: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    return_weights: bool = False,
    *,
    is_causal: bool = False,
):
    """Bilinear (Luong "general") attention, O = softmax(Q W K^T + mask) V.

    Args:
        query: (..., L, Eq).
        key: (..., S, Ek).
        value: (..., S, Ev).
        W: (Eq, Ek).
        attn_mask: optional boolean or floating mask broadcastable to (..., L, S).
        return_weights: also return the weights (..., L, S).
        is_causal: apply a top-left aligned causal mask; not together with attn_mask.

    Returns:
        output (..., L, Ev), or ``(output, weights)``.
    """
    _checks.require_bool("return_weights", return_weights)
    batch = _check_attention_inputs(query, key, value, same_size=False)
    _check_weight("W", W, (query.shape[-1], key.shape[-1]), query)
    _check_mask_args(attn_mask, is_causal, batch, query.shape[-2], key.shape[-2], query)
    compute = _compute_dtype(query.dtype)
    scores = _bilinear(query.to(compute), key.to(compute), W.to(compute))  # (..., L, S)
    return _attention_from_scores(scores, value, attn_mask, is_causal, return_weights)


def additive_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    W_q: torch.Tensor,
    W_k: torch.Tensor,
    w_v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    return_weights: bool = False,
    *,
    is_causal: bool = False,
):
    """Additive (Bahdanau) attention: scores w_v^T tanh(W_q q_i + W_k k_j), then softmax.

    Args:
        query: (..., L, Eq).
        key: (..., S, Ek).
        value: (..., S, Ev).
        W_q: (H, Eq).
        W_k: (H, Ek).
        w_v: (H,).
        attn_mask: optional boolean or floating mask broadcastable to (..., L, S).
        return_weights: also return the weights (..., L, S).
        is_causal: apply a top-left aligned causal mask; not together with attn_mask.

    Returns:
        output (..., L, Ev), or ``(output, weights)``.
    """
    _checks.require_bool("return_weights", return_weights)
    batch = _check_attention_inputs(query, key, value, same_size=False)
    _check_additive_weights(W_q, W_k, w_v, query, key)
    _check_mask_args(attn_mask, is_causal, batch, query.shape[-2], key.shape[-2], query)
    compute = _compute_dtype(query.dtype)
    q, k, W_q, W_k, w_v = (t.to(compute) for t in (query, key, W_q, W_k, w_v))
    scores = _additive(q, k, W_q, W_k, w_v)  # (..., L, S)
    return _attention_from_scores(scores, value, attn_mask, is_causal, return_weights)
