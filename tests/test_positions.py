"""attncourse.positions: the NumPy reference, widely used implementations (Hugging Face
transformers' Llama and GPT-J rotary embeddings, BLOOM's ALiBi), RoPE's and ALiBi's
properties with hypothesis, every dtype and device, and MultiHeadAttention's schemes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attn_helpers import ALL_FLOAT_DTYPES, assert_close_policy, randn, seeded, tolerance
from attncourse import functional as AF
from attncourse import masks as M
from attncourse import positions as P
from attncourse import reference
from attncourse.efficient import blockwise_attention
from attncourse.modules import MultiHeadAttention

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)
F64 = dict(rtol=1e-10, atol=1e-10)
seeds = st.integers(0, 2**31 - 1)
half_widths = st.integers(1, 6)  # E = 2 * half_width


def f64(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


# ---------------------------------------------------------------------------------------
# Agreement with the NumPy reference (float64, 1e-10)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("L, d, base", [(1, 1, 10000.0), (7, 6, 10000.0), (12, 5, 100.0), (33, 16, 500.0)])
def test_sinusoidal_encoding_matches_reference(L, d, base):
    table = P.sinusoidal_encoding(L, d, base, dtype=torch.float64)
    assert table.shape == (L, d) and table.dtype == torch.float64
    torch.testing.assert_close(table, f64(reference.sinusoidal_encoding(L, d, base)), **F64)


def test_sinusoidal_encoding_by_hand_at_d_4():
    # theta_0 = 1, theta_1 = 10000^(-2/4) = 1/100: row p = (sin p, cos p, sin p/100, cos p/100).
    table = P.sinusoidal_encoding(3, 4, dtype=torch.float64)
    p = torch.arange(3, dtype=torch.float64)
    expected = torch.stack([p.sin(), p.cos(), (p / 100).sin(), (p / 100).cos()], dim=1)
    torch.testing.assert_close(table, expected, **F64)
    assert table[0].tolist() == [0.0, 1.0, 0.0, 1.0]


def test_sinusoidal_offset_is_a_linear_map():
    # PE[p + t] = R(t) PE[p] with R(t) block-diagonal rotations that do not depend on p.
    d, t = 8, 5
    table = P.sinusoidal_encoding(40, d, dtype=torch.float64)
    theta = P.rope_frequencies(d, dtype=torch.float64)
    R = torch.zeros(d, d, dtype=torch.float64)
    for i, angle in enumerate(theta * t):
        c, s = torch.cos(angle), torch.sin(angle)
        R[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.stack([torch.stack([c, s]), torch.stack([-s, c])])
    torch.testing.assert_close(table[:-t] @ R.T, table[t:], **F64)


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("shape", [(1, 2), (5, 6), (2, 3, 4, 8)])
def test_rope_matches_reference(shape, interleaved):
    x = randn(*shape, gen=seeded(1))
    got = P.rope(x, interleaved=interleaved)
    torch.testing.assert_close(got, f64(reference.rope(x.numpy(), interleaved=interleaved)), **F64)
    positions = torch.tensor([3, 0, 9, 4, 11, 2, 7, 1][: shape[-2]])
    got = P.rope(x, positions, base=50.0, interleaved=interleaved)
    want = reference.rope(x.numpy(), positions.numpy(), base=50.0, interleaved=interleaved)
    torch.testing.assert_close(got, f64(want), **F64)


def test_rope_positions_broadcast_over_the_batch():
    x = randn(2, 3, 4, 6, gen=seeded(2))  # (B, h, L, E)
    positions = torch.tensor([[[0, 1, 2, 3]], [[5, 6, 7, 8]]])  # (B, 1, L)
    got = P.rope(x, positions)
    torch.testing.assert_close(got[0], P.rope(x[0]), **F64)
    torch.testing.assert_close(got[1], P.rope(x[1], [5, 6, 7, 8]), **F64)
    torch.testing.assert_close(got, f64(reference.rope(x.numpy(), positions.numpy())), **F64)


def test_rope_at_position_zero_is_the_identity_and_by_hand_in_2d():
    x = randn(1, 4, gen=seeded(3))
    torch.testing.assert_close(P.rope(x), x, rtol=0, atol=0)
    # E = 2: one pair, theta_0 = 1 radian per position. q = (1, 0) at position 1, k = (1, 0)
    # at position 3: angles 1 and 3, dot product cos(3 - 1) = cos 2.
    unit = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    q, k = P.rope(unit, [1]), P.rope(unit, [3])
    torch.testing.assert_close(q[0], torch.tensor([np.cos(1.0), np.sin(1.0)], dtype=torch.float64), **F64)
    torch.testing.assert_close((q * k).sum(), torch.tensor(np.cos(2.0), dtype=torch.float64), **F64)


@pytest.mark.parametrize("h", [*range(1, 20), 24, 32, 64])
def test_alibi_slopes_match_reference(h):
    slopes = P.alibi_slopes(h, dtype=torch.float64)
    torch.testing.assert_close(slopes, f64(reference.alibi_slopes(h)), **F64)
    assert (slopes > 0).all() and (slopes < 1).all()


def test_alibi_slopes_of_the_paper_for_8_and_12_heads():
    # Press et al.: 8 heads 1/2, 1/4, ..., 1/256; 12 heads: the 8 slopes, then every other
    # slope of 16 heads (2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5).
    eight = [2.0**-k for k in range(1, 9)]
    assert P.alibi_slopes(8, dtype=torch.float64).tolist() == eight
    twelve = eight + [2.0 ** -(k + 0.5) for k in range(4)]
    torch.testing.assert_close(P.alibi_slopes(12, dtype=torch.float64), f64(twelve), **F64)
    assert P.alibi_slopes(4, dtype=torch.float64).tolist() == [1 / 4, 1 / 16, 1 / 64, 1 / 256]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("alignment", ["top_left", "bottom_right"])
@pytest.mark.parametrize("h, L, S", [(1, 1, 1), (4, 3, 5), (3, 5, 3), (6, 4, 4)])
def test_alibi_bias_matches_reference(h, L, S, alignment, causal):
    bias = P.alibi_bias(h, L, S, alignment=alignment, causal=causal, dtype=torch.float64)
    assert bias.shape == (h, L, S)
    want = reference.alibi_bias(h, L, S, alignment, causal)
    torch.testing.assert_close(bias, f64(want), **F64)


def test_alibi_bias_by_hand_two_heads():
    bias = P.alibi_bias(2, 3, dtype=torch.float64)  # slopes 1/16 and 1/256
    inf = float("-inf")
    expected = [
        [[0, inf, inf], [-1 / 16, 0, inf], [-2 / 16, -1 / 16, 0]],
        [[0, inf, inf], [-1 / 256, 0, inf], [-2 / 256, -1 / 256, 0]],
    ]
    assert bias.tolist() == expected
    assert not torch.signbit(bias[:, 0, 0]).any()  # a zero distance gives +0, not -0


# ---------------------------------------------------------------------------------------
# Agreement with Hugging Face transformers (Llama, GPT-J, BLOOM)
# ---------------------------------------------------------------------------------------

llama = pytest.importorskip("transformers.models.llama.modeling_llama")
gptj = pytest.importorskip("transformers.models.gptj.modeling_gptj")
bloom = pytest.importorskip("transformers.models.bloom.modeling_bloom")


def _llama_rotary(head_dim: int, base: float):
    from transformers import LlamaConfig

    config = LlamaConfig(
        hidden_size=2 * head_dim, num_attention_heads=2, head_dim=head_dim,
        rope_parameters={"rope_type": "default", "rope_theta": base},
    )
    return llama.LlamaRotaryEmbedding(config)


@pytest.mark.parametrize("base", [10000.0, 500000.0])
def test_rope_matches_llama_rotary_embedding(base):
    B, h, L, E = 2, 3, 11, 16
    gen = seeded(4)
    q, k = randn(B, h, L, E, gen=gen, dtype=torch.float32), randn(B, h, L, E, gen=gen, dtype=torch.float32)
    position_ids = torch.arange(4, 4 + L).expand(B, L)  # (B, L): decoding after 4 cached tokens
    cos, sin = _llama_rotary(E, base)(q, position_ids)  # (B, L, E), computed in float32
    q_hf, k_hf = llama.apply_rotary_pos_emb(q, k, cos, sin)  # unsqueezes the head axis
    positions = torch.arange(4, 4 + L)
    torch.testing.assert_close(P.rope(q, positions, base), q_hf, **tolerance(torch.float32))
    torch.testing.assert_close(P.rope(k, positions, base), k_hf, **tolerance(torch.float32))


def test_rope_layout_of_llama_in_float64():
    # Llama's formula x cos + rotate_half(x) sin, with angles computed here in float64:
    # the same rotation as ours, feature i paired with i + E/2.
    x = randn(2, 7, 10, gen=seeded(5))
    angles = torch.arange(7, dtype=torch.float64)[:, None] * P.rope_frequencies(10, dtype=torch.float64)
    angles = torch.cat([angles, angles], dim=-1)  # (L, E): each angle for both features of a pair
    want = x * angles.cos() + llama.rotate_half(x) * angles.sin()
    torch.testing.assert_close(P.rope(x), want, **F64)


def test_rope_matches_gptj_interleaved():
    B, L, h, E = 2, 9, 3, 8
    x = randn(B, L, h, E, gen=seeded(6), dtype=torch.float32)  # GPT-J's layout (B, L, h, E)
    table = gptj.create_sinusoidal_positions(L, E)  # (L, E): sin then cos of each pair
    sin, cos = torch.split(table[torch.arange(L).expand(B, L)], E // 2, dim=-1)  # (B, L, E/2)
    want = gptj.apply_rotary_pos_emb(x, sin, cos)
    got = P.rope(x.transpose(1, 2), interleaved=True).transpose(1, 2)  # ours is (..., L, E)
    torch.testing.assert_close(got, want, **tolerance(torch.float32))


def test_sinusoidal_encoding_matches_gptj_table_up_to_layout():
    table = gptj.create_sinusoidal_positions(16, 8)  # (16, 8): all sines, then all cosines
    ours = P.sinusoidal_encoding(16, 8)
    torch.testing.assert_close(ours[:, 0::2], table[:, :4], **tolerance(torch.float32))
    torch.testing.assert_close(ours[:, 1::2], table[:, 4:], **tolerance(torch.float32))


@pytest.mark.parametrize("h", [1, 2, 4, 6, 8, 12, 16])
def test_alibi_slopes_match_bloom(h):
    # BLOOM computes its powers in float32; compare at float32's tolerance.
    want = bloom._get_alibi_slopes(h, torch.device("cpu"))
    torch.testing.assert_close(P.alibi_slopes(h), want.to(torch.float32), **tolerance(torch.float32))


@pytest.mark.parametrize("h", [4, 12])
def test_alibi_bias_equals_bloom_up_to_a_constant_per_row(h):
    # BLOOM adds m_h * j to every score of key j; ours adds -m_h * (i - j). They differ by
    # -m_h * i, the same for a whole row, which the softmax ignores. BLOOM's slopes are
    # float32 numbers, so the comparison is at float32's tolerance.
    L = 6
    alibi = bloom.build_alibi_tensor(torch.ones(1, L, dtype=torch.long), h, torch.float32)  # (h, 1, L)
    ours = P.alibi_bias(h, L)
    row_shift = P.alibi_slopes(h)[:, None, None] * torch.arange(L, dtype=torch.float32)[:, None]  # (h, L, 1)
    visible = M.causal_mask(L)
    f32 = tolerance(torch.float32)
    torch.testing.assert_close((ours + row_shift)[:, visible], alibi.expand(h, L, L)[:, visible], **f32)
    gen = seeded(7)
    q, k, v = (randn(h, L, 4, gen=gen, dtype=torch.float32) for _ in range(3))
    bloom_mask = alibi.expand(h, L, L).masked_fill(~visible, float("-inf"))
    torch.testing.assert_close(
        AF.scaled_dot_product_attention(q, k, v, ours), AF.scaled_dot_product_attention(q, k, v, bloom_mask), **f32
    )


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(seed=seeds, half=half_widths, L=st.integers(1, 9), interleaved=st.booleans())
def test_rope_keeps_norms(seed, half, L, interleaved):
    gen = seeded(seed)
    x = randn(2, L, 2 * half, gen=gen)
    positions = torch.randint(0, 5000, (L,), generator=gen)
    rotated = P.rope(x, positions, interleaved=interleaved)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1), **F64)


@PROPERTY_SETTINGS
@given(
    seed=seeds, half=half_widths, m=st.integers(0, 2000), n=st.integers(0, 2000),
    shift=st.integers(0, 2000), interleaved=st.booleans(), base=st.sampled_from([10000.0, 100.0, 2.5]),
)
def test_rope_dot_product_depends_only_on_the_offset(seed, half, m, n, shift, interleaved, base):
    gen = seeded(seed)
    q, k = randn(1, 2 * half, gen=gen), randn(1, 2 * half, gen=gen)

    def score(p_q, p_k):
        return (P.rope(q, [p_q], base, interleaved) * P.rope(k, [p_k], base, interleaved)).sum()

    torch.testing.assert_close(score(m, n), score(m + shift, n + shift), **F64)
    if m >= n:  # and it equals the score of the same offset measured from position 0
        torch.testing.assert_close(score(m, n), score(m - n, 0), **F64)


@PROPERTY_SETTINGS
@given(seed=seeds, half=half_widths, L=st.integers(1, 8))
def test_rope_layouts_are_one_rotation_up_to_a_permutation(seed, half, L):
    # Interleaved pair (2i, 2i + 1) sits at (i, i + E/2) after the permutation below.
    gen = seeded(seed)
    E = 2 * half
    x = randn(3, L, E, gen=gen)
    positions = torch.randint(0, 100, (L,), generator=gen)
    to_halves = torch.cat([torch.arange(0, E, 2), torch.arange(1, E, 2)])  # interleaved -> halves
    back = torch.argsort(to_halves)
    interleaved = P.rope(x, positions, interleaved=True)
    via_halves = P.rope(x[..., to_halves], positions, interleaved=False)[..., back]
    torch.testing.assert_close(interleaved, via_halves, **F64)


@PROPERTY_SETTINGS
@given(
    h=st.integers(1, 16), L=st.integers(1, 7), S=st.integers(1, 7),
    alignment=st.sampled_from(["top_left", "bottom_right"]), causal=st.booleans(),
)
def test_alibi_bias_is_minus_slope_times_distance(h, L, S, alignment, causal):
    bias = P.alibi_bias(h, L, S, alignment=alignment, causal=causal, dtype=torch.float64)
    slopes = P.alibi_slopes(h, dtype=torch.float64)
    offset = 0 if alignment == "top_left" else S - L
    distance = (torch.arange(L)[:, None] + offset - torch.arange(S)[None, :]).to(torch.float64)
    past = distance >= 0
    if causal:
        assert torch.equal(torch.isinf(bias), (~past).expand(h, L, S))
        assert torch.equal(past, M.causal_mask(L, S, alignment=alignment))
        torch.testing.assert_close(bias[:, past], (-slopes[:, None] * distance[past]), **F64)
    else:
        torch.testing.assert_close(bias, -slopes[:, None, None] * distance.abs(), **F64)


@PROPERTY_SETTINGS
@given(
    seed=seeds, L=st.integers(1, 7), S=st.integers(1, 7), causal=st.booleans(),
    alignment=st.sampled_from(["top_left", "bottom_right"]), block=st.integers(1, 4),
)
def test_alibi_bias_agrees_across_sdpa_blockwise_and_reference(seed, L, S, causal, alignment, block):
    gen = seeded(seed)
    h = 3
    q, k, v = randn(2, h, L, 4, gen=gen), randn(2, h, S, 4, gen=gen), randn(2, h, S, 5, gen=gen)
    bias = P.alibi_bias(h, L, S, alignment=alignment, causal=causal, dtype=torch.float64)
    fused = AF.scaled_dot_product_attention(q, k, v, bias)
    explicit, weights = AF.scaled_dot_product_attention(q, k, v, bias, return_weights=True)
    blocks = blockwise_attention(q, k, v, bias, block_size=block)
    want, want_weights = reference.scaled_dot_product_attention(q.numpy(), k.numpy(), v.numpy(), bias.numpy())
    for got in (fused, explicit, blocks):
        torch.testing.assert_close(got, f64(want), **F64)
    torch.testing.assert_close(weights, f64(want_weights), **F64)


def test_alibi_while_decoding_with_a_cache_matches_full_causal_attention():
    # New queries are the last L of S positions: the bottom-right bias is the last L rows
    # of the full square one, so step-by-step decoding gives the outputs of one full pass.
    h, S = 4, 9
    gen = seeded(8)
    q, k, v = randn(h, S, 4, gen=gen), randn(h, S, 4, gen=gen), randn(h, S, 3, gen=gen)
    full = AF.scaled_dot_product_attention(q, k, v, P.alibi_bias(h, S, dtype=torch.float64))
    for L in (1, 3):
        square = P.alibi_bias(h, S, dtype=torch.float64)
        bias = P.alibi_bias(h, L, S, alignment="bottom_right", dtype=torch.float64)
        assert torch.equal(bias, square[:, -L:, :])
    steps = []
    for t in range(S):
        bias = P.alibi_bias(h, 1, t + 1, alignment="bottom_right", dtype=torch.float64)
        steps.append(blockwise_attention(q[:, t : t + 1], k[:, : t + 1], v[:, : t + 1], bias))
    torch.testing.assert_close(torch.cat(steps, dim=-2), full, **F64)


def test_rope_while_decoding_with_a_cache_matches_full_causal_attention():
    h, S, E = 2, 8, 6
    gen = seeded(9)
    q, k, v = randn(h, S, E, gen=gen), randn(h, S, E, gen=gen), randn(h, S, 3, gen=gen)
    full = AF.scaled_dot_product_attention(P.rope(q), P.rope(k), v, is_causal=True)
    cached_keys = []
    steps = []
    for t in range(S):
        cached_keys.append(P.rope(k[:, t : t + 1], [t]))  # each key rotated once, when it arrives
        query = P.rope(q[:, t : t + 1], torch.tensor([t]))
        steps.append(AF.scaled_dot_product_attention(query, torch.cat(cached_keys, -2), v[:, : t + 1]))
    torch.testing.assert_close(torch.cat(steps, dim=-2), full, **F64)


# ---------------------------------------------------------------------------------------
# Dtypes, devices, gradients
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_FLOAT_DTYPES)
def test_every_dtype_and_device(dtype, device):
    x = randn(2, 5, 8, gen=seeded(10), dtype=dtype, device=device)
    rotated = P.rope(x, torch.arange(3, 8))
    assert rotated.dtype == dtype and rotated.device == x.device
    want = torch.as_tensor(reference.rope(x.double().cpu().numpy(), np.arange(3, 8)))
    assert_close_policy(rotated.double().cpu(), want, dtype)
    if dtype in (torch.float16, torch.bfloat16):  # computed in float32, rounded once
        assert torch.equal(rotated, P.rope(x.float(), torch.arange(3, 8)).to(dtype))
    table = P.sinusoidal_encoding(6, 8, dtype=dtype, device=device)
    assert table.dtype == dtype and table.device == x.device
    assert_close_policy(table.double().cpu(), torch.as_tensor(reference.sinusoidal_encoding(6, 8)), dtype)
    bias = P.alibi_bias(3, 4, 6, alignment="bottom_right", dtype=dtype, device=device)
    assert bias.dtype == dtype and bias.device == x.device
    want_bias = torch.as_tensor(reference.alibi_bias(3, 4, 6, "bottom_right"))
    assert_close_policy(bias.double().cpu(), want_bias, dtype)
    q = randn(2, 3, 4, 8, gen=seeded(11), dtype=dtype, device=device)
    k = randn(2, 3, 6, 8, gen=seeded(12), dtype=dtype, device=device)
    out = AF.scaled_dot_product_attention(P.rope(q), P.rope(k), k, bias)
    assert out.dtype == dtype and torch.isfinite(out).all()


def test_rope_gradient():
    x = randn(2, 4, 6, gen=seeded(13)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: P.rope(t, [1, 5, 2, 9], interleaved=False), (x,))
    assert torch.autograd.gradcheck(lambda t: P.rope(t, interleaved=True), (x,))


def test_inputs_are_not_changed():
    x = randn(2, 4, 6, gen=seeded(14))
    before = x.clone()
    positions = torch.tensor([0, 3, 1, 2])
    P.rope(x, positions)
    assert torch.equal(x, before) and positions.tolist() == [0, 3, 1, 2]


# ---------------------------------------------------------------------------------------
# Permutation equivariance, and MultiHeadAttention's schemes
# ---------------------------------------------------------------------------------------


def test_attention_without_positions_is_permutation_equivariant_and_with_rope_is_not():
    torch.manual_seed(0)
    plain = MultiHeadAttention(8, 2).double()
    rotary = MultiHeadAttention(8, 2, rope=True).double()
    rotary.load_state_dict(plain.state_dict())
    x = randn(1, 5, 8, gen=seeded(15))
    order = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(plain(x[:, order])[0], plain(x)[0][:, order], **F64)
    assert not torch.allclose(rotary(x[:, order])[0], rotary(x)[0][:, order])


def _manual_layer(layer, x, bias=None, rotate=False, is_causal=False):
    """The layer's computation step by step from reference functions."""
    B, L, _ = x.shape
    heads = []
    for b in range(B):
        Q = reference.split_heads(x[b].numpy() @ layer.q_proj.weight.detach().numpy().T + layer.q_proj.bias.detach().numpy(), layer.num_heads)
        K = reference.split_heads(x[b].numpy() @ layer.k_proj.weight.detach().numpy().T + layer.k_proj.bias.detach().numpy(), layer.num_heads)
        V = reference.split_heads(x[b].numpy() @ layer.v_proj.weight.detach().numpy().T + layer.v_proj.bias.detach().numpy(), layer.num_heads)
        if rotate:
            Q, K = reference.rope(Q, base=layer.rope_base), reference.rope(K, base=layer.rope_base)
        mask = bias if bias is not None else (reference.causal_mask(L) if is_causal else None)
        O, _ = reference.scaled_dot_product_attention(Q, K, V, mask)
        heads.append(reference.merge_heads(O))
    concat = np.stack(heads)
    return concat @ layer.out_proj.weight.detach().numpy().T + layer.out_proj.bias.detach().numpy()


@pytest.mark.parametrize("is_causal", [False, True])
def test_multi_head_attention_with_rope_matches_reference(is_causal):
    torch.manual_seed(1)
    layer = MultiHeadAttention(12, 3, rope=True, rope_base=100.0).double()
    x = randn(2, 5, 12, gen=seeded(16))
    out, _ = layer(x, is_causal=is_causal)
    torch.testing.assert_close(out, f64(_manual_layer(layer, x, rotate=True, is_causal=is_causal)), **F64)


@pytest.mark.parametrize("is_causal", [False, True])
def test_multi_head_attention_with_alibi_matches_reference(is_causal):
    torch.manual_seed(2)
    layer = MultiHeadAttention(12, 3, alibi=True).double()
    x = randn(2, 5, 12, gen=seeded(17))
    out, weights = layer(x, is_causal=is_causal, need_weights=True, average_attn_weights=False)
    bias = reference.alibi_bias(3, 5, 5, causal=is_causal)
    torch.testing.assert_close(out, f64(_manual_layer(layer, x, bias=bias)), **F64)
    if is_causal:
        assert (weights.triu(1) == 0).all()


def test_multi_head_attention_alibi_with_key_padding():
    torch.manual_seed(3)
    layer = MultiHeadAttention(8, 2, alibi=True).double()
    x = randn(2, 4, 8, gen=seeded(18))
    key_padding = M.key_padding_from_lengths([4, 2], 4)  # (B, S)
    out, weights = layer(x, key_padding=key_padding, is_causal=True, need_weights=True, average_attn_weights=False)
    assert (weights[1, :, :, 2:] == 0).all()
    bias = P.alibi_bias(2, 4, dtype=torch.float64)
    explicit = M.merge_masks(bias, key_padding[:, None, None, :])
    plain = MultiHeadAttention(8, 2).double()
    plain.load_state_dict(layer.state_dict())
    torch.testing.assert_close(out, plain(x, attn_mask=explicit)[0], **F64)


def test_multi_head_attention_schemes_with_grouped_query_heads():
    torch.manual_seed(4)
    for kwargs in ({"rope": True}, {"alibi": True}):
        layer = MultiHeadAttention(16, 4, num_kv_heads=2, **kwargs).double()
        out, _ = layer(randn(2, 5, 16, gen=seeded(19)), is_causal=True)
        assert out.shape == (2, 5, 16) and torch.isfinite(out).all()


def test_schemes_are_off_by_default_and_parity_with_torch_holds():
    torch.manual_seed(5)
    torch_layer = nn.MultiheadAttention(8, 2, batch_first=True).double()
    ours = MultiHeadAttention.from_torch(torch_layer)
    assert (ours.rope, ours.alibi) == (False, False)
    x = randn(2, 5, 8, gen=seeded(20))
    torch.testing.assert_close(ours(x)[0], torch_layer(x, x, x)[0], **F64)
