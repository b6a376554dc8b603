"""Plain NumPy float64 versions of every mechanism, written to read like the formulas.

These are the independent oracle: the tests compare the torch implementations with them,
and the book checks its hand-worked numbers against them. They favour clarity over speed
(loops where the math has a sum over heads or over pairs). Inputs may be anything NumPy
turns into a float64 array; shapes follow the book:

* Q (..., n_q, d_k), K (..., n_k, d_k), V (..., n_k, d_v);
* scores S and weights A (..., n_q, n_k): rows are queries, columns are keys;
* masks: boolean True = may attend, or floating (added to the scores).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "softmax",
    "masked_softmax",
    "dot_scores",
    "scaled_dot_scores",
    "general_scores",
    "additive_scores",
    "causal_mask",
    "padding_mask",
    "attention",
    "dot_product_attention",
    "scaled_dot_product_attention",
    "general_attention",
    "additive_attention",
    "split_heads",
    "merge_heads",
    "multi_head_attention",
    "sinusoidal_encoding",
    "rope",
    "alibi_slopes",
    "alibi_bias",
]


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _transpose(x: np.ndarray) -> np.ndarray:
    """Swap the last two axes: the matrix transpose, batched."""
    return np.swapaxes(x, -1, -2)


# -- softmax ------------------------------------------------------------------------------


def softmax(x, axis: int = -1) -> np.ndarray:
    """softmax(s)_j = exp(s_j - m) / sum_l exp(s_l - m), with m = max_l s_l (s = x).

    Subtracting the maximum m changes nothing mathematically and keeps exp from overflowing.
    """
    x = _f64(x)
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def masked_softmax(scores, mask=None, axis: int = -1) -> np.ndarray:
    """Softmax over the entries a mask keeps; a row that keeps nothing is all zeros.

    Args:
        scores: (..., n_q, n_k).
        mask: None, boolean (True = keep) or floating (added), broadcastable to scores.
    """
    scores = _f64(scores)
    if mask is None:
        return softmax(scores, axis=axis)
    mask = np.asarray(mask)
    if mask.dtype == bool:
        scores = np.where(mask, scores, -np.inf)
    else:
        scores = scores + _f64(mask)
    kept_any = np.any(scores > -np.inf, axis=axis, keepdims=True)
    m = np.where(kept_any, np.max(scores, axis=axis, keepdims=True), 0.0)
    e = np.exp(scores - m)  # exp(-inf) = 0 for removed entries
    total = np.sum(e, axis=axis, keepdims=True)
    return np.where(kept_any, e / np.where(kept_any, total, 1.0), 0.0)


# -- score functions ----------------------------------------------------------------------


def dot_scores(Q, K) -> np.ndarray:
    """S = Q K^T: S[i, j] = q_i . k_j."""
    return _f64(Q) @ _transpose(_f64(K))


def scaled_dot_scores(Q, K, scale=None) -> np.ndarray:
    """S = Q K^T / sqrt(d_k), or Q K^T * scale."""
    Q = _f64(Q)
    d_k = Q.shape[-1]
    scale = 1.0 / np.sqrt(d_k) if scale is None else scale
    return dot_scores(Q, K) * scale


def general_scores(Q, K, W) -> np.ndarray:
    """S[i, j] = q_i^T W k_j (Luong's "general" score); W is (d_q, d_k)."""
    return _f64(Q) @ _f64(W) @ _transpose(_f64(K))


def additive_scores(Q, K, W_q, W_k, w_v) -> np.ndarray:
    """S[i, j] = w_v^T tanh(W_q q_i + W_k k_j) (Bahdanau's score).

    W_q is (d_h, d_q), W_k is (d_h, d_k), w_v is (d_h,).
    """
    Q, K = _f64(Q), _f64(K)
    W_q, W_k, w_v = _f64(W_q), _f64(W_k), _f64(w_v)
    batch = np.broadcast_shapes(Q.shape[:-2], K.shape[:-2])
    Q = np.broadcast_to(Q, batch + Q.shape[-2:])
    K = np.broadcast_to(K, batch + K.shape[-2:])
    n_q, n_k = Q.shape[-2], K.shape[-2]
    S = np.zeros(batch + (n_q, n_k))
    for b in np.ndindex(*batch):
        for i in range(n_q):
            for j in range(n_k):
                S[b + (i, j)] = w_v @ np.tanh(W_q @ Q[b + (i,)] + W_k @ K[b + (j,)])
    return S


# -- masks --------------------------------------------------------------------------------


def causal_mask(n_q: int, n_k: int | None = None, alignment: str = "top_left") -> np.ndarray:
    """Boolean (n_q, n_k): query i may attend to key j when j <= i (+ n_k - n_q if
    ``alignment="bottom_right"``)."""
    n_k = n_q if n_k is None else n_k
    offset = 0 if alignment == "top_left" else n_k - n_q
    mask = np.zeros((n_q, n_k), dtype=bool)
    for i in range(n_q):
        for j in range(n_k):
            mask[i, j] = j <= i + offset
    return mask


def padding_mask(lengths, n_k: int) -> np.ndarray:
    """Boolean (B, 1, n_k): in sequence b every query may attend to the first lengths[b] keys."""
    lengths = np.asarray(lengths)
    mask = np.zeros((len(lengths), 1, n_k), dtype=bool)
    for b, length in enumerate(lengths):
        mask[b, 0, :length] = True
    return mask


# -- mechanisms ---------------------------------------------------------------------------


def attention(scores, V, mask=None):
    """From scores to output: A = masked_softmax(S), O = A V. Returns (O, A)."""
    A = masked_softmax(scores, mask)
    return A @ _f64(V), A


def dot_product_attention(Q, K, V, mask=None):
    """O = softmax(Q K^T) V. Returns (O, A)."""
    return attention(dot_scores(Q, K), V, mask)


def scaled_dot_product_attention(Q, K, V, mask=None, scale=None, is_causal=False):
    """O = softmax(Q K^T / sqrt(d_k)) V, optionally causal (top-left). Returns (O, A).

    Grouped-query inputs (fewer key/value heads on axis -3) are expanded head by head.
    """
    Q, K, V = _f64(Q), _f64(K), _f64(V)
    if Q.ndim >= 3 and K.ndim >= 3 and K.shape[-3] != Q.shape[-3] and K.shape[-3] != 1:
        group = Q.shape[-3] // K.shape[-3]
        K, V = np.repeat(K, group, axis=-3), np.repeat(V, group, axis=-3)
    if is_causal:
        mask = causal_mask(Q.shape[-2], K.shape[-2])
    return attention(scaled_dot_scores(Q, K, scale), V, mask)


def general_attention(Q, K, V, W, mask=None):
    """O = softmax(Q W K^T) V. Returns (O, A)."""
    return attention(general_scores(Q, K, W), V, mask)


def additive_attention(Q, K, V, W_q, W_k, w_v, mask=None):
    """O = softmax(w_v^T tanh(W_q q_i + W_k k_j)) V. Returns (O, A)."""
    return attention(additive_scores(Q, K, W_q, W_k, w_v), V, mask)


# -- multi-head attention -----------------------------------------------------------------


def split_heads(X, h: int) -> np.ndarray:
    """(n, d_model) -> (h, n, d_model / h): head i gets columns i*d_head .. (i+1)*d_head - 1."""
    X = _f64(X)
    d_head = X.shape[-1] // h
    return np.stack([X[..., :, i * d_head : (i + 1) * d_head] for i in range(h)], axis=-3)


def merge_heads(H) -> np.ndarray:
    """(h, n, d_head) -> (n, h * d_head): the heads' outputs side by side."""
    H = _f64(H)
    return np.concatenate([H[..., i, :, :] for i in range(H.shape[-3])], axis=-1)


def multi_head_attention(
    X_q,
    X_k,
    X_v,
    W_q,
    W_k,
    W_v,
    W_o,
    h: int,
    b_q=None,
    b_k=None,
    b_v=None,
    b_o=None,
    mask=None,
    num_kv_heads: int | None = None,
):
    """Multi-head attention with nn.Linear weights (y = x W^T + b). Returns (O, A).

    X_q is (..., n_q, d_model), X_k (..., n_k, kdim), X_v (..., n_k, vdim); W_q and W_o are
    (d_model, d_model), W_k and W_v (d_kv, kdim) and (d_kv, vdim) with d_kv = num_kv_heads
    * d_model / h. ``mask`` broadcasts to (..., h, n_q, n_k). The weights A are per head:
    (..., h, n_q, n_k).
    """

    def linear(X, W, b):
        Y = _f64(X) @ _f64(W).T
        return Y if b is None else Y + _f64(b)

    num_kv_heads = h if num_kv_heads is None else num_kv_heads
    Q = split_heads(linear(X_q, W_q, b_q), h)  # (..., h, n_q, d_head)
    K = split_heads(linear(X_k, W_k, b_k), num_kv_heads)  # (..., h_kv, n_k, d_head)
    V = split_heads(linear(X_v, W_v, b_v), num_kv_heads)  # (..., h_kv, n_k, d_head)
    group = h // num_kv_heads
    heads, weights = [], []
    for i in range(h):
        mask_i = None
        if mask is not None:
            mask = np.asarray(mask)
            mask_i = np.broadcast_to(mask, Q.shape[:-3] + (h,) + mask.shape[-2:])[..., i, :, :]
        O_i, A_i = scaled_dot_product_attention(
            Q[..., i, :, :], K[..., i // group, :, :], V[..., i // group, :, :], mask_i
        )
        heads.append(O_i)
        weights.append(A_i)
    concat = merge_heads(np.stack(heads, axis=-3))  # (..., n_q, d_model)
    return linear(concat, W_o, b_o), np.stack(weights, axis=-3)


# -- positions ----------------------------------------------------------------------------


def sinusoidal_encoding(n: int, d: int, base: float = 10000.0) -> np.ndarray:
    """PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(p / base^(2i/d)); shape (n, d)."""
    PE = np.zeros((n, d))
    for p in range(n):
        for c in range(d):
            i = c // 2  # features 2i and 2i + 1 share a frequency
            angle = p / base ** (2 * i / d)
            PE[p, c] = np.sin(angle) if c % 2 == 0 else np.cos(angle)
    return PE


def rope(X, positions=None, base: float = 10000.0, interleaved: bool = False) -> np.ndarray:
    """Turn feature pair i of the row at position p by the angle p * base^(-2i/d).

    X is (..., n, d) with d even; ``positions`` (n,) defaults to 0 .. n - 1. Pair i is
    (i, i + d/2), or (2i, 2i + 1) when ``interleaved``.
    """
    X = _f64(X)
    n, d = X.shape[-2], X.shape[-1]
    positions = np.arange(n) if positions is None else np.asarray(positions)
    positions = np.broadcast_to(positions, X.shape[:-1])
    out = np.zeros_like(X)
    for index in np.ndindex(*X.shape[:-1]):  # every row: batch indices and its position
        p = positions[index]
        for i in range(d // 2):
            a, b = (2 * i, 2 * i + 1) if interleaved else (i, i + d // 2)
            phi = p * base ** (-2 * i / d)
            rotation = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
            out[index + (a,)], out[index + (b,)] = rotation @ X[index + ((a, b),)]
    return out


def alibi_slopes(h: int) -> np.ndarray:
    """ALiBi's slopes: 2^(-8k/h) for k = 1..h when h is a power of two; otherwise those
    of the power of two below h, then every other slope of twice that power."""

    def geometric(n):
        return [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]

    power = 1
    while power * 2 <= h:
        power *= 2
    if power == h:
        return np.array(geometric(h))
    return np.array(geometric(power) + geometric(2 * power)[0::2][: h - power])


def alibi_bias(
    h: int, n_q: int, n_k: int | None = None, alignment: str = "top_left", causal: bool = True
) -> np.ndarray:
    """(h, n_q, n_k): -m_k times the distance from query i (at i + n_k - n_q when
    bottom-right aligned) back to key j; -inf for future keys when ``causal``, the
    absolute distance otherwise."""
    n_k = n_q if n_k is None else n_k
    offset = 0 if alignment == "top_left" else n_k - n_q
    slopes = alibi_slopes(h)
    bias = np.zeros((h, n_q, n_k))
    for k in range(h):
        for i in range(n_q):
            for j in range(n_k):
                distance = i + offset - j
                if causal:
                    bias[k, i, j] = -slopes[k] * distance if distance >= 0 else -np.inf
                else:
                    bias[k, i, j] = -slopes[k] * abs(distance)
    return bias
