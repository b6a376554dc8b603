"""Attention layers as ``nn.Module``: additive attention and multi-head attention.

Tensors are batch-first: queries (B, L, Eq), keys (B, S, Ek), values (B, S, Ev).
Masks follow the library's convention (boolean True = may attend, floating = added).
Linear layers follow ``nn.Linear`` (y = x W^T + b), so the weights of
``MultiHeadAttention`` copy exactly to and from ``torch.nn.MultiheadAttention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks
from . import functional as AF
from . import positions as P
from .masks import causal_mask, merge_masks

__all__ = ["AdditiveAttention", "MultiHeadAttention"]


def _check_layer_input(name: str, x: object, size: int, like: torch.Tensor | None) -> None:
    _checks.require_floating(name, x)
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (B, seq, {size}), got {tuple(x.shape)}")
    if x.shape[-1] != size:
        raise ValueError(f"{name} must have last dimension {size}, got shape {tuple(x.shape)}")
    if like is not None:
        _checks.require_same_dtype_device(["query", name], [like, x])


def _check_layer_inputs(query, key, value, sizes: tuple[int, int, int], param: torch.Tensor):
    _check_layer_input("query", query, sizes[0], None)
    _check_layer_input("key", key, sizes[1], query)
    _check_layer_input("value", value, sizes[2], query)
    if param.dtype != query.dtype:
        raise TypeError(
            f"query has dtype {query.dtype} but the layer's parameters have dtype "
            f"{param.dtype}; convert the layer with .to(dtype) or the input"
        )
    if param.device != query.device:
        raise ValueError(
            f"query is on {query.device} but the layer's parameters are on {param.device}; "
            f"move the layer with .to(device) or the input"
        )
    if key.shape[0] != query.shape[0] or value.shape[0] != query.shape[0]:
        raise ValueError(
            f"query, key and value must have the same batch size B, got {query.shape[0]}, "
            f"{key.shape[0]} and {value.shape[0]}"
        )
    if key.shape[1] != value.shape[1]:
        raise ValueError(
            f"key and value must have the same length S, got key {tuple(key.shape)} and "
            f"value {tuple(value.shape)}"
        )


class AdditiveAttention(nn.Module):
    """Additive (Bahdanau) attention with learned projections.

    score(q_i, k_j) = w_v^T tanh(W_q q_i + W_k k_j); weights = softmax over keys;
    output_i = sum_j weights_ij v_j.

    Args:
        query_dim: Eq, size of a query.
        key_dim: Ek, size of a key.
        hidden_dim: H, size of the hidden layer inside the score.

    Parameters: ``W_q`` Linear(Eq, H), ``W_k`` Linear(Ek, H), ``w_v`` Linear(H, 1), all
    without bias: H * (Eq + Ek + 1) numbers.
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int):
        super().__init__()
        self.query_dim = _checks.check_positive_int("query_dim", query_dim)
        self.key_dim = _checks.check_positive_int("key_dim", key_dim)
        self.hidden_dim = _checks.check_positive_int("hidden_dim", hidden_dim)
        self.W_q = nn.Linear(query_dim, hidden_dim, bias=False)
        self.W_k = nn.Linear(key_dim, hidden_dim, bias=False)
        self.w_v = nn.Linear(hidden_dim, 1, bias=False)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        *,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from ``query`` (B, L, Eq) to ``key`` (B, S, Ek) and ``value`` (B, S, Ev).

        ``key`` defaults to ``query`` and ``value`` to ``key``. ``attn_mask`` broadcasts to
        (B, L, S). Returns ``(output (B, L, Ev), weights (B, L, S) or None)``.
        """
        key = query if key is None else key
        value = key if value is None else value
        _checks.require_floating("value", value)
        _checks.require_bool("need_weights", need_weights)
        _check_layer_inputs(
            query, key, value, (self.query_dim, self.key_dim, value.shape[-1]), self.W_q.weight
        )
        result = AF.additive_attention(
            query,
            key,
            value,
            self.W_q.weight,
            self.W_k.weight,
            self.w_v.weight[0],
            attn_mask,
            return_weights=need_weights,
            is_causal=is_causal,
        )
        return result if need_weights else (result, None)


class MultiHeadAttention(nn.Module):
    """Multi-head attention, the layer of "Attention Is All You Need".

    Each of h heads projects the inputs to d_head = embed_dim / h dimensions, runs scaled
    dot-product attention, and the heads' outputs are concatenated and projected back.
    With X_q the query-side and X_kv the key/value-side tokens, and W^(r) the rows of a
    projection that belong to head r (counted from 1):

        O^(r) = Attention(X_q W_Q^(r)T, X_kv W_K^(r)T, X_kv W_V^(r)T)
        MHA(X_q, X_kv) = [O^(1) ... O^(h)] W_O^T

    With ``num_kv_heads`` < ``num_heads`` it becomes grouped-query attention (one key/value
    head per group of query heads); ``num_kv_heads=1`` is multi-query attention.

    Args:
        embed_dim: d_model, size of queries and of the output.
        num_heads: h; must divide embed_dim.
        kdim: size of keys (default embed_dim).
        vdim: size of values (default embed_dim).
        bias: use biases in the four projections.
        dropout: dropout on the attention weights, applied in training mode only.
        num_kv_heads: number of key/value heads (default num_heads); must divide num_heads.
        rope: rotate every head's queries and keys with :func:`attncourse.positions.rope`
            (pairs i, i + d_head/2; d_head must be even).
        rope_base: the base of RoPE's frequencies.
        alibi: add :func:`attncourse.positions.alibi_bias` to the scores, one slope per
            head (with ``is_causal=True`` its causal form, else the symmetric one).

    Positional schemes are off by default; then the layer computes exactly what
    ``nn.MultiheadAttention`` computes. With one on, queries sit at positions 0 .. L - 1
    and keys at 0 .. S - 1 (top-left, as ``is_causal``). At most one of ``rope`` and
    ``alibi`` may be on.

    Parameters: ``q_proj`` Linear(d_model, d_model), ``k_proj`` Linear(kdim, d_kv),
    ``v_proj`` Linear(vdim, d_kv), ``out_proj`` Linear(d_model, d_model), with
    d_kv = num_kv_heads * d_head.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        num_kv_heads: int | None = None,
        rope: bool = False,
        rope_base: float = 10000.0,
        alibi: bool = False,
    ):
        super().__init__()
        _checks.check_positive_int("embed_dim", embed_dim)
        _checks.check_positive_int("num_heads", num_heads)
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"num_heads must divide embed_dim, got embed_dim={embed_dim} and "
                f"num_heads={num_heads}"
            )
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        _checks.check_positive_int("num_kv_heads", num_kv_heads)
        if num_heads % num_kv_heads != 0:
            raise ValueError(
                f"num_kv_heads must divide num_heads, got num_heads={num_heads} and "
                f"num_kv_heads={num_kv_heads}"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else _checks.check_positive_int("kdim", kdim)
        self.vdim = embed_dim if vdim is None else _checks.check_positive_int("vdim", vdim)
        self.dropout = _checks.check_dropout(dropout, name="dropout")
        self.rope = _checks.require_bool("rope", rope)
        self.alibi = _checks.require_bool("alibi", alibi)
        self.rope_base = P._check_base(rope_base)
        if rope and alibi:
            raise ValueError("choose one positional scheme: rope=True or alibi=True, not both")
        if rope and self.head_dim % 2:
            raise ValueError(
                f"rope=True needs an even head size embed_dim / num_heads, got "
                f"{embed_dim} / {num_heads} = {self.head_dim}"
            )
        kv_dim = num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, kv_dim, bias=bias)
        self.v_proj = nn.Linear(self.vdim, kv_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # The same initialisation as nn.MultiheadAttention.
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(proj.weight)
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)

    # -- shapes ---------------------------------------------------------------------------

    def split_heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        """(B, L, h * d_head) -> (B, h, L, d_head), for h = ``heads``."""
        B, L, _ = x.shape
        return x.view(B, L, heads, self.head_dim).transpose(1, 2)  # (B, h, L, d_head)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, L, d_head) -> (B, L, h * d_head)."""
        B, h, L, d_head = x.shape
        return x.transpose(1, 2).reshape(B, L, h * d_head)  # (B, L, d_model)

    def _project(self, query, key, value):
        """The three input projections; self-attention uses one fused matmul."""
        if (
            query is key
            and key is value
            and self.num_kv_heads == self.num_heads
            and self.kdim == self.vdim == self.embed_dim
        ):
            weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
            bias = None
            if self.q_proj.bias is not None:
                bias = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
            return F.linear(query, weight, bias).chunk(3, dim=-1)  # 3 x (B, L, d_model)
        return self.q_proj(query), self.k_proj(key), self.v_proj(value)

    def _head_mask(self, attn_mask, key_padding, B, L, S, like):
        """Bring the masks to a shape that broadcasts to (B, h, L, S), and merge them."""
        mask = None
        if attn_mask is not None:
            _checks.require_tensor("attn_mask", attn_mask)
            if attn_mask.dim() == 3:  # (B, L, S) or (1, L, S): the same for every head
                attn_mask = attn_mask.unsqueeze(1)
            _checks.check_mask(attn_mask, (B, self.num_heads, L, S), like)
            mask = attn_mask
        if key_padding is not None:
            _checks.require_tensor("key_padding", key_padding)
            if tuple(key_padding.shape) != (B, S):
                raise ValueError(
                    f"key_padding must have shape (B, S) = {(B, S)} with True = a real key, "
                    f"got {tuple(key_padding.shape)}"
                )
            padding = key_padding[:, None, None, :]  # (B, 1, 1, S)
            _checks.check_mask(padding, (B, self.num_heads, L, S), like, name="key_padding")
            mask = merge_masks(mask, padding)
        return mask

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        *,
        attn_mask: torch.Tensor | None = None,
        key_padding: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        average_attn_weights: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Multi-head attention from ``query`` (B, L, d_model) to ``key``/``value``.

        Args:
            query: (B, L, d_model).
            key: (B, S, kdim); defaults to ``query`` (self-attention).
            value: (B, S, vdim); defaults to ``key``.
            attn_mask: boolean (True = may attend) or floating mask, of shape (L, S),
                (B, L, S) or broadcastable to (B, h, L, S).
            key_padding: boolean (B, S), True = a real key, False = padding.
            is_causal: apply a top-left aligned causal mask; not together with attn_mask.
            need_weights: also return the attention weights.
            average_attn_weights: average the returned weights over heads.

        Returns:
            ``(output, weights)``: output (B, L, d_model); weights None, or (B, L, S) when
            averaged, or (B, h, L, S) per head.
        """
        key = query if key is None else key
        value = key if value is None else value
        _check_layer_inputs(
            query, key, value, (self.embed_dim, self.kdim, self.vdim), self.q_proj.weight
        )
        _checks.require_bool("is_causal", is_causal)
        _checks.require_bool("need_weights", need_weights)
        _checks.require_bool("average_attn_weights", average_attn_weights)
        if is_causal and attn_mask is not None:
            raise ValueError("pass either attn_mask or is_causal=True, not both")
        B, L, S = query.shape[0], query.shape[1], key.shape[1]
        mask = self._head_mask(attn_mask, key_padding, B, L, S, query)
        if self.alibi and L > 0 and S > 0:  # ALiBi's bias is a floating mask (h, L, S)
            bias = P.alibi_bias(
                self.num_heads, L, S, causal=is_causal, dtype=query.dtype, device=query.device
            )
            mask, is_causal = merge_masks(bias, mask), False  # the causal part is in bias
        if is_causal and mask is not None:  # causal together with key padding
            if L > 0 and S > 0:  # (with no queries or no keys there is nothing to mask)
                mask = merge_masks(causal_mask(L, S, device=query.device), mask)
            is_causal = False

        # 1. Project and split into heads.
        q, k, v = self._project(query, key, value)  # (B, L, d_model), (B, S, d_kv) x 2
        q = self.split_heads(q, self.num_heads)  # (B, h, L, d_head)
        k = self.split_heads(k, self.num_kv_heads)  # (B, h_kv, S, d_head)
        v = self.split_heads(v, self.num_kv_heads)  # (B, h_kv, S, d_head)
        if self.rope:  # turn queries and keys (never values) by their positions
            q = P.rope(q, base=self.rope_base)  # (B, h, L, d_head)
            k = P.rope(k, base=self.rope_base)  # (B, h_kv, S, d_head)

        # 2. Attention in every head at once.
        dropout_p = self.dropout if self.training else 0.0
        result = AF.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=dropout_p,
            is_causal=is_causal,
            enable_gqa=self.num_kv_heads != self.num_heads,
            return_weights=need_weights,
        )
        heads, weights = result if need_weights else (result, None)  # (B, h, L, d_head)

        # 3. Concatenate the heads and project.
        output = self.out_proj(self.merge_heads(heads))  # (B, L, d_model)
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)  # (B, L, S)
        return output, weights

    # -- exchange with torch.nn.MultiheadAttention ---------------------------------------

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> "MultiHeadAttention":
        """A ``MultiHeadAttention`` with exactly the weights of ``mha``.

        Works for packed (``in_proj_weight``) and separate projections, with and without
        bias, and ``batch_first`` either way (ours is always batch-first). ``add_bias_kv``
        and ``add_zero_attn`` have no counterpart here and raise ``ValueError``.
        """
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"mha must be an nn.MultiheadAttention, got {type(mha).__name__}")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError(
                "mha uses add_bias_kv or add_zero_attn, which MultiHeadAttention does not support"
            )
        bias = mha.in_proj_bias is not None
        ours = cls(
            mha.embed_dim,
            mha.num_heads,
            kdim=mha.kdim,
            vdim=mha.vdim,
            bias=bias,
            dropout=mha.dropout,
        )
        param = mha.out_proj.weight
        ours.to(dtype=param.dtype, device=param.device)
        E = mha.embed_dim
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                w_q, w_k, w_v = mha.in_proj_weight.split(E)
            else:
                w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
            for proj, w in ((ours.q_proj, w_q), (ours.k_proj, w_k), (ours.v_proj, w_v)):
                proj.weight.copy_(w)
            ours.out_proj.weight.copy_(mha.out_proj.weight)
            if bias:
                for proj, b in zip((ours.q_proj, ours.k_proj, ours.v_proj), mha.in_proj_bias.split(E)):
                    proj.bias.copy_(b)
                ours.out_proj.bias.copy_(mha.out_proj.bias)
        ours.train(mha.training)
        return ours

    def to_torch(self, *, batch_first: bool = True) -> nn.MultiheadAttention:
        """An ``nn.MultiheadAttention`` with exactly these weights.

        Grouped-query layers (num_kv_heads < num_heads) and layers with a positional
        scheme have no counterpart in torch and raise ``ValueError``.
        """
        if self.rope or self.alibi:
            raise ValueError(
                "nn.MultiheadAttention has no positional scheme: convert a layer made with "
                f"rope=False and alibi=False, got rope={self.rope} and alibi={self.alibi}"
            )
        if self.num_kv_heads != self.num_heads:
            raise ValueError(
                "nn.MultiheadAttention has no grouped-query form: num_kv_heads "
                f"({self.num_kv_heads}) must equal num_heads ({self.num_heads}) to convert"
            )
        param = self.q_proj.weight
        bias = self.q_proj.bias is not None
        mha = nn.MultiheadAttention(
            self.embed_dim,
            self.num_heads,
            dropout=self.dropout,
            bias=bias,
            kdim=self.kdim,
            vdim=self.vdim,
            batch_first=batch_first,
            device=param.device,
            dtype=param.dtype,
        )
        weights = (self.q_proj.weight, self.k_proj.weight, self.v_proj.weight)
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                mha.in_proj_weight.copy_(torch.cat(weights))
            else:
                mha.q_proj_weight.copy_(weights[0])
                mha.k_proj_weight.copy_(weights[1])
                mha.v_proj_weight.copy_(weights[2])
            mha.out_proj.weight.copy_(self.out_proj.weight)
            if bias:
                mha.in_proj_bias.copy_(
                    torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
                )
                mha.out_proj.bias.copy_(self.out_proj.bias)
        mha.train(self.training)
        return mha
