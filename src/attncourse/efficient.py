"""Exact attention that never stores the whole score matrix, and a key/value cache.

Letters for shapes, as in :mod:`attncourse.functional`:

* ``...`` batch dimensions (batch, heads), which broadcast;
* ``L`` = n_q queries, ``S`` = n_k keys (= values), ``E`` = d_k, ``Ev`` = d_v;
* ``Bq`` and ``Bk`` the number of queries and keys in one block.

:func:`blockwise_attention` computes ``softmax(Q K^T * scale + mask) V`` one block of queries
at a time, walking over blocks of keys with the *online softmax*: a running row maximum
``m``, a running sum of exponentials ``l`` and an unnormalised output ``acc``. When a new
block raises the maximum from ``m`` to ``m'``, everything summed so far is multiplied by
``exp(m - m')``, so that at the end ``acc / l`` is exactly the softmax-weighted sum of the
values. Only a (..., Bq, Bk) block of scores exists at any time.

The backward pass (:class:`_BlockwiseAttention`) keeps only the inputs, the output and the
per-row log-sum-exp ``lse = m + log l`` and recomputes each block of weights as
``exp(scores - lse)``, so training memory also grows linearly with the sequence length.

:class:`KVCache` stores the keys and values of the tokens decoded so far; attending from
the newest queries uses a bottom-right aligned causal mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch.autograd.function import once_differentiable

from . import _checks
from .functional import _check_attention_inputs, _check_mask_args, _default_scale
from .masks import ALIGNMENTS

__all__ = ["blockwise_attention", "KVCache", "DEFAULT_BLOCK_SIZE"]

#: Default (query block, key block) sizes, chosen by timing the forward pass on a shared
#: 2-core CPU (benchmarks/bench_efficient.py sweeps them): each block is a large matrix
#: product, so the per-operation cost (Python, thread synchronisation) is paid rarely; a
#: block of float32 scores is 16 MiB per batch entry and head. Smaller blocks save memory.
DEFAULT_BLOCK_SIZE = (2048, 2048)

_LOW_PRECISION = (torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------------------
# Blocks and their masks
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _MaskSpec:
    """What to mask in every block: an explicit mask, a causal rule, or nothing.

    ``dense`` is the caller's mask expanded (as a view, no copy) to (..., L, S);
    ``causal_offset`` is None without a causal mask, else query i sees keys j <= i + offset
    (0 for top-left alignment, S - L for bottom-right).
    """

    dense: torch.Tensor | None
    causal_offset: int | None


def _spans(length: int, block: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive blocks covering range(length); the last may be short."""
    for start in range(0, length, block):
        yield start, min(start + block, length)


def _block_is_hidden(spec: _MaskSpec, q_span: tuple[int, int], k_span: tuple[int, int]) -> bool:
    """True when the causal rule hides every key of the block from every query of it."""
    if spec.causal_offset is None:
        return False
    last_query = q_span[1] - 1
    return k_span[0] > last_query + spec.causal_offset


def _masked_block_scores(
    scores: torch.Tensor,
    spec: _MaskSpec,
    q_span: tuple[int, int],
    k_span: tuple[int, int],
) -> torch.Tensor:
    """Mask one block of scores (..., Bq, Bk) in place; removed entries become -inf."""
    if spec.dense is not None:
        block_mask = spec.dense[..., q_span[0] : q_span[1], k_span[0] : k_span[1]]
        if block_mask.dtype == torch.bool:
            return scores.masked_fill_(~block_mask, float("-inf"))
        return scores.add_(block_mask)
    if spec.causal_offset is not None:
        if k_span[1] - 1 <= q_span[0] + spec.causal_offset:
            return scores  # the whole block lies on or below the diagonal
        query_pos = torch.arange(q_span[0], q_span[1], device=scores.device)  # (Bq,)
        key_pos = torch.arange(k_span[0], k_span[1], device=scores.device)  # (Bk,)
        visible = key_pos.unsqueeze(0) <= query_pos.unsqueeze(-1) + spec.causal_offset  # (Bq, Bk)
        return scores.masked_fill_(~visible, float("-inf"))
    return scores


def _block_scores(q_block, k_block, spec, q_span, k_span) -> torch.Tensor:
    """Masked scores of one block: (..., Bq, E) @ (..., E, Bk) -> (..., Bq, Bk).

    ``q_block`` is already multiplied by the scale.
    """
    scores = q_block @ k_block.transpose(-2, -1)  # (..., Bq, Bk)
    return _masked_block_scores(scores, spec, q_span, k_span)


# ---------------------------------------------------------------------------------------
# Forward: the online softmax over key blocks
# ---------------------------------------------------------------------------------------


def _safe_max(row_max: torch.Tensor) -> torch.Tensor:
    """The row maximum with -inf replaced by 0, so that exp(scores - max) never sees inf - inf."""
    return row_max.masked_fill(row_max == float("-inf"), 0.0)


def _forward_query_block(q_block, key, value_and_ones, spec, q_span, key_block):
    """Online softmax for one block of queries.

    Args:
        q_block: scaled queries (..., Bq, E).
        key: (..., S, E).
        value_and_ones: the values with a column of ones appended, (..., S, Ev + 1), so that
            one product P @ [V | 1] gives both P V and the row sums of P.

    Returns:
        output (..., Bq, Ev) and log-sum-exp (..., Bq, 1), -inf for rows that see no key.
    """
    batch, n_queries = q_block.shape[:-2], q_block.shape[-2]
    running_max = q_block.new_full((*batch, n_queries, 1), float("-inf"))  # m: (..., Bq, 1)
    # acc[..., :Ev] is the unnormalised output, acc[..., Ev:] the running sum l.
    acc = q_block.new_zeros((*batch, n_queries, value_and_ones.shape[-1]))  # (..., Bq, Ev + 1)
    for k_span in _spans(key.shape[-2], key_block):
        if _block_is_hidden(spec, q_span, k_span):
            continue
        k_block = key[..., k_span[0] : k_span[1], :]  # (..., Bk, E)
        v_block = value_and_ones[..., k_span[0] : k_span[1], :]  # (..., Bk, Ev + 1)
        scores = _block_scores(q_block, k_block, spec, q_span, k_span)  # (..., Bq, Bk)
        # 1. The new running maximum m' = max(m, max_j s_j), made safe for empty rows.
        new_max = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True))
        shift = _safe_max(new_max)  # (..., Bq, 1)
        # 2. Rescale what was summed against the old maximum: exp(m - m').
        correction = torch.exp(running_max - shift)  # (..., Bq, 1); exp(-inf) = 0 at start
        unnormalised = scores.sub_(shift).exp_()  # P = exp(s_j - m'), in place: (..., Bq, Bk)
        # 3. acc' = acc * exp(m - m') + P [V | 1]: the output and l' = l exp(m - m') + sum_j P_j.
        acc.mul_(correction).add_(unnormalised @ v_block)  # (..., Bq, Bk) @ (..., Bk, Ev + 1)
        running_max = new_max
    running_sum = acc[..., -1:]  # l: (..., Bq, 1)
    # A row saw no key when its maximum is still -inf. (Not "l > 0": a NaN must stay NaN.)
    seen_any = running_max != float("-inf")  # (..., Bq, 1)
    output = torch.where(seen_any, acc[..., :-1] / torch.where(seen_any, running_sum, 1.0), 0.0)
    log_sum_exp = torch.where(
        seen_any, _safe_max(running_max) + torch.log(running_sum), float("-inf")
    )  # (..., Bq, 1)
    return output, log_sum_exp


def _forward(query, key, value, spec, scale, block_size):
    """Blockwise forward on checked, equally batched inputs.

    Returns output (..., L, Ev) and log-sum-exp (..., L, 1).
    """
    query_block, key_block = block_size
    ones = value.new_ones((*value.shape[:-1], 1))  # (..., S, 1)
    value_and_ones = torch.cat([value, ones], dim=-1)  # (..., S, Ev + 1)
    outputs, log_sum_exps = [], []
    for q_span in _spans(query.shape[-2], query_block):
        q_block = query[..., q_span[0] : q_span[1], :] * scale  # (..., Bq, E)
        output, lse = _forward_query_block(q_block, key, value_and_ones, spec, q_span, key_block)
        outputs.append(output)
        log_sum_exps.append(lse)
    if not outputs:  # L == 0
        empty = query.new_zeros((*query.shape[:-1], value.shape[-1]))
        return empty, query.new_zeros((*query.shape[:-1], 1))
    return torch.cat(outputs, dim=-2), torch.cat(log_sum_exps, dim=-2)


# ---------------------------------------------------------------------------------------
# Backward: recompute each block of weights from the log-sum-exp
# ---------------------------------------------------------------------------------------


def _zeros(like: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor of zeros shaped like ``like`` (which may be an expanded view)."""
    return torch.zeros(like.shape, dtype=like.dtype, device=like.device)


def _backward(
    query, key, value, output, log_sum_exp, grad_output, spec, scale, block_size, want_mask_grad
):
    """Gradients with respect to query, key, value and (if asked) a floating mask.

    With P = exp(scores - lse) the weights of one block and D_i = sum_e dO_ie O_ie:
    dV += P^T dO,  dP = dO V^T,  dS = P * (dP - D),  dQ += dS K * scale,  dK += dS^T Q * scale,
    and the gradient of an added mask is dS itself.
    """
    query_block, key_block = block_size
    grad_query = _zeros(query)  # (..., L, E)
    grad_key = _zeros(key)  # (..., S, E)
    grad_value = _zeros(value)  # (..., S, Ev)
    grad_mask = _zeros(spec.dense) if want_mask_grad else None  # (..., L, S), only if asked
    row_dot = (grad_output * output).sum(dim=-1, keepdim=True)  # D: (..., L, 1)
    for q_span in _spans(query.shape[-2], query_block):
        q_rows = slice(q_span[0], q_span[1])
        q_block = query[..., q_rows, :] * scale  # (..., Bq, E)
        lse = log_sum_exp[..., q_rows, :]  # (..., Bq, 1)
        sees_nothing = lse == float("-inf")  # (..., Bq, 1)
        safe_lse = lse.masked_fill(sees_nothing, 0.0)
        d_out = grad_output[..., q_rows, :]  # (..., Bq, Ev)
        for k_span in _spans(key.shape[-2], key_block):
            if _block_is_hidden(spec, q_span, k_span):
                continue
            k_rows = slice(k_span[0], k_span[1])
            scores = _block_scores(q_block, key[..., k_rows, :], spec, q_span, k_span)
            weights = scores.sub_(safe_lse).exp_()  # P = exp(s - lse), in place: (..., Bq, Bk)
            weights.masked_fill_(sees_nothing, 0.0)
            grad_value[..., k_rows, :] += weights.transpose(-2, -1) @ d_out  # (..., Bk, Ev)
            grad_weights = d_out @ value[..., k_rows, :].transpose(-2, -1)  # dP: (..., Bq, Bk)
            grad_scores = grad_weights.sub_(row_dot[..., q_rows, :]).mul_(weights)  # dS, in place
            grad_query[..., q_rows, :] += (grad_scores @ key[..., k_rows, :]) * scale
            grad_key[..., k_rows, :] += grad_scores.transpose(-2, -1) @ q_block
            if grad_mask is not None:
                grad_mask[..., q_rows, k_rows] = grad_scores
    # q_block already carried the scale, so dK = dS^T (Q * scale) needs nothing more.
    return grad_query, grad_key, grad_value, grad_mask


class _BlockwiseAttention(torch.autograd.Function):
    """Blockwise attention whose backward recomputes the weights block by block.

    Saved for backward: query, key, value, the output and the log-sum-exp (..., L, 1);
    never a (L, S) matrix (except a caller's own floating mask, which is an input).
    """

    @staticmethod
    def forward(ctx, query, key, value, dense_mask, causal_offset, scale, block_size):
        spec = _MaskSpec(dense_mask, causal_offset)
        output, log_sum_exp = _forward(query, key, value, spec, scale, block_size)
        ctx.save_for_backward(query, key, value, output, log_sum_exp, dense_mask)
        ctx.causal_offset, ctx.scale, ctx.block_size = causal_offset, scale, block_size
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        query, key, value, output, log_sum_exp, dense_mask = ctx.saved_tensors
        spec = _MaskSpec(dense_mask, ctx.causal_offset)
        want_mask_grad = ctx.needs_input_grad[3]
        grads = _backward(
            query, key, value, output, log_sum_exp, grad_output,
            spec, ctx.scale, ctx.block_size, want_mask_grad,
        )
        grad_query, grad_key, grad_value, grad_mask = grads
        return grad_query, grad_key, grad_value, grad_mask, None, None, None


# ---------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------


def _check_block_size(block_size: object) -> tuple[int, int]:
    """An int (both blocks) or a pair (query block, key block) of positive ints."""
    if isinstance(block_size, (tuple, list)):
        if len(block_size) != 2:
            raise ValueError(
                "block_size must be an int or a pair (query block, key block), "
                f"got a sequence of length {len(block_size)}"
            )
        query_block = _checks.check_positive_int("block_size[0]", block_size[0])
        key_block = _checks.check_positive_int("block_size[1]", block_size[1])
        return query_block, key_block
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(
            "block_size must be an int or a pair (query block, key block) of ints, "
            f"got {type(block_size).__name__}"
        )
    size = _checks.check_positive_int("block_size", block_size)
    return size, size


def _causal_offset(is_causal: bool, alignment: str, L: int, S: int) -> int | None:
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    if not is_causal:
        return None
    return 0 if alignment == "top_left" else S - L


def blockwise_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    block_size: int | tuple[int, int] = DEFAULT_BLOCK_SIZE,
    alignment: str = "top_left",
) -> torch.Tensor:
    """Exact scaled dot-product attention computed block by block with the online softmax.

    Same result as :func:`attncourse.functional.scaled_dot_product_attention` (masks,
    broadcasting, causal, fully masked rows give a zero output with finite gradients),
    but at most one (..., Bq, Bk) block of scores exists at a time, in the forward and in
    the backward pass; memory grows linearly with L and S. A causal mask is generated
    block by block; an explicit ``attn_mask`` of shape (..., L, S) is accepted and read a
    block at a time (it is itself quadratic, of course). Half-precision inputs are
    computed in float32 and the output is cast back.

    Args:
        query: (..., L, E).
        key: (..., S, E).
        value: (..., S, Ev).
        attn_mask: optional boolean (True = may attend) or floating (added) mask,
            broadcastable to (..., L, S). A floating mask receives a gradient.
        is_causal: apply a causal mask; not together with ``attn_mask``.
        scale: multiplier of the scores; None means 1 / sqrt(E).
        block_size: an int for both, or (Bq, Bk): queries and keys per block.
        alignment: of the causal mask, ``"top_left"`` (as torch's ``is_causal``) or
            ``"bottom_right"`` (the last query sees the last key; used when decoding
            with a cache).

    Returns:
        output (..., L, Ev) in the dtype of the inputs.
    """
    batch = _check_attention_inputs(query, key, value, same_size=True)
    L, S = query.shape[-2], key.shape[-2]
    _check_mask_args(attn_mask, is_causal, batch, L, S, query)
    scale = _default_scale(query, _checks.check_scale(scale))
    block_size = _check_block_size(block_size)
    causal_offset = _causal_offset(is_causal, alignment, L, S)

    input_dtype = query.dtype
    compute_dtype = torch.float32 if query.dtype in _LOW_PRECISION else query.dtype
    # Broadcast the batch dimensions as views; autograd sums the gradients back.
    query = query.to(compute_dtype).expand(*batch, L, query.shape[-1])  # (..., L, E)
    key = key.to(compute_dtype).expand(*batch, S, key.shape[-1])  # (..., S, E)
    value = value.to(compute_dtype).expand(*batch, S, value.shape[-1])  # (..., S, Ev)
    dense_mask = None
    if attn_mask is not None:
        if attn_mask.is_floating_point():
            attn_mask = attn_mask.to(compute_dtype)
        dense_mask = attn_mask.expand(*batch, L, S)  # a view: (..., L, S)
    output = _BlockwiseAttention.apply(
        query, key, value, dense_mask, causal_offset, scale, block_size
    )
    return output.to(input_dtype)


# ---------------------------------------------------------------------------------------
# Decoding with a key/value cache
# ---------------------------------------------------------------------------------------


class KVCache:
    """Keys and values of the positions decoded so far, appended step by step.

    Each decoding step appends the keys and values of its new positions (one token, or
    several at once) and attends from their queries to everything cached. The new queries
    are the *last* L of the S cached positions, so query i may see keys 0..i + (S - L): a
    causal mask aligned to the bottom right. Outputs equal those of full causal attention
    over the whole sequence.

    Storage is allocated on the first append: ``max_length`` positions at once when given
    (appending beyond it is an error), otherwise a buffer that doubles when full.

    Args:
        max_length: optional number of positions to preallocate.

    Example::

        cache = KVCache()
        for q_t, k_t, v_t in steps:              # each (..., 1, E), (..., 1, E), (..., 1, Ev)
            out_t = cache.step(q_t, k_t, v_t)    # (..., 1, Ev)
    """

    def __init__(self, max_length: int | None = None) -> None:
        if max_length is not None:
            _checks.check_positive_int("max_length", max_length)
        self.max_length = max_length
        self.length = 0
        self._keys: torch.Tensor | None = None  # (..., capacity, E)
        self._values: torch.Tensor | None = None  # (..., capacity, Ev)

    def __len__(self) -> int:
        return self.length

    @property
    def capacity(self) -> int:
        """Positions the storage holds before it must grow (0 before the first append)."""
        return 0 if self._keys is None else self._keys.shape[-2]

    @property
    def keys(self) -> torch.Tensor:
        """The cached keys (..., length, E), a view of the storage."""
        self._require_started()
        return self._keys[..., : self.length, :]

    @property
    def values(self) -> torch.Tensor:
        """The cached values (..., length, Ev), a view of the storage."""
        self._require_started()
        return self._values[..., : self.length, :]

    def _require_started(self) -> None:
        if self._keys is None:
            raise ValueError("the cache is empty: append keys and values first")

    def _check_new(self, key: torch.Tensor, value: torch.Tensor) -> None:
        _check_attention_inputs(key, key, value, same_size=True)
        if self._keys is None:
            return
        stored_key, stored_value = self._keys, self._values
        if key.shape[:-2] != stored_key.shape[:-2] or key.shape[-1] != stored_key.shape[-1]:
            expected = (*stored_key.shape[:-2], "n_new", stored_key.shape[-1])
            raise ValueError(
                f"key must have shape {expected} like the cached keys, got {tuple(key.shape)}"
            )
        if value.shape[-1] != stored_value.shape[-1]:
            raise ValueError(
                f"value must have last dimension Ev = {stored_value.shape[-1]} like the "
                f"cached values, got {tuple(value.shape)}"
            )
        _checks.require_same_dtype_device(["cached keys", "key"], [stored_key, key])

    def _reserve(self, needed: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Make room for ``needed`` positions in total, allocating or doubling the storage."""
        if self.max_length is not None and needed > self.max_length:
            raise ValueError(
                f"the cache holds at most max_length={self.max_length} positions; "
                f"appending would make {needed}"
            )
        if needed <= self.capacity:
            return
        if self.max_length is not None:
            capacity = self.max_length
        else:
            capacity = max(needed, 2 * self.capacity)
        new_keys = key.new_zeros((*key.shape[:-2], capacity, key.shape[-1]))  # (..., C, E)
        new_values = value.new_zeros((*value.shape[:-2], capacity, value.shape[-1]))  # (..., C, Ev)
        if self._keys is not None:
            new_keys[..., : self.length, :] = self.keys
            new_values[..., : self.length, :] = self.values
        self._keys, self._values = new_keys, new_values

    def append(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store keys (..., n_new, E) and values (..., n_new, Ev); return all cached so far.

        The storage is written in place, so gradients do not flow through the cache: it is
        meant for inference (use it under ``torch.no_grad()``).
        """
        self._check_new(key, value)
        start, stop = self.length, self.length + key.shape[-2]
        self._reserve(stop, key, value)
        self._keys[..., start:stop, :] = key
        self._values[..., start:stop, :] = value
        self.length = stop
        return self.keys, self.values

    def attend(
        self,
        query: torch.Tensor,
        scale: float | None = None,
        *,
        block_size: int | tuple[int, int] = DEFAULT_BLOCK_SIZE,
    ) -> torch.Tensor:
        """Causal attention of the newest L positions' queries (..., L, E) over the cache.

        The queries belong to the last L cached positions, hence the bottom-right alignment.
        """
        self._require_started()
        _checks.require_tensor("query", query)
        if query.dim() >= 2 and query.shape[-2] > self.length:
            raise ValueError(
                f"query has {query.shape[-2]} positions (dimension -2) but the cache holds "
                f"only {self.length}: append the new keys and values before attending"
            )
        return blockwise_attention(
            query, self.keys, self.values, is_causal=True, scale=scale,
            block_size=block_size, alignment="bottom_right",
        )

    def step(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        scale: float | None = None,
        *,
        block_size: int | tuple[int, int] = DEFAULT_BLOCK_SIZE,
    ) -> torch.Tensor:
        """One decoding step: append ``key``/``value`` (..., n_new, ·), attend from ``query``."""
        self.append(key, value)
        return self.attend(query, scale, block_size=block_size)
