"""attncourse.functional against torch: parity with F.scaled_dot_product_attention on many
seeded configurations, the masked softmax, dropout semantics, dtypes and devices."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from attn_helpers import ALL_FLOAT_DTYPES, assert_close_policy, randn, random_bool_mask, seeded
from attncourse import functional as AF

# ---------------------------------------------------------------------------------------
# Random configurations for the parity tests
# ---------------------------------------------------------------------------------------

MASK_KINDS = ("none", "bool", "float", "bool_dead_rows", "float_dead_rows", "causal")


@dataclass(frozen=True)
class Config:
    """One parity case: shapes, a mask kind and how the mask broadcasts, scale, GQA."""

    seed: int
    batch: tuple[int, ...]  # batch dims of the query, heads last when gqa_group > 1
    L: int
    S: int
    E: int
    Ev: int
    mask_kind: str
    mask_batch: tuple[int, ...]  # batch dims of the mask (broadcast against batch)
    scale: float | None
    gqa_group: int  # query heads per key/value head; 1 means no GQA

    def __str__(self) -> str:
        return (
            f"seed{self.seed}-b{self.batch}-L{self.L}-S{self.S}-{self.mask_kind}"
            f"-m{self.mask_batch}-s{self.scale}-g{self.gqa_group}"
        )


def _mask_batch(rng: random.Random, batch: tuple[int, ...]) -> tuple[int, ...]:
    """A batch shape for the mask that broadcasts to ``batch``: drop leading dims, set 1s."""
    dropped = rng.randint(0, len(batch))
    kept = batch[dropped:]
    return tuple(1 if rng.random() < 0.4 else n for n in kept)


def _make_config(seed: int) -> Config:
    rng = random.Random(seed)
    gqa_group = rng.choice((1, 1, 2, 3))
    if gqa_group > 1:
        kv_heads = rng.choice((1, 2))
        batch = (rng.randint(1, 3), kv_heads * gqa_group)
    else:
        batch = rng.choice(((), (3,), (2, 3), (2, 1, 4)))
    return Config(
        seed=seed,
        batch=batch,
        L=rng.randint(1, 9),
        S=rng.randint(1, 9),
        E=rng.choice((1, 4, 8, 16)),
        Ev=rng.choice((1, 3, 8)),
        mask_kind=MASK_KINDS[seed % len(MASK_KINDS)],
        mask_batch=_mask_batch(rng, batch),
        scale=rng.choice((None, None, 0.3, 1.7)),
        gqa_group=gqa_group,
    )


CONFIGS = [_make_config(seed) for seed in range(48)]


def _inputs(config: Config, dtype: torch.dtype, device):
    """query (*batch, L, E), key/value (*kv_batch, S, E/Ev) and the mask arguments."""
    gen = seeded(config.seed)
    kv_batch = config.batch
    if config.gqa_group > 1:
        kv_batch = (*config.batch[:-1], config.batch[-1] // config.gqa_group)
    query = randn(*config.batch, config.L, config.E, gen=gen, dtype=dtype, device=device)
    key = randn(*kv_batch, config.S, config.E, gen=gen, dtype=dtype, device=device)
    value = randn(*kv_batch, config.S, config.Ev, gen=gen, dtype=dtype, device=device)
    mask_args = {"attn_mask": None, "is_causal": config.mask_kind == "causal"}
    if config.mask_kind not in ("none", "causal"):
        keep = random_bool_mask(*config.mask_batch, config.L, config.S, gen=gen)
        if config.mask_kind.endswith("dead_rows"):
            keep[..., 0, :] = False  # the first query may attend to nothing
        if config.mask_kind.startswith("float"):
            noise = randn(*keep.shape, gen=gen)
            mask = noise.masked_fill(~keep, float("-inf"))
            mask_args["attn_mask"] = mask.to(dtype=dtype, device=device)
        else:
            mask_args["attn_mask"] = keep.to(device)
    return query, key, value, mask_args


def _torch_weights(query, key, config: Config, mask_args) -> torch.Tensor:
    """torch's own attention weights: SDPA with the identity as values returns A itself."""
    S = key.shape[-2]
    identity = torch.eye(S, dtype=query.dtype, device=query.device)
    identity = identity.expand(*key.shape[:-2], S, S)  # (..., S, S) values
    return F.scaled_dot_product_attention(
        query, key, identity, scale=config.scale, enable_gqa=config.gqa_group > 1, **mask_args
    )


def _ours(query, key, value, config: Config, mask_args, return_weights: bool):
    return AF.scaled_dot_product_attention(
        query,
        key,
        value,
        scale=config.scale,
        enable_gqa=config.gqa_group > 1,
        return_weights=return_weights,
        **mask_args,
    )


def _torch_output(query, key, value, config: Config, mask_args):
    return F.scaled_dot_product_attention(
        query, key, value, scale=config.scale, enable_gqa=config.gqa_group > 1, **mask_args
    )


# ---------------------------------------------------------------------------------------
# Parity with F.scaled_dot_product_attention
# ---------------------------------------------------------------------------------------


def _check_parity(config: Config, dtype: torch.dtype, device) -> None:
    """Fused and explicit paths against torch: outputs, weights, dtype."""
    query, key, value, mask_args = _inputs(config, dtype, device)
    expected = _torch_output(query, key, value, config, mask_args)

    fused = _ours(query, key, value, config, mask_args, return_weights=False)
    output, weights = _ours(query, key, value, config, mask_args, return_weights=True)

    assert fused.dtype == output.dtype == weights.dtype == dtype
    assert_close_policy(fused, expected)
    assert_close_policy(output, expected)
    assert_close_policy(weights, _torch_weights(query, key, config, mask_args))


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sdpa_matches_torch(config, dtype, device):
    _check_parity(config, dtype, device)


@pytest.mark.parametrize("config", CONFIGS[::4], ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sdpa_low_precision_matches_torch(config, dtype, device):
    _check_parity(config, dtype, device)


def test_configurations_cover_every_case():
    """The random table really exercises what the parity tests claim to cover."""
    assert {c.mask_kind for c in CONFIGS} == set(MASK_KINDS)
    assert any(c.gqa_group > 1 for c in CONFIGS)
    assert any(c.L != c.S for c in CONFIGS)
    assert any(c.scale is not None for c in CONFIGS)
    assert any(len(c.mask_batch) < len(c.batch) for c in CONFIGS if c.mask_kind == "bool")
    assert any(1 in c.mask_batch for c in CONFIGS)


def test_fully_masked_rows_give_zero_output_and_weights(device):
    gen = seeded(1)
    query, key, value = (randn(2, 4, 5, 3, gen=gen, device=device) for _ in range(3))
    keep = torch.ones(5, 5, dtype=torch.bool, device=device)  # (L, S)
    keep[2] = False
    output, weights = AF.scaled_dot_product_attention(
        query, key, value, keep, return_weights=True
    )
    assert torch.equal(weights[..., 2, :], torch.zeros_like(weights[..., 2, :]))
    assert torch.equal(output[..., 2, :], torch.zeros_like(output[..., 2, :]))
    assert torch.isfinite(output).all()


@pytest.mark.parametrize("as_float", [False, True])
def test_no_keys_at_all_gives_zeros_like_torch(as_float, device):
    """S = 0 (say, an empty memory): every query attends to nothing."""
    gen = seeded(9)
    query = randn(2, 3, 4, gen=gen, device=device)
    key, value = randn(2, 0, 4, gen=gen, device=device), randn(2, 0, 5, gen=gen, device=device)
    keep = torch.ones(3, 0, dtype=torch.bool, device=device)  # (L, S)
    mask = torch.zeros(3, 0, dtype=torch.float64, device=device) if as_float else keep
    output, weights = AF.scaled_dot_product_attention(query, key, value, mask, return_weights=True)
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    assert weights.shape == (2, 3, 0)
    assert_close_policy(output, expected)
    assert torch.equal(output, torch.zeros(2, 3, 5, dtype=torch.float64, device=device))


def test_dot_product_attention_is_sdpa_with_unit_scale(device):
    gen = seeded(2)
    query, key = randn(3, 4, 6, gen=gen, device=device), randn(3, 5, 6, gen=gen, device=device)
    value = randn(3, 5, 2, gen=gen, device=device)
    keep = random_bool_mask(3, 4, 5, gen=gen).to(device)
    output, weights = AF.dot_product_attention(query, key, value, keep, return_weights=True)
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=keep, scale=1.0)
    assert_close_policy(output, expected)
    assert_close_policy(AF.dot_product_attention(query, key, value, keep), expected)
    assert_close_policy(weights.sum(-1)[keep.any(-1)], torch.ones_like(weights.sum(-1)[keep.any(-1)]))


def test_score_functions_match_their_formulas(device):
    gen = seeded(3)
    q, k = randn(2, 4, 3, gen=gen, device=device), randn(2, 5, 3, gen=gen, device=device)
    W = randn(3, 3, gen=gen, device=device)
    assert_close_policy(AF.dot_scores(q, k), torch.einsum("ble,bse->bls", q, k))
    assert_close_policy(AF.scaled_dot_scores(q, k), torch.einsum("ble,bse->bls", q, k) / 3**0.5)
    assert_close_policy(AF.scaled_dot_scores(q, k, scale=2.0), 2 * AF.dot_scores(q, k))
    assert_close_policy(AF.general_scores(q, k, W), torch.einsum("ble,ef,bsf->bls", q, W, k))


# ---------------------------------------------------------------------------------------
# The masked softmax
# ---------------------------------------------------------------------------------------


def test_masked_softmax_without_mask_is_softmax(device):
    scores = randn(3, 4, 7, gen=seeded(4), device=device)
    for dim in (-1, 0, 1):
        assert_close_policy(AF.masked_softmax(scores, dim=dim), torch.softmax(scores, dim=dim))


def test_masked_softmax_bool_and_float_masks_agree(device):
    gen = seeded(5)
    scores = randn(3, 4, 7, gen=gen, device=device)
    keep = random_bool_mask(3, 4, 7, gen=gen).to(device)
    keep[1, 2] = False
    additive = torch.zeros_like(scores).masked_fill(~keep, float("-inf"))
    from_bool = AF.masked_softmax(scores, keep)
    assert_close_policy(AF.masked_softmax(scores, additive), from_bool)
    assert torch.equal(from_bool[~keep], torch.zeros_like(from_bool[~keep]))
    assert torch.equal(from_bool[1, 2], torch.zeros(7, dtype=scores.dtype, device=device))


def test_masked_softmax_is_stable_for_huge_scores(device):
    scores = torch.tensor([[1000.0, 1001.0, -1000.0]], dtype=torch.float64, device=device)
    weights = AF.masked_softmax(scores)
    expected = torch.softmax(scores - 1001.0, dim=-1)
    assert torch.isfinite(weights).all()
    assert_close_policy(weights, expected)


def test_masked_softmax_float_mask_shifts_scores(device):
    gen = seeded(6)
    scores, bias = randn(2, 3, 5, gen=gen, device=device), randn(3, 5, gen=gen, device=device)
    assert_close_policy(AF.masked_softmax(scores, bias), torch.softmax(scores + bias, dim=-1))


# ---------------------------------------------------------------------------------------
# Dropout on the weights
# ---------------------------------------------------------------------------------------


def test_dropout_weights_are_the_applied_weights(device):
    gen = seeded(7)
    query, key = randn(2, 8, 4, gen=gen, device=device), randn(2, 9, 4, gen=gen, device=device)
    value = randn(2, 9, 3, gen=gen, device=device)
    p = 0.4
    _, clean = AF.scaled_dot_product_attention(query, key, value, return_weights=True)
    torch.manual_seed(0)
    output, dropped = AF.scaled_dot_product_attention(
        query, key, value, dropout_p=p, return_weights=True
    )
    assert_close_policy(output, dropped @ value)
    zeroed = dropped == 0
    assert zeroed.any() and (~zeroed).any()
    assert_close_policy(dropped[~zeroed], clean[~zeroed] / (1 - p))


# ---------------------------------------------------------------------------------------
# Dtype and device are preserved
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_FLOAT_DTYPES)
def test_outputs_keep_input_dtype_and_device(dtype, device):
    gen = seeded(8)
    query, key = randn(2, 3, 4, gen=gen, dtype=dtype, device=device), randn(
        2, 5, 4, gen=gen, dtype=dtype, device=device
    )
    value = randn(2, 5, 6, gen=gen, dtype=dtype, device=device)
    W, W_q, W_k, w_v = (
        randn(4, 4, gen=gen, dtype=dtype, device=device),
        randn(7, 4, gen=gen, dtype=dtype, device=device),
        randn(7, 4, gen=gen, dtype=dtype, device=device),
        randn(7, gen=gen, dtype=dtype, device=device),
    )
    keep = random_bool_mask(3, 5, gen=gen).to(device)
    results = [
        AF.masked_softmax(AF.dot_scores(query, key), keep),
        AF.scaled_dot_scores(query, key),
        AF.general_scores(query, key, W),
        AF.additive_scores(query, key, W_q, W_k, w_v),
        AF.scaled_dot_product_attention(query, key, value, keep),
        *AF.scaled_dot_product_attention(query, key, value, keep, return_weights=True),
        *AF.dot_product_attention(query, key, value, keep, return_weights=True),
        *AF.general_attention(query, key, value, W, keep, return_weights=True),
        *AF.additive_attention(query, key, value, W_q, W_k, w_v, keep, return_weights=True),
    ]
    for result in results:
        assert result.dtype == dtype
        assert result.device.type == device.type


# ---------------------------------------------------------------------------------------
# Edge cases found by differential fuzzing against torch
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("L, S", [(0, 5), (3, 0), (0, 0)])
def test_causal_with_no_queries_or_no_keys_matches_torch(L, S, device):
    gen = seeded(91)
    q, k, v = randn(2, L, 4, gen=gen, device=device), randn(2, S, 4, gen=gen, device=device), randn(2, S, 3, gen=gen, device=device)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True).nan_to_num(0.0)
    output, weights = AF.scaled_dot_product_attention(q, k, v, is_causal=True, return_weights=True)
    assert output.shape == expected.shape == (2, L, 3) and weights.shape == (2, L, S)
    if S == 0:  # no keys: nothing to average, a zero output
        assert torch.equal(output, torch.zeros_like(output))
    assert_close_policy(AF.scaled_dot_product_attention(q, k, v, is_causal=True), expected)


@pytest.mark.parametrize("mask", [torch.tensor([True, False, True]), torch.tensor(True)], ids=["1-d", "0-d"])
@pytest.mark.parametrize("return_weights", [False, True])
def test_masks_of_fewer_than_two_dims_broadcast_with_4d_inputs(mask, return_weights, device):
    gen = seeded(92)
    q, k, v = (randn(2, 2, 3, 4, gen=gen, device=device) for _ in range(3))
    mask = mask.to(device)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.expand(3, 3))
    result = AF.scaled_dot_product_attention(q, k, v, attn_mask=mask, return_weights=return_weights)
    assert_close_policy(result[0] if return_weights else result, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_weights_path_computes_half_precision_scores_in_float32(dtype, device):
    # Scores of 256 * 256 * 4 = 262144 overflow float16 (largest 65504) unless computed in
    # float32, as torch's kernels do.
    q = torch.full((1, 1, 4), 256.0, dtype=dtype, device=device)
    v = torch.ones(1, 1, 2, dtype=dtype, device=device)
    output, weights = AF.scaled_dot_product_attention(q, q, v, return_weights=True)
    assert output.dtype == weights.dtype == dtype
    assert torch.equal(output, F.scaled_dot_product_attention(q, q, v))
    assert torch.equal(weights, torch.ones_like(weights))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_general_and_additive_attention_compute_half_precision_in_float32(dtype, device):
    # General scores of 256 * 256 * 4 = 262144 overflow float16; the additive hidden layer
    # of 300 * 300 = 90000 does too, before tanh. In float32 both are finite.
    q = torch.full((1, 2, 4), 256.0, dtype=dtype, device=device)
    v = torch.arange(4.0, device=device).reshape(2, 2).to(dtype)[None]  # (1, 2, 2)
    W = torch.eye(4, dtype=dtype, device=device)
    output, weights = AF.general_attention(q, q, v, W, return_weights=True)
    assert output.dtype == weights.dtype == dtype
    assert torch.equal(weights, torch.full_like(weights, 0.5))  # equal scores, uniform weights
    W_big = torch.full((3, 4), 300.0, dtype=dtype, device=device)
    w_v = torch.ones(3, dtype=dtype, device=device)
    output, weights = AF.additive_attention(q, q, v, W_big, W_big, w_v, return_weights=True)
    assert output.isfinite().all() and torch.equal(weights, torch.full_like(weights, 0.5))
