"""Properties that any correct attention has, checked on random shapes with hypothesis,
and gradients checked numerically with torch.autograd.gradcheck in float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from attn_helpers import assert_close_policy, randn, random_bool_mask, seeded
from attncourse import functional as AF
from attncourse import masks as M
from attncourse.modules import MultiHeadAttention

PROPERTY_SETTINGS = settings(max_examples=30, deadline=None)

seeds = st.integers(0, 2**31 - 1)
sizes = st.integers(1, 7)


def _qkv(gen, batch, L, S, E, Ev, requires_grad=False):
    query = randn(*batch, L, E, gen=gen).requires_grad_(requires_grad)
    key = randn(*batch, S, E, gen=gen).requires_grad_(requires_grad)
    value = randn(*batch, S, Ev, gen=gen).requires_grad_(requires_grad)
    return query, key, value


def _weights_of_every_mechanism(gen, L, S, E, mask):
    """Weights (2, L, S) from the scaled dot-product, bilinear and additive mechanisms."""
    query, key, value = _qkv(gen, (2,), L, S, E, 3)
    W = randn(E, E, gen=gen)
    W_q, W_k, w_v = randn(4, E, gen=gen), randn(4, E, gen=gen), randn(4, gen=gen)
    return [
        AF.scaled_dot_product_attention(query, key, value, mask, return_weights=True)[1],
        AF.general_attention(query, key, value, W, mask, return_weights=True)[1],
        AF.additive_attention(query, key, value, W_q, W_k, w_v, mask, return_weights=True)[1],
    ]


# ---------------------------------------------------------------------------------------
# Rows of weights
# ---------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(seed=seeds, L=sizes, S=sizes, E=sizes)
def test_unmasked_weight_rows_sum_to_one(seed, L, S, E):
    for weights in _weights_of_every_mechanism(seeded(seed), L, S, E, mask=None):
        assert (weights >= 0).all()
        assert_close_policy(weights.sum(-1), torch.ones(2, L, dtype=torch.float64))


@PROPERTY_SETTINGS
@given(seed=seeds, L=sizes, S=sizes, E=sizes)
def test_masked_rows_sum_to_one_over_kept_keys_or_are_zero(seed, L, S, E):
    gen = seeded(seed)
    keep = random_bool_mask(2, L, S, gen=gen, keep=0.5)
    for weights in _weights_of_every_mechanism(gen, L, S, E, mask=keep):
        assert torch.equal(weights[~keep], torch.zeros_like(weights[~keep]))
        row_sums = weights.sum(-1)  # (2, L)
        assert_close_policy(row_sums, keep.any(-1).to(torch.float64))


@PROPERTY_SETTINGS
@given(seed=seeds, L=sizes, S=sizes, E=sizes, as_float=st.booleans(), fused=st.booleans())
def test_fully_masked_rows_are_zero_with_finite_gradients(seed, L, S, E, as_float, fused):
    gen = seeded(seed)
    query, key, value = _qkv(gen, (2, 2), L, S, E, 3, requires_grad=True)
    keep = random_bool_mask(L, S, gen=gen)
    dead_row = int(torch.randint(L, (1,), generator=gen))
    keep[dead_row] = False
    mask = M.bool_to_additive(keep, torch.float64) if as_float else keep
    if fused:
        output = AF.scaled_dot_product_attention(query, key, value, mask)
    else:
        output, weights = AF.scaled_dot_product_attention(
            query, key, value, mask, return_weights=True
        )
        assert torch.equal(weights[..., dead_row, :], torch.zeros(2, 2, S, dtype=torch.float64))
    assert torch.equal(output[..., dead_row, :], torch.zeros(2, 2, 3, dtype=torch.float64))
    output.sum().backward()
    for t in (query, key, value):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(query.grad[..., dead_row, :], torch.zeros(2, 2, E, dtype=torch.float64))


@PROPERTY_SETTINGS
@given(seed=seeds, S=sizes, as_float=st.booleans())
def test_masked_softmax_of_nothing_kept_is_zero_with_finite_gradient(seed, S, as_float):
    scores = randn(3, S, gen=seeded(seed)).requires_grad_(True)
    keep = torch.zeros(3, S, dtype=torch.bool)
    keep[0] = True
    mask = M.bool_to_additive(keep, torch.float64) if as_float else keep
    weights = AF.masked_softmax(scores, mask)
    assert torch.equal(weights[1:], torch.zeros(2, S, dtype=torch.float64))
    (weights * torch.arange(S)).sum().backward()
    assert torch.isfinite(scores.grad).all()


# ---------------------------------------------------------------------------------------
# Symmetries
# ---------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(seed=seeds, T=st.integers(2, 8), E=sizes)
def test_unmasked_self_attention_is_permutation_equivariant(seed, T, E):
    """Permuting the positions of x permutes the output rows the same way."""
    gen = seeded(seed)
    x = randn(2, T, 4 * E, gen=gen)
    perm = torch.randperm(T, generator=gen)
    layer = MultiHeadAttention(4 * E, 4).double()
    for attend in (
        lambda t: AF.scaled_dot_product_attention(t, t, t),
        lambda t: AF.scaled_dot_product_attention(t, t, t, return_weights=True)[0],
        lambda t: layer(t)[0],
    ):
        assert_close_policy(attend(x[:, perm]), attend(x)[:, perm])


@PROPERTY_SETTINGS
@given(seed=seeds, T=st.integers(2, 8), E=sizes, changed_from=st.integers(1, 7))
def test_causal_output_ignores_later_positions(seed, T, E, changed_from):
    """With a causal mask, output i depends only on positions 0..i."""
    changed_from = min(changed_from, T - 1)
    gen = seeded(seed)
    x = randn(2, T, 2 * E, gen=gen)
    y = x.clone()
    y[:, changed_from:] = randn(2, T - changed_from, 2 * E, gen=gen)
    layer = MultiHeadAttention(2 * E, 2).double()
    causal = M.causal_mask(T)
    for attend in (
        lambda t: AF.scaled_dot_product_attention(t, t, t, is_causal=True),
        lambda t: AF.scaled_dot_product_attention(t, t, t, causal, return_weights=True)[0],
        lambda t: layer(t, is_causal=True)[0],
        lambda t: layer(t, attn_mask=causal)[0],
    ):
        before, after = attend(x), attend(y)
        assert_close_policy(after[:, :changed_from], before[:, :changed_from])
        assert not torch.allclose(after[:, changed_from:], before[:, changed_from:])


@PROPERTY_SETTINGS
@given(seed=seeds, L=sizes, S=st.integers(2, 8), E=sizes, data=st.data())
def test_padded_keys_and_values_change_nothing(seed, L, S, E, data):
    gen = seeded(seed)
    lengths = data.draw(st.lists(st.integers(1, S - 1), min_size=2, max_size=2))
    query, key, value = _qkv(gen, (2,), L, S, 2 * E, 3)
    key_padding = M.key_padding_from_lengths(lengths, S)  # (B, S)
    noisy_key = torch.where(key_padding[..., None], key, randn(*key.shape, gen=gen))
    noisy_value = torch.where(key_padding[..., None], value, randn(*value.shape, gen=gen))
    keep = M.padding_mask(lengths, S, heads=False)  # (B, 1, S)
    W_q, W_k, w_v = randn(4, 2 * E, gen=gen), randn(4, 2 * E, gen=gen), randn(4, gen=gen)
    layer = MultiHeadAttention(2 * E, 2, vdim=3).double()
    for attend in (
        lambda k, v: AF.scaled_dot_product_attention(query, k, v, keep),
        lambda k, v: AF.scaled_dot_product_attention(query, k, v, keep, return_weights=True)[0],
        lambda k, v: AF.additive_attention(query, k, v, W_q, W_k, w_v, keep),
        lambda k, v: layer(query, k, v, key_padding=key_padding)[0],
    ):
        assert_close_policy(attend(noisy_key, noisy_value), attend(key, value))


# ---------------------------------------------------------------------------------------
# Gradients, checked numerically in float64
# ---------------------------------------------------------------------------------------


def _mask_with_dead_row(L, S, gen):
    keep = random_bool_mask(L, S, gen=gen)
    keep[0] = False
    keep[1:, 0] = True
    return keep


def test_gradcheck_masked_softmax():
    gen = seeded(50)
    scores = randn(2, 4, 5, gen=gen).requires_grad_(True)
    keep = _mask_with_dead_row(4, 5, gen)
    bias = M.bool_to_additive(keep, torch.float64)
    assert torch.autograd.gradcheck(lambda s: AF.masked_softmax(s, keep), (scores,))
    assert torch.autograd.gradcheck(lambda s: AF.masked_softmax(s, bias), (scores,))
    assert torch.autograd.gradcheck(lambda s: AF.masked_softmax(s, dim=1), (scores,))


@pytest.mark.parametrize("return_weights", [True, False])
def test_gradcheck_scaled_dot_product_attention(return_weights):
    gen = seeded(51)
    inputs = _qkv(gen, (2, 2), 4, 5, 3, 2, requires_grad=True)
    keep = _mask_with_dead_row(4, 5, gen)

    def attend(query, key, value):
        return AF.scaled_dot_product_attention(
            query, key, value, keep, scale=0.8, return_weights=return_weights
        )

    assert torch.autograd.gradcheck(attend, inputs)


@pytest.mark.parametrize("mask_kind", ["float", "causal"])
def test_gradcheck_attention_with_weights_float_and_causal_masks(mask_kind):
    # The weights path applies these masks to its scores in place; gradients must not mind.
    gen = seeded(54)
    inputs = _qkv(gen, (2,), 4, 5, 3, 2, requires_grad=True)
    bias = randn(4, 5, gen=gen)
    mask_args = {"attn_mask": bias} if mask_kind == "float" else {"is_causal": True}

    def attend(query, key, value):
        output, weights = AF.scaled_dot_product_attention(
            query, key, value, return_weights=True, **mask_args
        )
        return output, weights

    assert torch.autograd.gradcheck(attend, inputs)
    before = bias.clone()
    attend(*inputs)
    assert torch.equal(bias, before)  # the caller's mask is left as it was


def test_gradcheck_grouped_query_attention():
    gen = seeded(52)
    query = randn(1, 4, 3, 2, gen=gen).requires_grad_(True)
    key, value = (randn(1, 2, 5, 2, gen=gen).requires_grad_(True) for _ in range(2))

    def attend(q, k, v):
        return AF.scaled_dot_product_attention(q, k, v, enable_gqa=True, return_weights=True)

    assert torch.autograd.gradcheck(attend, (query, key, value))


def test_gradcheck_general_and_additive_attention():
    gen = seeded(53)
    query, key, value = _qkv(gen, (2,), 3, 4, 2, 2, requires_grad=True)
    W = randn(2, 2, gen=gen).requires_grad_(True)
    W_q, W_k = (randn(3, 2, gen=gen).requires_grad_(True) for _ in range(2))
    w_v = randn(3, gen=gen).requires_grad_(True)
    keep = _mask_with_dead_row(3, 4, gen)

    def general(q, k, v, W):
        return AF.general_attention(q, k, v, W, keep, return_weights=True)

    def additive(q, k, v, W_q, W_k, w_v):
        return AF.additive_attention(q, k, v, W_q, W_k, w_v, keep, return_weights=True)

    assert torch.autograd.gradcheck(general, (query, key, value, W))
    assert torch.autograd.gradcheck(additive, (query, key, value, W_q, W_k, w_v))


@pytest.mark.parametrize("need_weights", [True, False])
def test_gradcheck_multi_head_attention(need_weights):
    """Gradients with respect to the inputs and to every parameter of the layer."""
    gen = seeded(54)
    layer = MultiHeadAttention(4, 2, kdim=3).double()
    names = [name for name, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    query, key, value = randn(2, 3, 4, gen=gen), randn(2, 5, 3, gen=gen), randn(2, 5, 4, gen=gen)
    inputs = tuple(t.requires_grad_(True) for t in (query, key, value))
    key_padding = M.key_padding_from_lengths([5, 2], 5)

    def forward(query, key, value, *params):
        output, weights = functional_call(
            layer,
            dict(zip(names, params)),
            (query, key, value),
            {"key_padding": key_padding, "need_weights": need_weights},
        )
        return (output, weights) if need_weights else output

    assert torch.autograd.gradcheck(forward, inputs + params)
