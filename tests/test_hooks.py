"""attncourse.hooks.capture_attention: weights captured from torch's transformers and our
modules equal weights computed by hand; outputs are unchanged; hooks are removed after."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_helpers import randn, seeded
from attncourse import masks as M
from attncourse.hooks import capture_attention
from attncourse.modules import AdditiveAttention, MultiHeadAttention

D_MODEL, HEADS, FEEDFORWARD = 8, 2, 16
EXACT = {"rtol": 1e-10, "atol": 1e-10}


# ---------------------------------------------------------------------------------------
# Attention computed by hand from a layer's parameters (batch-first, float64)
# ---------------------------------------------------------------------------------------


def _split_heads(x: torch.Tensor) -> torch.Tensor:
    B, T, _ = x.shape
    return x.view(B, T, HEADS, D_MODEL // HEADS).transpose(1, 2)  # (B, h, T, d_head)


def weights_by_hand(mha: nn.MultiheadAttention, query, key, keep) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_head)) per head from in_proj_weight; keep: True = may attend."""
    W_q, W_k, _ = mha.in_proj_weight.split(D_MODEL)  # 3 x (d_model, d_model)
    b_q, b_k, _ = mha.in_proj_bias.split(D_MODEL)
    q = _split_heads(query @ W_q.T + b_q)  # (B, h, L, d_head)
    k = _split_heads(key @ W_k.T + b_k)  # (B, h, S, d_head)
    scores = q @ k.transpose(-2, -1) / math.sqrt(D_MODEL // HEADS)  # (B, h, L, S)
    return torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)


def attention_by_hand(mha: nn.MultiheadAttention, query, key, keep):
    """(output (B, L, d_model), weights (B, h, L, S)) from the layer's parameters."""
    weights = weights_by_hand(mha, query, key, keep)
    _, _, W_v = mha.in_proj_weight.split(D_MODEL)
    _, _, b_v = mha.in_proj_bias.split(D_MODEL)
    heads = weights @ _split_heads(key @ W_v.T + b_v)  # (B, h, L, d_head)
    B, _, L, _ = heads.shape
    merged = heads.transpose(1, 2).reshape(B, L, D_MODEL)  # (B, L, d_model)
    return mha.out_proj(merged), weights


def _norm(norm: nn.LayerNorm, x):
    return F.layer_norm(x, (D_MODEL,), norm.weight, norm.bias, norm.eps)


def _feedforward(layer, x):
    return layer.linear2(F.relu(layer.linear1(x)))


def encoder_layer_by_hand(layer: nn.TransformerEncoderLayer, x, keep):
    """One post-norm encoder layer: (B, T, d_model) -> same, and its weights (B, h, T, T)."""
    attended, weights = attention_by_hand(layer.self_attn, x, x, keep)
    x = _norm(layer.norm1, x + attended)
    return _norm(layer.norm2, x + _feedforward(layer, x)), weights


# ---------------------------------------------------------------------------------------
# nn.TransformerEncoder
# ---------------------------------------------------------------------------------------


def _encoder(batch_first: bool, training: bool) -> nn.TransformerEncoder:
    torch.manual_seed(60)
    layer = nn.TransformerEncoderLayer(
        D_MODEL, HEADS, FEEDFORWARD, dropout=0.0, batch_first=batch_first, dtype=torch.float64
    )
    encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=batch_first)
    with torch.no_grad():  # non-zero input biases, so that a missing bias shows
        for layer in encoder.layers:
            layer.self_attn.in_proj_bias.normal_(generator=seeded(61))
    return encoder.train(training)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_encoder_weights_equal_hand_computed(batch_first, training, causal):
    encoder = _encoder(batch_first, training)
    src = randn(3, 6, D_MODEL, gen=seeded(62))  # (B, T, d_model)
    lengths = torch.tensor([6, 4, 1])
    key_padding = M.key_padding_from_lengths(lengths, 6)  # (B, S), True = real key
    keep = key_padding[:, None, None, :]  # (B, 1, 1, S)
    torch_kwargs = {"src_key_padding_mask": M.key_padding_to_mha(key_padding)}
    if causal:
        keep = keep & M.causal_mask(6)
        torch_kwargs["mask"] = M.mask_to_mha(M.causal_mask(6))
    model_input = src if batch_first else src.transpose(0, 1)  # (T, B, d_model) if not

    with torch.no_grad():
        with capture_attention(encoder) as maps:
            encoder(model_input, **torch_kwargs)
        x = src
        for index, layer in enumerate(encoder.layers):
            x, expected = encoder_layer_by_hand(layer, x, keep)
            captured = maps[f"layers.{index}.self_attn"]
            assert captured.shape == (3, HEADS, 6, 6)
            torch.testing.assert_close(captured, expected, **EXACT)
    assert list(maps) == ["layers.0.self_attn", "layers.1.self_attn"]


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")
@pytest.mark.parametrize("training", [False, True])
def test_capturing_leaves_encoder_outputs_unchanged(training):
    encoder = _encoder(batch_first=True, training=training)
    src = randn(3, 6, D_MODEL, gen=seeded(63))
    key_padding = M.key_padding_from_lengths([6, 4, 2], 6)
    padding_mask = M.key_padding_to_mha(key_padding)
    with torch.no_grad():
        plain = encoder(src, src_key_padding_mask=padding_mask)
        with capture_attention(encoder):
            captured = encoder(src, src_key_padding_mask=padding_mask)
    # In eval mode torch's nested-tensor fast path writes zeros at padded positions, and
    # capturing switches that path off; the real positions must agree exactly.
    real = key_padding
    torch.testing.assert_close(captured[real], plain[real], **EXACT)
    if training:
        torch.testing.assert_close(captured, plain, **EXACT)


# ---------------------------------------------------------------------------------------
# nn.TransformerDecoder: self- and cross-attention
# ---------------------------------------------------------------------------------------


def test_decoder_self_and_cross_weights_equal_hand_computed():
    torch.manual_seed(64)
    layer = nn.TransformerDecoderLayer(
        D_MODEL, HEADS, FEEDFORWARD, dropout=0.0, batch_first=True, dtype=torch.float64
    )
    decoder = nn.TransformerDecoder(layer, num_layers=2).eval()
    gen = seeded(65)
    tgt, memory = randn(2, 4, D_MODEL, gen=gen), randn(2, 7, D_MODEL, gen=gen)
    memory_padding = M.key_padding_from_lengths([7, 3], 7)  # (B, S)
    with torch.no_grad(), capture_attention(decoder) as maps:
        decoder(
            tgt,
            memory,
            tgt_mask=M.mask_to_mha(M.causal_mask(4)),
            memory_key_padding_mask=M.key_padding_to_mha(memory_padding),
        )
    first = decoder.layers[0]
    with torch.no_grad():
        attended, self_weights = attention_by_hand(first.self_attn, tgt, tgt, M.causal_mask(4))
        x = _norm(first.norm1, tgt + attended)  # the queries of cross-attention
        cross_weights = weights_by_hand(
            first.multihead_attn, x, memory, memory_padding[:, None, None, :]
        )
    torch.testing.assert_close(maps["layers.0.self_attn"], self_weights, **EXACT)
    torch.testing.assert_close(maps["layers.0.multihead_attn"], cross_weights, **EXACT)
    assert maps["layers.1.multihead_attn"].shape == (2, HEADS, 4, 7)
    assert len(maps) == 4


# ---------------------------------------------------------------------------------------
# Our modules, and how the caller's own request is honoured
# ---------------------------------------------------------------------------------------


class TwoAttentions(nn.Module):
    """A multi-head self-attention followed by additive attention over the input."""

    def __init__(self):
        super().__init__()
        self.mha = MultiHeadAttention(D_MODEL, HEADS)
        self.additive = AdditiveAttention(D_MODEL, D_MODEL, 5)

    def forward(self, x, key_padding):
        y, _ = self.mha(x, key_padding=key_padding)
        z, _ = self.additive(y, x, x, attn_mask=key_padding[:, None, :])
        return z


def test_our_modules_are_captured():
    model = TwoAttentions().double()
    x = randn(2, 5, D_MODEL, gen=seeded(66))
    key_padding = M.key_padding_from_lengths([5, 3], 5)
    with torch.no_grad():
        plain = model(x, key_padding)
        with capture_attention(model) as maps:
            captured_output = model(x, key_padding)
        y, per_head = model.mha(
            x, key_padding=key_padding, need_weights=True, average_attn_weights=False
        )
        _, additive_weights = model.additive(y, x, x, attn_mask=key_padding[:, None, :], need_weights=True)
    # Capturing asks our layer for weights: the explicit path instead of the fused kernel,
    # which may differ in the last bits.
    torch.testing.assert_close(captured_output, plain, **EXACT)
    assert torch.equal(maps["mha"], per_head)  # (B, h, L, S)
    assert torch.equal(maps["additive"], additive_weights)  # (B, L, S)


def test_callers_request_is_honoured():
    """need_weights=False still returns None, averaged weights stay averaged."""
    torch_layer = nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True, dtype=torch.float64)
    ours = MultiHeadAttention(D_MODEL, HEADS).double()
    x = randn(2, 5, D_MODEL, gen=seeded(67))
    with torch.no_grad(), capture_attention(torch_layer) as maps:
        output_none = torch_layer(x, x, x, None, False)  # positional need_weights=False
        averaged = torch_layer(x, x, x)[1]
        per_head = torch_layer(x, x, x, average_attn_weights=False)[1]
    assert output_none[1] is None
    assert averaged.shape == (2, 5, 5) and per_head.shape == (2, HEADS, 5, 5)
    torch.testing.assert_close(averaged, per_head.mean(1), **EXACT)
    assert len(maps.calls["MultiheadAttention"]) == 3
    with torch.no_grad(), capture_attention(ours) as maps:
        assert ours(x)[1] is None
        assert ours(x, need_weights=True)[1].shape == (2, 5, 5)
    assert maps["MultiHeadAttention"].shape == (2, HEADS, 5, 5)


# ---------------------------------------------------------------------------------------
# Clean-up
# ---------------------------------------------------------------------------------------


def _hook_counts(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("fastpath_before", [True, False])
def test_hooks_removed_and_fastpath_restored(fastpath_before):
    encoder = _encoder(batch_first=True, training=False)
    original = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fastpath_before)
    try:
        with capture_attention(encoder):
            assert _hook_counts(encoder) == 4  # a pre-hook and a hook per attention layer
            assert not torch.backends.mha.get_fastpath_enabled()
        assert _hook_counts(encoder) == 0
        assert torch.backends.mha.get_fastpath_enabled() == fastpath_before
    finally:
        torch.backends.mha.set_fastpath_enabled(original)


def test_hooks_removed_after_an_exception():
    encoder = _encoder(batch_first=True, training=False)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    with pytest.raises(RuntimeError, match="inside the block"):
        with capture_attention(encoder):
            raise RuntimeError("inside the block")
    assert _hook_counts(encoder) == 0
    assert torch.backends.mha.get_fastpath_enabled() == fastpath


def test_capture_refuses_a_non_module():
    with pytest.raises(TypeError, match="model"):
        with capture_attention("not a model"):
            pass


def test_unbatched_input_is_captured_per_head():
    layer = nn.MultiheadAttention(D_MODEL, HEADS, dtype=torch.float64)
    x = randn(5, D_MODEL, gen=seeded(68))  # (L, d_model), no batch dimension
    with torch.no_grad(), capture_attention(layer) as maps:
        _, averaged = layer(x, x, x)
    assert maps["MultiheadAttention"].shape == (HEADS, 5, 5)
    torch.testing.assert_close(averaged, maps["MultiheadAttention"].mean(0), **EXACT)
