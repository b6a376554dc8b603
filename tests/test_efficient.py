"""Tests of attncourse.efficient: blockwise attention and the key/value cache.

The oracle is torch's own ``F.scaled_dot_product_attention`` (and its autograd), compared
at the tolerance policy of DESIGN.md. Every test that can run on a GPU takes the
``device`` fixture of conftest.py (cpu always, cuda when available).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from attn_helpers import assert_close_policy, randn, seeded
from attncourse import efficient, functional, masks
from attncourse.efficient import KVCache, blockwise_attention

F64 = torch.float64


def qkv(batch, L, S, E, Ev, *, seed, dtype=F64, device="cpu", grad=True):
    """Seeded query (*batch, L, E), key (*batch, S, E), value (*batch, S, Ev)."""
    gen = seeded(seed)
    tensors = (
        randn(*batch, L, E, gen=gen, dtype=dtype, device=device),
        randn(*batch, S, E, gen=gen, dtype=dtype, device=device),
        randn(*batch, S, Ev, gen=gen, dtype=dtype, device=device),
    )
    return tuple(t.requires_grad_(grad) for t in tensors)


def outputs_and_grads(fn, inputs, seed=99):
    """Run fn(*inputs), backpropagate a seeded random upstream gradient; return (out, grads)."""
    output = fn(*inputs)
    upstream = randn(*output.shape, gen=seeded(seed), dtype=output.dtype, device=output.device)
    grads = torch.autograd.grad(output, inputs, upstream)
    return output, grads


def assert_matches_torch(inputs, *, block_size, dtype=None, **options):
    """Blockwise attention and torch's SDPA agree in output and in the input gradients.

    ``options`` (attn_mask, is_causal, scale) go to both functions unchanged.
    """
    ours = outputs_and_grads(
        lambda q, k, v: blockwise_attention(q, k, v, block_size=block_size, **options), inputs
    )
    theirs = outputs_and_grads(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **options), inputs
    )
    assert_close_policy(ours[0], theirs[0], dtype)
    for got, expected in zip(ours[1], theirs[1]):
        assert_close_policy(got, expected, dtype)


# ---------------------------------------------------------------------------------------
# Agreement with torch in float64: shapes, blocks, causal
# ---------------------------------------------------------------------------------------

SHAPES = [  # batch, L, S, E, Ev
    ((), 1, 1, 3, 2),
    ((2,), 7, 9, 4, 5),
    ((2, 3), 16, 16, 8, 8),
    ((1, 2), 13, 5, 6, 3),
    ((3,), 5, 31, 2, 7),
]
BLOCKS = [1, 4, (3, 5), (8, 2), 64]  # divide the lengths or not; larger than them


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"b{s[0]}-L{s[1]}-S{s[2]}")
@pytest.mark.parametrize("block_size", BLOCKS, ids=str)
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_matches_torch_float64(shape, block_size, is_causal, device):
    batch, L, S, E, Ev = shape
    inputs = qkv(batch, L, S, E, Ev, seed=L * 100 + S, device=device)
    assert_matches_torch(inputs, is_causal=is_causal, block_size=block_size)


@pytest.mark.parametrize("seed", range(6))
def test_random_shapes_and_blocks(seed, device):
    gen = seeded(1000 + seed)
    L, S, E, Ev, block_q, block_k = (int(x) for x in torch.randint(1, 40, (6,), generator=gen))
    heads = int(torch.randint(1, 4, (1,), generator=gen))
    inputs = qkv((2, heads), L, S, E, Ev, seed=seed, device=device)
    is_causal = bool(seed % 2)
    assert_matches_torch(inputs, is_causal=is_causal, block_size=(block_q, block_k))


def test_custom_scale(device):
    inputs = qkv((2,), 9, 11, 4, 3, seed=5, device=device)
    assert_matches_torch(inputs, scale=0.37, block_size=(4, 3))


def test_broadcast_batch_dimensions(device):
    """query (2, 1, L, E) against key/value (1, 3, S, ·): batch broadcasts to (2, 3)."""
    gen = seeded(7)
    query = randn(2, 1, 6, 4, gen=gen, device=device).requires_grad_()
    key = randn(1, 3, 10, 4, gen=gen, device=device).requires_grad_()
    value = randn(1, 3, 10, 5, gen=gen, device=device).requires_grad_()
    assert_matches_torch((query, key, value), block_size=(4, 3))


def test_default_block_size_and_long_sequence(device):
    L = S = efficient.DEFAULT_BLOCK_SIZE[1] + 37  # more than one block of each kind
    inputs = qkv((1,), L, S, 8, 8, seed=3, device=device)
    expected = F.scaled_dot_product_attention(*inputs, is_causal=True)
    assert_close_policy(blockwise_attention(*inputs, is_causal=True), expected)


def test_matches_library_with_weights(device):
    """Same output as the library's explicit path (which builds the weights)."""
    query, key, value = qkv((2,), 8, 12, 4, 4, seed=11, device=device, grad=False)
    library_output, _ = functional.scaled_dot_product_attention(
        query, key, value, is_causal=True, return_weights=True
    )
    got = blockwise_attention(query, key, value, is_causal=True, block_size=5)
    assert_close_policy(got, library_output)


# ---------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------


def bool_mask(*shape, seed, device):
    return (torch.rand(*shape, generator=seeded(seed)) < 0.6).to(device)


@pytest.mark.parametrize(
    "mask_shape",
    [(7, 10), (1, 10), (7, 1), (2, 1, 7, 10), (2, 3, 7, 10), (3, 1, 10)],
    ids=str,
)
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_masks_broadcast(mask_shape, kind, device):
    inputs = qkv((2, 3), 7, 10, 4, 5, seed=21, device=device)
    mask = bool_mask(*mask_shape, seed=22, device=device)
    if kind == "float":
        additive = randn(*mask_shape, gen=seeded(23), device=device)
        mask = additive.masked_fill(~mask, float("-inf"))
    assert_matches_torch(inputs, attn_mask=mask, block_size=(3, 4))


def test_float_mask_receives_gradient(device):
    query, key, value = qkv((2,), 6, 9, 4, 3, seed=31, device=device)
    bias = randn(1, 6, 9, gen=seeded(32), device=device).requires_grad_()
    ours = outputs_and_grads(
        lambda q, k, v, b: blockwise_attention(q, k, v, b, block_size=(4, 4)),
        (query, key, value, bias),
    )
    theirs = outputs_and_grads(
        lambda q, k, v, b: F.scaled_dot_product_attention(q, k, v, attn_mask=b),
        (query, key, value, bias),
    )
    for got, expected in zip((ours[0], *ours[1]), (theirs[0], *theirs[1])):
        assert_close_policy(got, expected)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_fully_masked_rows_give_zeros_and_finite_gradients(kind, device):
    inputs = qkv((2,), 6, 8, 4, 3, seed=41, device=device)
    keep = bool_mask(6, 8, seed=42, device=device)
    keep[1] = False
    keep[4] = False
    keep[:, 0] |= torch.tensor([True, False, True, True, False, True], device=device)
    mask = keep if kind == "bool" else torch.zeros(6, 8, dtype=F64, device=device).masked_fill(
        ~keep, float("-inf")
    )
    output, grads = outputs_and_grads(
        lambda q, k, v: blockwise_attention(q, k, v, mask, block_size=(4, 3)), inputs
    )
    assert torch.equal(output[:, [1, 4]], torch.zeros_like(output[:, [1, 4]]))
    assert all(torch.isfinite(g).all() for g in grads)
    assert torch.equal(grads[0][:, [1, 4]], torch.zeros_like(grads[0][:, [1, 4]]))
    assert_matches_torch(inputs, attn_mask=mask, block_size=(4, 3))


def test_everything_masked(device):
    inputs = qkv((), 3, 5, 2, 2, seed=43, device=device)
    nothing = torch.zeros(3, 5, dtype=torch.bool, device=device)
    output, grads = outputs_and_grads(
        lambda q, k, v: blockwise_attention(q, k, v, nothing, block_size=2), inputs
    )
    assert torch.equal(output, torch.zeros_like(output))
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)


@pytest.mark.parametrize("L, S", [(5, 12), (12, 5), (9, 9)])
def test_bottom_right_alignment(L, S, device):
    inputs = qkv((2,), L, S, 4, 3, seed=L + S, device=device)
    explicit = masks.causal_mask(L, S, alignment="bottom_right", device=device)
    ours = outputs_and_grads(
        lambda q, k, v: blockwise_attention(
            q, k, v, is_causal=True, alignment="bottom_right", block_size=(2, 3)
        ),
        inputs,
    )
    theirs = outputs_and_grads(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=explicit), inputs
    )
    for got, expected in zip((ours[0], *ours[1]), (theirs[0], *theirs[1])):
        assert_close_policy(got, expected)


# ---------------------------------------------------------------------------------------
# gradcheck, other dtypes
# ---------------------------------------------------------------------------------------


def _gradcheck_case(case: str, device):
    """(function, inputs) for gradcheck: blocks of (2, 3) over L = 5 queries, S = 7 keys."""
    query, key, value = qkv((2,), 5, 7, 3, 2, seed=51, device=device)
    blocks = {"block_size": (2, 3)}
    if case == "float-mask":  # the mask is an input too
        bias = randn(5, 7, gen=seeded(52), device=device).requires_grad_()
        return (lambda q, k, v, b: blockwise_attention(q, k, v, b, **blocks)), (
            query, key, value, bias,
        )
    if case == "bool-mask-dead-row":
        keep = bool_mask(5, 7, seed=53, device=device)
        keep[2] = False
        return (lambda q, k, v: blockwise_attention(q, k, v, keep, **blocks)), (query, key, value)
    causal = case == "causal"
    return (
        lambda q, k, v: blockwise_attention(q, k, v, is_causal=causal, **blocks)
    ), (query, key, value)


@pytest.mark.parametrize("case", ["plain", "causal", "bool-mask-dead-row", "float-mask"])
def test_gradcheck(case, device):
    fn, inputs = _gradcheck_case(case, device)
    assert torch.autograd.gradcheck(fn, inputs)


def test_float32_matches_torch(device):
    inputs = qkv((2, 2), 37, 45, 16, 8, seed=61, dtype=torch.float32, device=device)
    assert_matches_torch(inputs, is_causal=True, block_size=(8, 16))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_keeps_dtype(dtype, device):
    query, key, value = qkv((2,), 10, 12, 8, 4, seed=62, device=device, grad=False)
    got = blockwise_attention(query.to(dtype), key.to(dtype), value.to(dtype), block_size=4)
    assert got.dtype == dtype
    expected = F.scaled_dot_product_attention(query, key, value)
    assert_close_policy(got.to(F64), expected, dtype)


# ---------------------------------------------------------------------------------------
# Memory: no tensor of the size of the score matrix, ever
# ---------------------------------------------------------------------------------------


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operation produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for item in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(item, torch.Tensor):
                self.largest = max(self.largest, item.numel())
        return result


@pytest.mark.parametrize("is_causal", [False, True])
def test_never_builds_the_score_matrix(is_causal):
    L = S = 256
    block_q, block_k = 32, 16
    query, key, value = qkv((), L, S, 8, 8, seed=71)
    with _LargestTensor() as forward_probe:
        output = blockwise_attention(
            query, key, value, is_causal=is_causal, block_size=(block_q, block_k)
        )
    with _LargestTensor() as backward_probe:
        output.sum().backward()
    largest_allowed = max(block_q * block_k, L * (8 + 1))  # a block of scores, or ~an input
    assert forward_probe.largest <= largest_allowed < L * S
    assert backward_probe.largest <= largest_allowed


def test_saves_only_inputs_output_and_log_sum_exp():
    L, S, E, Ev = 64, 48, 4, 3
    query, key, value = qkv((2,), L, S, E, Ev, seed=72)
    saved = []
    record = lambda t: saved.append(t.shape) or t  # noqa: E731
    with torch.autograd.graph.saved_tensors_hooks(record, lambda t: t):
        blockwise_attention(query, key, value, is_causal=True, block_size=8)
    assert sorted(saved) == sorted(
        [(2, L, E), (2, S, E), (2, S, Ev), (2, L, Ev), (2, L, 1)]
    )


# ---------------------------------------------------------------------------------------
# Decoding with a key/value cache
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_length", [None, 20], ids=["growing", "preallocated"])
@pytest.mark.parametrize(
    "chunks", [[1] * 20, [3, 1, 7, 1, 1, 5, 2]], ids=["token-by-token", "chunks"]
)
def test_cache_decoding_equals_full_causal_attention(max_length, chunks, device):
    query, key, value = qkv((2, 3), 20, 20, 4, 5, seed=81, device=device, grad=False)
    full = F.scaled_dot_product_attention(query, key, value, is_causal=True)
    cache = KVCache(max_length=max_length)
    pieces, start = [], 0
    for size in chunks:
        stop = start + size
        step = slice(start, stop)
        pieces.append(
            cache.step(query[..., step, :], key[..., step, :], value[..., step, :], block_size=4)
        )
        start = stop
    assert len(cache) == 20
    assert_close_policy(torch.cat(pieces, dim=-2), full)
    assert torch.equal(cache.keys, key)
    assert torch.equal(cache.values, value)


def test_cache_growth_and_capacity():
    query, key, value = qkv((1,), 9, 9, 2, 2, seed=82, grad=False)
    growing = KVCache()
    assert growing.capacity == 0
    capacities = []
    for t in range(9):
        growing.append(key[:, t : t + 1], value[:, t : t + 1])
        capacities.append(growing.capacity)
    assert capacities == [1, 2, 4, 4, 8, 8, 8, 8, 16]
    fixed = KVCache(max_length=9)
    fixed.append(key[:, :4], value[:, :4])
    assert fixed.capacity == 9
    with pytest.raises(ValueError, match="max_length=9"):
        fixed.append(key, value)


def test_cache_errors():
    query, key, value = qkv((2,), 4, 4, 3, 2, seed=83, grad=False)
    cache = KVCache()
    with pytest.raises(ValueError, match="empty"):
        cache.attend(query)
    cache.append(key[:, :2], value[:, :2])
    with pytest.raises(ValueError, match="query has 4 positions"):
        cache.attend(query)
    with pytest.raises(ValueError, match="key must have shape"):
        cache.append(key[:1, :1], value[:1, :1])
    with pytest.raises(ValueError, match="value must have last dimension"):
        cache.append(key[:, :1], torch.zeros(2, 1, 5, dtype=F64))
    with pytest.raises(TypeError, match="dtype"):
        cache.append(key[:, :1].float(), value[:, :1].float())
    with pytest.raises(ValueError, match="max_length"):
        KVCache(max_length=0)


# ---------------------------------------------------------------------------------------
# Bad input: the same errors as the library's scaled_dot_product_attention
# ---------------------------------------------------------------------------------------

_Q, _K, _V = (torch.zeros(2, 4, 3), torch.zeros(2, 5, 3), torch.zeros(2, 5, 6))
BAD_CALLS = {
    "int query": ((_Q.long(), _K, _V), {}),
    "not a tensor": (([[1.0]], _K, _V), {}),
    "1-d key": ((_Q, torch.zeros(3), _V), {}),
    "dtype mismatch": ((_Q, _K.double(), _V), {}),
    "d_k mismatch": ((_Q, torch.zeros(2, 5, 2), _V), {}),
    "key/value lengths": ((_Q, _K, torch.zeros(2, 6, 6)), {}),
    "batch mismatch": ((torch.zeros(3, 4, 3), _K, _V), {}),
    "mask shape": ((_Q, _K, _V), {"attn_mask": torch.ones(4, 6, dtype=torch.bool)}),
    "mask dtype": ((_Q, _K, _V), {"attn_mask": torch.ones(4, 5, dtype=torch.int64)}),
    "float mask dtype": ((_Q, _K, _V), {"attn_mask": torch.zeros(4, 5, dtype=F64)}),
    "mask and causal": (
        (_Q, _K, _V),
        {"attn_mask": torch.ones(4, 5, dtype=torch.bool), "is_causal": True},
    ),
    "is_causal not bool": ((_Q, _K, _V), {"is_causal": 1}),
    "negative scale": ((_Q, _K, _V), {"scale": -1.0}),
    "scale not a number": ((_Q, _K, _V), {"scale": "0.5"}),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_input_same_error_as_library(name):
    args, kwargs = BAD_CALLS[name]
    with pytest.raises((TypeError, ValueError)) as library_error:
        functional.scaled_dot_product_attention(*args, **kwargs)
    with pytest.raises(library_error.type) as our_error:
        blockwise_attention(*args, **kwargs)
    assert str(our_error.value) == str(library_error.value)


@pytest.mark.parametrize(
    "block_size, error, message",
    [
        (0, ValueError, "block_size must be a positive int, got 0"),
        (2.5, TypeError, "block_size must be an int or a pair"),
        (True, TypeError, "block_size must be an int or a pair"),
        ((4,), ValueError, "got a sequence of length 1"),
        ((4, -1), ValueError, r"block_size\[1\] must be a positive int, got -1"),
    ],
)
def test_bad_block_size(block_size, error, message):
    with pytest.raises(error, match=message):
        blockwise_attention(_Q, _K, _V, block_size=block_size)


def test_bad_alignment():
    with pytest.raises(ValueError, match="alignment must be one of"):
        blockwise_attention(_Q, _K, _V, is_causal=True, alignment="top")


# ---------------------------------------------------------------------------------------
# Fused kernels: the library's SDPA without weights reaches them (CPU flash; CUDA flash or
# memory-efficient). Tolerance as in PyTorch's own SDPA tests: the fused result may be off
# the float64 answer by a few times what the math backend in the same dtype is off by.
# ---------------------------------------------------------------------------------------

FUSED_FUDGE = 3.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_library_sdpa_runs_on_fused_kernels(dtype, is_causal, device):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    exact = qkv((2, 4), 128, 128, 64, 64, seed=91, device=device, grad=False)  # float64
    low = tuple(t.to(dtype) for t in exact)
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    with sdpa_kernel(fused):  # raises if no fused kernel accepts the inputs
        got = functional.scaled_dot_product_attention(*low, is_causal=is_causal)
    with sdpa_kernel([SDPBackend.MATH]):
        reference = F.scaled_dot_product_attention(*exact, is_causal=is_causal)
        math_low = F.scaled_dot_product_attention(*low, is_causal=is_causal)
    assert got.dtype == dtype
    allowed = FUSED_FUDGE * (math_low.double() - reference).abs().max().item()
    assert (got.double() - reference).abs().max().item() <= allowed
    blockwise = blockwise_attention(*low, is_causal=is_causal)  # computed in float32
    assert (blockwise.double() - reference).abs().max().item() <= allowed


def test_nan_in_the_inputs_stays_nan_and_is_not_mistaken_for_an_empty_row(device):
    # A row that saw no key gives zeros; a NaN must not look like one (torch gives NaN).
    gen = seeded(93)
    q, k, v = randn(1, 2, 4, gen=gen, device=device), randn(1, 3, 4, gen=gen, device=device), randn(1, 3, 4, gen=gen, device=device)
    q[0, 0, 0] = float("nan")
    output = blockwise_attention(q, k, v, block_size=(1, 2))
    assert output[0, 0].isnan().all()
    assert_close_policy(output[0, 1], F.scaled_dot_product_attention(q, k, v)[0, 1])
