"""attncourse.masks: causal and padding masks, converters, merging."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attn_helpers import assert_close_policy, randn, random_bool_mask, seeded
from attncourse import masks as M
from attncourse import reference as R


@pytest.mark.parametrize("L, S", [(1, 1), (4, 4), (3, 6), (6, 3), (5, 1)])
def test_causal_top_left_matches_torch_is_causal(L, S, device):
    """Attending with our mask gives what torch gives with is_causal=True."""
    gen = seeded(L * 10 + S)
    query, key, value = (randn(2, n, 4, gen=gen, device=device) for n in (L, S, S))
    mask = M.causal_mask(L, S, device=device)
    assert mask.shape == (L, S) and mask.dtype == torch.bool and mask.device.type == device.type
    expected = F.scaled_dot_product_attention(query, key, value, is_causal=True)
    assert_close_policy(F.scaled_dot_product_attention(query, key, value, attn_mask=mask), expected)


@pytest.mark.parametrize("L, S", [(1, 1), (4, 4), (3, 6), (6, 3), (1, 5)])
@pytest.mark.parametrize("alignment", ["top_left", "bottom_right"])
def test_causal_mask_matches_reference_and_tril(L, S, alignment):
    mask = M.causal_mask(L, S, alignment=alignment)
    offset = 0 if alignment == "top_left" else S - L
    assert torch.equal(mask, torch.ones(L, S, dtype=torch.bool).tril(diagonal=offset))
    assert (mask.numpy() == R.causal_mask(L, S, alignment=alignment)).all()


def test_causal_alignments_agree_when_square_and_default_is_top_left():
    assert torch.equal(M.causal_mask(5), M.causal_mask(5, 5, alignment="bottom_right"))
    assert torch.equal(M.causal_mask(3, 7), M.causal_mask(3, 7, alignment="top_left"))
    assert not torch.equal(M.causal_mask(3, 7), M.causal_mask(3, 7, alignment="bottom_right"))


def test_bottom_right_lets_the_last_query_see_every_key():
    mask = M.causal_mask(3, 7, alignment="bottom_right")
    assert mask[-1].all()
    assert mask.sum(-1).tolist() == [5, 6, 7]


@pytest.mark.parametrize("lengths", [[3, 0, 5], [5], [0, 0], [1, 2, 3, 4]])
def test_padding_masks_match_reference(lengths, device):
    S = 5
    as_tensor = torch.tensor(lengths, device=device)
    key_padding = M.key_padding_from_lengths(as_tensor, S)
    expected = R.padding_mask(lengths, S)  # (B, 1, S)
    assert key_padding.shape == (len(lengths), S) and key_padding.device.type == device.type
    assert (key_padding.cpu().numpy() == expected[:, 0]).all()
    with_heads = M.padding_mask(as_tensor, S)
    without_heads = M.padding_mask(lengths, S, heads=False)
    assert with_heads.shape == (len(lengths), 1, 1, S)
    assert (with_heads[:, 0].cpu().numpy() == expected).all()
    assert (without_heads.numpy() == expected).all()


def test_padding_mask_broadcasts_over_heads_and_queries():
    """A padded key gets zero weight from every head and every query."""
    gen = seeded(11)
    query, key = randn(3, 2, 4, 8, gen=gen), randn(3, 2, 6, 8, gen=gen)
    keep = M.padding_mask([6, 2, 4], 6)  # (B, 1, 1, S)
    weights = torch.softmax(
        (query @ key.transpose(-2, -1)).masked_fill(~keep, float("-inf")), dim=-1
    )
    assert torch.equal(weights[1, :, :, 2:], torch.zeros(2, 4, 4, dtype=weights.dtype))
    assert torch.equal(weights[2, :, :, 4:], torch.zeros(2, 4, 2, dtype=weights.dtype))


def test_mha_converters_invert_booleans_and_round_trip():
    gen = seeded(12)
    keep = random_bool_mask(4, 6, gen=gen)
    key_padding = random_bool_mask(2, 6, gen=gen)
    assert torch.equal(M.mask_to_mha(keep), ~keep)
    assert torch.equal(M.mask_from_mha(M.mask_to_mha(keep)), keep)
    assert torch.equal(M.key_padding_to_mha(key_padding), ~key_padding)
    assert torch.equal(M.key_padding_from_mha(M.key_padding_to_mha(key_padding)), key_padding)


def test_mha_converters_pass_float_masks_unchanged():
    additive = randn(4, 6, gen=seeded(13))
    for convert in (M.mask_to_mha, M.mask_from_mha, M.key_padding_to_mha, M.key_padding_from_mha):
        assert torch.equal(convert(additive), additive)


def test_converted_masks_mean_the_same_to_nn_multihead_attention():
    """torch's MHA with converted masks attends exactly where ours says it may."""
    gen = seeded(14)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64)
    x = randn(2, 5, 8, gen=gen)
    keep = M.causal_mask(5)
    key_padding = M.key_padding_from_lengths([5, 3], 5)
    _, weights = mha(
        x,
        x,
        x,
        attn_mask=M.mask_to_mha(keep),
        key_padding_mask=M.key_padding_to_mha(key_padding),
        average_attn_weights=False,
    )  # (B, h, L, S)
    allowed = keep & key_padding[:, None, None, :]  # (B, 1, L, S)
    assert torch.equal(weights > 0, allowed.expand_as(weights))


def test_bool_to_additive():
    keep = torch.tensor([[True, False], [False, False]])
    additive = M.bool_to_additive(keep, torch.float64)
    assert additive.dtype == torch.float64
    assert torch.equal(additive, torch.tensor([[0.0, -torch.inf], [-torch.inf, -torch.inf]]).double())


def test_merge_masks_bool_is_logical_and_with_broadcasting():
    causal = M.causal_mask(4, 4)  # (L, S)
    padding = M.padding_mask([4, 2], 4)  # (B, 1, 1, S)
    merged = M.merge_masks(causal, None, padding)
    assert merged.shape == (2, 1, 4, 4)
    assert torch.equal(merged, causal & padding)
    assert M.merge_masks(None, None) is None
    assert M.merge_masks(causal) is causal


def test_merge_masks_with_a_float_mask_adds():
    gen = seeded(15)
    bias = randn(4, 4, gen=gen)
    keep = random_bool_mask(4, 4, gen=gen)
    merged = M.merge_masks(bias, keep)
    assert merged.dtype == torch.float64
    assert torch.equal(merged, bias.masked_fill(~keep, float("-inf")))
