"""attncourse.modules against torch.nn.MultiheadAttention, and the modules' own behaviour."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from attn_helpers import ALL_FLOAT_DTYPES, assert_close_policy, randn, random_bool_mask, seeded
from attncourse import masks as M
from attncourse.modules import AdditiveAttention, MultiHeadAttention

EMBED_DIM, NUM_HEADS = 16, 4

# Masks handed to both layers; "attn_3d" is torch's per-head (B * h, L, S) layout.
# "float_both" is a float attention mask with a float (0 / -inf) key-padding mask.
MASK_KINDS = (
    "none",
    "key_padding",
    "attn_bool",
    "attn_float",
    "attn_3d",
    "causal_padding",
    "float_both",
)


@dataclass(frozen=True)
class MHACase:
    seed: int
    separate_kv: bool  # kdim/vdim differ from embed_dim: separate projections in torch
    bias: bool
    batch_first: bool
    self_attention: bool
    masks: str

    def __str__(self) -> str:
        return (
            f"seed{self.seed}-{'kv' if self.separate_kv else 'packed'}-bias{int(self.bias)}"
            f"-bf{int(self.batch_first)}-{'self' if self.self_attention else 'cross'}-{self.masks}"
        )


def _cases() -> list[MHACase]:
    combos = itertools.product((False, True), (True, False), (True, False), MASK_KINDS)
    cases = []
    for seed, (separate_kv, bias, batch_first, masks) in enumerate(combos):
        rng = random.Random(seed)
        self_attention = not separate_kv and rng.random() < 0.5
        cases.append(MHACase(seed, separate_kv, bias, batch_first, self_attention, masks))
    return cases


CASES = _cases()


def _torch_layer(case: MHACase, dtype, device) -> nn.MultiheadAttention:
    torch.manual_seed(case.seed)
    kdim, vdim = (6, 10) if case.separate_kv else (None, None)
    layer = nn.MultiheadAttention(
        EMBED_DIM, NUM_HEADS, bias=case.bias, kdim=kdim, vdim=vdim, batch_first=case.batch_first
    )
    if case.bias:  # torch initialises the input biases to zero; make them count
        with torch.no_grad():
            layer.in_proj_bias.normal_()
            layer.out_proj.bias.normal_()
    return layer.to(dtype=dtype, device=device)


def _inputs(case: MHACase, layer: nn.MultiheadAttention, dtype, device):
    """Batch-first query (B, L, E), key (B, S, kdim), value (B, S, vdim)."""
    gen = seeded(case.seed)
    B, L, S = 3, 5, (5 if case.self_attention else 7)
    query = randn(B, L, EMBED_DIM, gen=gen, dtype=dtype, device=device)
    if case.self_attention:
        return query, query, query
    key = randn(B, S, layer.kdim, gen=gen, dtype=dtype, device=device)
    value = randn(B, S, layer.vdim, gen=gen, dtype=dtype, device=device)
    return query, key, value


def _masks(case: MHACase, B: int, L: int, S: int, dtype, device):
    """The masks in both conventions: (our kwargs, torch kwargs). No fully masked rows."""
    gen = seeded(1000 + case.seed)
    ours, theirs = {}, {}
    lengths = torch.randint(1, S + 1, (B,), generator=gen)
    if case.masks in ("key_padding", "causal_padding"):
        key_padding = M.key_padding_from_lengths(lengths, S).to(device)  # (B, S)
        ours["key_padding"] = key_padding
        theirs["key_padding_mask"] = M.key_padding_to_mha(key_padding)
    if case.masks == "causal_padding":
        ours["is_causal"] = True
        theirs["attn_mask"] = M.mask_to_mha(M.causal_mask(L, S, device=device))
    if case.masks == "float_both":
        additive_padding = M.bool_to_additive(M.key_padding_from_lengths(lengths, S), dtype)
        ours["key_padding"] = additive_padding.to(device)  # (B, S), added to the scores
        theirs["key_padding_mask"] = M.key_padding_to_mha(additive_padding).to(device)
    if case.masks in ("attn_bool", "attn_float", "float_both"):
        keep = random_bool_mask(L, S, gen=gen)
        keep[:, 0] = True  # every query keeps at least one key
        additive = M.bool_to_additive(keep, dtype) + randn(L, S, gen=gen, dtype=dtype)
        mask = keep if case.masks == "attn_bool" else additive
        ours["attn_mask"] = mask.to(device)
        theirs["attn_mask"] = M.mask_to_mha(mask).to(device)
    if case.masks == "attn_3d":
        keep = random_bool_mask(B * NUM_HEADS, L, S, gen=gen)
        keep[..., 0] = True
        theirs["attn_mask"] = M.mask_to_mha(keep).to(device)  # (B * h, L, S)
        ours["attn_mask"] = keep.view(B, NUM_HEADS, L, S).to(device)  # (B, h, L, S)
    return ours, theirs


def _run_torch(layer: nn.MultiheadAttention, query, key, value, **kwargs):
    """Call torch's layer with batch-first tensors whatever its batch_first says."""
    if not layer.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))  # (T, B, E)
    output, weights = layer(query, key, value, **kwargs)
    if not layer.batch_first:
        output = output.transpose(0, 1)  # (B, L, E)
    return output, weights


def _compare(ours: MultiHeadAttention, theirs: nn.MultiheadAttention, case: MHACase, dtype, device):
    inputs = _inputs(case, theirs, dtype, device)
    query, key, value = inputs
    B, L, S = query.shape[0], query.shape[1], key.shape[1]
    our_masks, their_masks = _masks(case, B, L, S, dtype, device)
    if case.self_attention:
        key = value = None  # our default: self-attention (the fused projection path)
    for average in (True, False):
        output, weights = ours(
            query, key, value, need_weights=True, average_attn_weights=average, **our_masks
        )
        expected_output, expected_weights = _run_torch(
            theirs,
            *inputs,
            need_weights=True,
            average_attn_weights=average,
            **their_masks,
        )
        assert weights.shape == ((B, L, S) if average else (B, NUM_HEADS, L, S))
        assert_close_policy(output, expected_output)
        assert_close_policy(weights, expected_weights)
    fused, no_weights = ours(query, key, value, **our_masks)
    assert no_weights is None
    assert_close_policy(fused, expected_output)


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_from_torch_matches_nn_multihead_attention(case, dtype, device):
    theirs = _torch_layer(case, dtype, device)
    ours = MultiHeadAttention.from_torch(theirs)
    _compare(ours, theirs, case, dtype, device)


@pytest.mark.parametrize("case", CASES[::5], ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_from_torch_low_precision(case, dtype, device):
    theirs = _torch_layer(case, dtype, device)
    _compare(MultiHeadAttention.from_torch(theirs), theirs, case, dtype, device)


@pytest.mark.parametrize("case", CASES[::3], ids=str)
def test_to_torch_matches_ours(case, device):
    """Start from our layer, convert to torch's, and compare in training mode (dropout 0)."""
    source = _torch_layer(case, torch.float64, device)
    ours = MultiHeadAttention.from_torch(source)
    with torch.no_grad():  # fresh values, so that nothing comes from the torch layer above
        for param in ours.parameters():
            param.normal_(generator=seeded(case.seed), std=0.3)
    theirs = ours.to_torch(batch_first=case.batch_first)
    assert theirs.batch_first == case.batch_first
    assert theirs._qkv_same_embed_dim == (not case.separate_kv)
    assert (theirs.in_proj_bias is not None) == case.bias
    ours.train()
    theirs.train()
    _compare(ours, theirs, case, torch.float64, device)


def test_from_torch_copies_every_parameter_exactly():
    theirs = nn.MultiheadAttention(8, 2, kdim=3, vdim=5)
    ours = MultiHeadAttention.from_torch(theirs)
    back = ours.to_torch(batch_first=False)
    for name, param in theirs.named_parameters():
        assert torch.equal(param, dict(back.named_parameters())[name]), name
    assert ours.kdim == 3 and ours.vdim == 5 and ours.num_heads == 2


def test_from_torch_keeps_training_mode_dropout_dtype():
    theirs = nn.MultiheadAttention(8, 2, dropout=0.25, dtype=torch.float64).eval()
    ours = MultiHeadAttention.from_torch(theirs)
    assert ours.dropout == 0.25 and not ours.training
    assert all(p.dtype == torch.float64 for p in ours.parameters())


def test_from_torch_refuses_features_it_lacks():
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, add_bias_kv=True))
    with pytest.raises(TypeError, match="mha"):
        MultiHeadAttention.from_torch(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="num_kv_heads"):
        MultiHeadAttention(8, 4, num_kv_heads=2).to_torch()


def test_causal_alone_matches_torch_with_a_causal_mask(device):
    theirs = nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64, device=device)
    ours = MultiHeadAttention.from_torch(theirs)
    x = randn(2, 6, 8, gen=seeded(40), device=device)
    output, weights = ours(x, is_causal=True, need_weights=True)
    expected, expected_weights = theirs(x, x, x, attn_mask=M.mask_to_mha(M.causal_mask(6, device=device)))
    assert_close_policy(output, expected)
    assert_close_policy(weights, expected_weights)


def test_fully_padded_sequence_gives_a_bias_only_output(device):
    """A sequence with no real key gets zero attention output: only out_proj's bias remains."""
    ours = MultiHeadAttention(8, 2).double().to(device)
    with torch.no_grad():
        ours.out_proj.bias.normal_(generator=seeded(41))
    x = randn(2, 3, 8, gen=seeded(42), device=device)
    key_padding = M.key_padding_from_lengths([3, 0], 3).to(device)
    output, weights = ours(x, key_padding=key_padding, need_weights=True)
    assert torch.isfinite(output).all()
    assert torch.equal(weights[1], torch.zeros_like(weights[1]))
    assert_close_policy(output[1], ours.out_proj.bias.detach().expand(3, 8))


def test_grouped_query_module_shares_key_value_heads():
    """With one key/value head every query head sees the same keys: copying q heads copies weights."""
    ours = MultiHeadAttention(8, 4, num_kv_heads=1).double()
    assert ours.k_proj.weight.shape == (2, 8) and ours.v_proj.weight.shape == (2, 8)
    with torch.no_grad():
        for head in range(1, 4):  # every query head gets the projection of head 0
            ours.q_proj.weight[2 * head : 2 * head + 2] = ours.q_proj.weight[0:2]
    x = randn(2, 5, 8, gen=seeded(43))
    _, weights = ours(x, need_weights=True, average_attn_weights=False)  # (B, h, L, S)
    for head in range(1, 4):
        assert_close_policy(weights[:, head], weights[:, 0])


def test_dropout_only_in_training_mode():
    ours = MultiHeadAttention(8, 2, dropout=0.5).double()
    x = randn(2, 6, 8, gen=seeded(44))
    ours.eval()
    first, _ = ours(x)
    second, _ = ours(x)
    assert torch.equal(first, second)
    ours.train()
    torch.manual_seed(0)
    _, weights = ours(x, need_weights=True, average_attn_weights=False)
    assert (weights == 0).any()


@pytest.mark.parametrize("dtype", ALL_FLOAT_DTYPES)
def test_modules_keep_input_dtype_and_device(dtype, device):
    gen = seeded(45)
    mha = MultiHeadAttention(8, 2, kdim=4, vdim=6).to(dtype=dtype, device=device)
    additive = AdditiveAttention(8, 4, 5).to(dtype=dtype, device=device)
    query = randn(2, 3, 8, gen=gen, dtype=dtype, device=device)
    key = randn(2, 5, 4, gen=gen, dtype=dtype, device=device)
    value = randn(2, 5, 6, gen=gen, dtype=dtype, device=device)
    results = [
        *mha(query, key, value, need_weights=True),
        *additive(query, key, value, need_weights=True),
    ]
    for result in results:
        assert result.dtype == dtype
        assert result.device.type == device.type


def test_additive_attention_module_defaults_to_self_attention():
    layer = AdditiveAttention(4, 4, 6).double()
    x = randn(2, 5, 4, gen=seeded(46))
    output, weights = layer(x, need_weights=True)
    explicit, explicit_weights = layer(x, x, x, need_weights=True)
    assert torch.equal(output, explicit) and torch.equal(weights, explicit_weights)
    assert layer(x)[1] is None
    assert_close_policy(weights.sum(-1), torch.ones(2, 5, dtype=torch.float64))


def test_causal_with_key_padding_and_no_keys_gives_zeros(device):
    layer = MultiHeadAttention(4, 2).to(device)
    query = torch.randn(1, 3, 4, device=device)
    no_keys = torch.randn(1, 0, 4, device=device)
    padding = torch.ones(1, 0, dtype=torch.bool, device=device)
    output, _ = layer(query, no_keys, key_padding=padding, is_causal=True)
    expected, _ = layer(query, no_keys, key_padding=padding)
    assert output.shape == (1, 3, 4)
    torch.testing.assert_close(output, expected)
