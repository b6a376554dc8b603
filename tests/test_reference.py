"""The torch implementations against the NumPy float64 references (rtol = atol = 1e-10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attn_helpers import randn, random_bool_mask, seeded
from attncourse import functional as AF
from attncourse import masks as M
from attncourse import reference as R
from attncourse.modules import AdditiveAttention, MultiHeadAttention

TOL = {"rtol": 1e-10, "atol": 1e-10}


def assert_matches_reference(actual: torch.Tensor, expected: np.ndarray) -> None:
    assert actual.dtype == torch.float64
    np.testing.assert_allclose(actual.detach().cpu().numpy(), expected, **TOL)


def _mask(kind: str, shape: tuple[int, ...], gen: torch.Generator):
    """None, a boolean mask with one fully masked row, or the same as an additive mask."""
    if kind == "none":
        return None
    keep = random_bool_mask(*shape, gen=gen)
    keep[..., 0, :] = False
    if kind == "bool":
        return keep
    return randn(*shape, gen=gen).masked_fill(~keep, float("-inf"))


def _np(mask):
    return None if mask is None else mask.numpy()


MASK_KINDS = ["none", "bool", "float"]


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_masked_softmax(kind):
    gen = seeded(20)
    scores = randn(2, 3, 4, 6, gen=gen)
    mask = _mask(kind, (3, 4, 6), gen)
    assert_matches_reference(AF.masked_softmax(scores, mask), R.masked_softmax(scores, _np(mask)))


def test_softmax_on_another_axis():
    scores = randn(3, 4, gen=seeded(21))
    assert_matches_reference(AF.masked_softmax(scores, dim=0), R.softmax(scores.numpy(), axis=0))


def test_score_functions():
    gen = seeded(22)
    q, k = randn(2, 4, 3, gen=gen), randn(2, 5, 3, gen=gen)
    k_other = randn(2, 5, 6, gen=gen)  # keys of another size for the bilinear/additive scores
    W = randn(3, 6, gen=gen)
    W_q, W_k, w_v = randn(7, 3, gen=gen), randn(7, 6, gen=gen), randn(7, gen=gen)
    assert_matches_reference(AF.dot_scores(q, k), R.dot_scores(q, k))
    assert_matches_reference(AF.scaled_dot_scores(q, k), R.scaled_dot_scores(q, k))
    assert_matches_reference(AF.scaled_dot_scores(q, k, 0.25), R.scaled_dot_scores(q, k, 0.25))
    assert_matches_reference(AF.general_scores(q, k_other, W), R.general_scores(q, k_other, W))
    assert_matches_reference(
        AF.additive_scores(q, k_other, W_q, W_k, w_v), R.additive_scores(q, k_other, W_q, W_k, w_v)
    )


def _check_pair(result, expected) -> None:
    (output, weights), (O, A) = result, expected
    assert_matches_reference(output, O)
    assert_matches_reference(weights, A)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_dot_and_scaled_dot_product_attention(kind):
    gen = seeded(23)
    Q, K, V = randn(2, 3, 4, 5, gen=gen), randn(2, 3, 6, 5, gen=gen), randn(2, 3, 6, 2, gen=gen)
    mask = _mask(kind, (2, 1, 4, 6), gen)
    _check_pair(
        AF.dot_product_attention(Q, K, V, mask, return_weights=True),
        R.dot_product_attention(Q, K, V, _np(mask)),
    )
    _check_pair(
        AF.scaled_dot_product_attention(Q, K, V, mask, return_weights=True),
        R.scaled_dot_product_attention(Q, K, V, _np(mask)),
    )
    _check_pair(
        AF.scaled_dot_product_attention(Q, K, V, mask, scale=0.7, return_weights=True),
        R.scaled_dot_product_attention(Q, K, V, _np(mask), scale=0.7),
    )
    fused = AF.scaled_dot_product_attention(Q, K, V, mask)
    assert_matches_reference(fused, R.scaled_dot_product_attention(Q, K, V, _np(mask))[0])


@pytest.mark.parametrize("L, S", [(4, 4), (3, 6), (6, 3)])
def test_causal_attention(L, S):
    gen = seeded(24)
    Q, K, V = randn(2, L, 5, gen=gen), randn(2, S, 5, gen=gen), randn(2, S, 3, gen=gen)
    expected = R.scaled_dot_product_attention(Q, K, V, is_causal=True)
    _check_pair(AF.scaled_dot_product_attention(Q, K, V, is_causal=True, return_weights=True), expected)
    assert_matches_reference(AF.scaled_dot_product_attention(Q, K, V, is_causal=True), expected[0])
    bottom_right = M.causal_mask(L, S, alignment="bottom_right")
    _check_pair(
        AF.scaled_dot_product_attention(Q, K, V, bottom_right, return_weights=True),
        R.scaled_dot_product_attention(Q, K, V, R.causal_mask(L, S, alignment="bottom_right")),
    )


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_grouped_query_attention(kv_heads):
    gen = seeded(25)
    Q, K, V = randn(2, 4, 5, 3, gen=gen), randn(2, kv_heads, 6, 3, gen=gen), randn(2, kv_heads, 6, 2, gen=gen)
    expected = R.scaled_dot_product_attention(Q, K, V)
    _check_pair(AF.scaled_dot_product_attention(Q, K, V, enable_gqa=True, return_weights=True), expected)
    assert_matches_reference(AF.scaled_dot_product_attention(Q, K, V, enable_gqa=True), expected[0])


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_general_attention(kind):
    gen = seeded(26)
    Q, K, V = randn(3, 4, 5, gen=gen), randn(3, 6, 2, gen=gen), randn(3, 6, 4, gen=gen)
    W = randn(5, 2, gen=gen)
    mask = _mask(kind, (3, 4, 6), gen)
    _check_pair(
        AF.general_attention(Q, K, V, W, mask, return_weights=True),
        R.general_attention(Q, K, V, W, _np(mask)),
    )


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_additive_attention(kind):
    gen = seeded(27)
    Q, K, V = randn(3, 4, 5, gen=gen), randn(3, 6, 2, gen=gen), randn(3, 6, 4, gen=gen)
    W_q, W_k, w_v = randn(7, 5, gen=gen), randn(7, 2, gen=gen), randn(7, gen=gen)
    mask = _mask(kind, (4, 6), gen)
    expected = R.additive_attention(Q, K, V, W_q, W_k, w_v, _np(mask))
    _check_pair(AF.additive_attention(Q, K, V, W_q, W_k, w_v, mask, return_weights=True), expected)
    assert_matches_reference(AF.additive_attention(Q, K, V, W_q, W_k, w_v, mask), expected[0])


def test_additive_attention_module():
    gen = seeded(28)
    layer = AdditiveAttention(5, 2, 7).double()
    Q, K, V = randn(3, 4, 5, gen=gen), randn(3, 6, 2, gen=gen), randn(3, 6, 4, gen=gen)
    keep = M.padding_mask([6, 1, 3], 6, heads=False)  # (B, 1, S)
    output, weights = layer(Q, K, V, attn_mask=keep, need_weights=True)
    params = [p.detach().numpy() for p in (layer.W_q.weight, layer.W_k.weight, layer.w_v.weight[0])]
    _check_pair((output, weights), R.additive_attention(Q, K, V, *params, keep.numpy()))


def test_split_and_merge_heads():
    module = MultiHeadAttention(12, 3).double()
    X = randn(2, 5, 12, gen=seeded(29))
    split = module.split_heads(X, 3)  # (B, h, T, d_head)
    assert_matches_reference(split, R.split_heads(X, 3))
    assert_matches_reference(module.merge_heads(split), R.merge_heads(split))
    assert torch.equal(module.merge_heads(split), X)


def _module_params(module: MultiHeadAttention) -> dict[str, np.ndarray | None]:
    def array(t):
        return None if t is None else t.detach().numpy()

    return {
        "W_q": array(module.q_proj.weight),
        "W_k": array(module.k_proj.weight),
        "W_v": array(module.v_proj.weight),
        "W_o": array(module.out_proj.weight),
        "b_q": array(module.q_proj.bias),
        "b_k": array(module.k_proj.bias),
        "b_v": array(module.v_proj.bias),
        "b_o": array(module.out_proj.bias),
    }


@pytest.mark.parametrize(
    "num_kv_heads, kdim, vdim, bias",
    [(None, None, None, True), (None, 6, 5, False), (2, None, None, True), (1, 6, 5, True)],
)
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_multi_head_attention(num_kv_heads, kdim, vdim, bias, kind):
    gen = seeded(30)
    module = MultiHeadAttention(
        8, 4, kdim=kdim, vdim=vdim, bias=bias, num_kv_heads=num_kv_heads
    ).double()
    if bias:  # give the biases values, nn.MultiheadAttention's initialisation zeroes them
        with torch.no_grad():
            for proj in (module.q_proj, module.k_proj, module.v_proj, module.out_proj):
                proj.bias.normal_(generator=gen)
    X_q = randn(2, 3, 8, gen=gen)
    X_k, X_v = randn(2, 5, module.kdim, gen=gen), randn(2, 5, module.vdim, gen=gen)
    mask = _mask(kind, (2, 1, 3, 5), gen)
    output, weights = module(
        X_q, X_k, X_v, attn_mask=mask, need_weights=True, average_attn_weights=False
    )
    expected = R.multi_head_attention(
        X_q, X_k, X_v, h=4, num_kv_heads=num_kv_heads, mask=_np(mask), **_module_params(module)
    )
    _check_pair((output, weights), expected)
    fused, _ = module(X_q, X_k, X_v, attn_mask=mask)
    assert_matches_reference(fused, expected[0])


def test_multi_head_self_attention_uses_the_same_weights():
    """Self-attention takes the fused projection path; it must equal the general one."""
    gen = seeded(31)
    module = MultiHeadAttention(8, 2).double()
    X = randn(2, 4, 8, gen=gen)
    output, weights = module(X, need_weights=True, average_attn_weights=False)
    _check_pair((output, weights), R.multi_head_attention(X, X, X, h=2, **_module_params(module)))
