"""ex03_scaled_dot_product: scaled scores and scaled dot-product attention with a mask.

Tasks:
    scaled_dot_scores(query, key) -> scores (..., n_q, n_k), divided by sqrt(d_k)
    scaled_dot_product_attention(query, key, value, attn_mask=None) -> (output, weights)

The mask is boolean, True where a query may attend to a key (the convention of
``torch.nn.functional.scaled_dot_product_attention``); a query with nothing to attend to
gets zero weights and a zero output. Cases use d_k != d_v (neither a square) so that every
wrong scale shows, masks with fully masked rows, and float16 for the -1e9 trap.
"""

from __future__ import annotations

import math

import torch

from ... import functional
from .. import cases as mk
from ..core import Case, Task, register_task, run_task_check
from ..mistakes import define, variant
from ..tripwire import ATTENTION_FAMILY, LIBRARY_FAMILY

CHAPTER = "03_scaled_dot_product"

# The hand-sized case: d_k = 4 (sqrt = 2) and d_v = 2, two queries, three keys.
HAND_QUERY = [[1.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, 2.0]]
HAND_KEY = [[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 0.0], [1.0, 0.0, 0.0, 1.0]]
HAND_VALUE = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]


def _random_mask(gen: torch.Generator, *shape: int, dead_rows: tuple[int, ...] = ()) -> torch.Tensor:
    """Boolean mask (..., L, S), True = may attend; each row keeps >= 1 key except dead rows."""
    mask = torch.rand(*shape, generator=gen) < 0.6
    mask[..., 0] |= ~mask.any(dim=-1)  # give every row at least one key
    for row in dead_rows:
        mask[..., row, :] = False
    return mask


def _scores_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=31)
    return [
        Case("a hand-sized case, d_k = 4", (mk.tensor(HAND_QUERY), mk.tensor(HAND_KEY))),
        Case("random, n_q=4, n_k=5, d_k=9", (mk.randn(gen, 4, 9), mk.randn(gen, 5, 9))),
        Case("batched, B=2, d_k=6", (mk.randn(gen, 2, 4, 6), mk.randn(gen, 2, 5, 6))),
        Case("float32 inputs", (mk.randn(gen, 4, 6, dtype=torch.float32), mk.randn(gen, 5, 6, dtype=torch.float32))),
        Case("batch and heads, (2, 3, ...)", (mk.randn(gen, 2, 3, 4, 8), mk.randn(gen, 2, 3, 6, 8))),
        Case("one query (1, 6): the query axis stays", (mk.randn(gen, 1, 6), mk.randn(gen, 5, 6)), visible=False),
    ]


def _attention_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=32)

    def qkv(*batch: int, L=4, S=5, E=9, Ev=2, dtype=torch.float64):
        return (
            mk.randn(gen, *batch, L, E, dtype=dtype),
            mk.randn(gen, *batch, S, E, dtype=dtype),
            mk.randn(gen, *batch, S, Ev, dtype=dtype),
        )

    hand = (mk.tensor(HAND_QUERY), mk.tensor(HAND_KEY), mk.tensor(HAND_VALUE))
    return [
        Case("a hand-sized case, d_k = 4, d_v = 2, no mask", hand),
        Case("random, n_q=4, n_k=5, d_k=9, d_v=2", qkv()),
        Case("batched, B=2, d_k=6, d_v=3", qkv(2, E=6, Ev=3)),
        Case("boolean mask (n_q, n_k)", qkv(), {"attn_mask": _random_mask(gen, 4, 5)}),
        Case(
            "batched mask with fully masked rows (queries 1 and 3)",
            qkv(2, E=6, Ev=3),
            {"attn_mask": _random_mask(gen, 2, 4, 5, dead_rows=(1, 3))},
        ),
        Case(
            "float32 inputs with a mask",
            qkv(dtype=torch.float32),
            {"attn_mask": _random_mask(gen, 4, 5)},
        ),
        Case(
            "float16 inputs, a fully masked row",
            qkv(E=16, Ev=4, dtype=torch.float16),
            {"attn_mask": _random_mask(gen, 4, 5, dead_rows=(2,))},
            visible=False,
        ),
        Case(
            "batch and heads, a key-padding mask broadcast over queries",
            qkv(2, 3, L=3, S=6, E=4, Ev=5),
            {"attn_mask": _random_mask(gen, 2, 1, 1, 6)},
        ),
        Case(
            "allowed scores far below a masked one: -2e4, -3e4 and (masked) 5e4",
            (mk.tensor([[100.0]]), mk.tensor([[-200.0], [-300.0], [500.0]]), mk.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])),
            {"attn_mask": torch.tensor([[True, True, False]])},
            visible=False,
        ),
    ]


def reference_scaled_dot_scores(query, key):
    return functional.scaled_dot_scores(query, key)


def reference_scaled_dot_product_attention(query, key, value, attn_mask=None):
    return functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attn_mask, return_weights=True
    )


SCALED_DOT_SCORES = register_task(
    Task(
        name="scaled_dot_scores",
        function_name="scaled_dot_scores",
        reference=reference_scaled_dot_scores,
        make_cases=_scores_cases,
        result_names=("scores",),
        forbidden=ATTENTION_FAMILY + LIBRARY_FAMILY,
        chapter=CHAPTER,
    )
)
SCALED_DOT_PRODUCT_ATTENTION = register_task(
    Task(
        name="scaled_dot_product_attention",
        function_name="scaled_dot_product_attention",
        reference=reference_scaled_dot_product_attention,
        make_cases=_attention_cases,
        result_names=("output", "weights"),
        forbidden=ATTENTION_FAMILY + LIBRARY_FAMILY,
        chapter=CHAPTER,
    )
)

# ---------------------------------------------------------------------------------------
# Mistakes
# ---------------------------------------------------------------------------------------

define(
    "missing_scale",
    "the scores are not scaled: divide Q K^T by sqrt(d_k), where d_k = query.shape[-1].",
)
define(
    "scale_by_d_k",
    "the scores are divided by d_k instead of its square root: use math.sqrt(d_k).",
)
define(
    "scale_by_d_v",
    "the scale uses the value size d_v (value.shape[-1]); it must use the query/key size "
    "d_k = query.shape[-1]: the variance of q . k grows with d_k.",
)
define(
    "scale_after_softmax",
    "the weights are scaled after the softmax, so rows no longer sum to 1: scale the "
    "scores, then apply the softmax.",
)
define(
    "inverted_mask",
    "the mask is read the wrong way round: True means 'may attend' (as in "
    "F.scaled_dot_product_attention), so fill the scores where the mask is False (~attn_mask).",
)
define(
    "mask_ignored",
    "attn_mask is not used: positions where it is False must get no weight.",
)
define(
    "mask_filled_with_zero",
    "masked scores are set to 0, which still gets weight after the softmax (exp(0) = 1): "
    "fill them with float('-inf').",
)
define(
    "nan_on_fully_masked_rows",
    "a query whose keys are all masked gets NaN (softmax of a row of -inf is 0/0): detect "
    "such rows (~attn_mask.any(dim=-1, keepdim=True)) and give them zero weights.",
)
define(
    "large_negative_fill",
    "masked scores are filled with a large negative number such as -1e9: a fully masked "
    "row then gets uniform weights instead of zeros (and -1e9 overflows float16). Fill "
    "with float('-inf') and zero the fully masked rows.",
)
define(
    "minus_1e9_in_float16",
    "-1e9 does not fit in float16 (its largest magnitude is 65504), so masked_fill raises "
    "on half-precision inputs: fill with float('-inf') (or torch.finfo(scores.dtype).min).",
)


def _sdpa(
    query, key, value, attn_mask=None, *,
    scale="sqrt_dk", fill=float("-inf"), zero_dead=True, softmax_dim=-1,
    invert=False, use_mask=True, scale_weights=False, transpose="last_two",
):
    """Scaled dot-product attention with knobs for the mistakes: (output, weights)."""
    factor = {
        "sqrt_dk": 1.0 / math.sqrt(query.shape[-1]),
        "sqrt_dk_float32": 1.0 / torch.sqrt(torch.tensor(float(query.shape[-1]))),
        "none": 1.0,
        "dk": 1.0 / query.shape[-1],
        "sqrt_dv": 1.0 / math.sqrt(value.shape[-1]),
    }[scale]
    keys_t = key.T if transpose == "T" else key.transpose(-2, -1)
    scores = query @ keys_t  # (..., L, S)
    if not scale_weights:
        scores = scores * factor
    masked = attn_mask is not None and use_mask
    if masked:
        keep = ~attn_mask if invert else attn_mask
        scores = scores.masked_fill(~keep, fill)
    weights = torch.softmax(scores, dim=softmax_dim)
    if scale_weights:
        weights = weights * factor
    if masked and zero_dead:
        dead = ~keep.any(dim=-1, keepdim=True)  # (..., L, 1): nothing to attend to
        weights = weights.masked_fill(dead, 0.0)
    return weights @ value, weights  # (..., L, Ev), (..., L, S)


def _scores(query, key, scale="sqrt_dk"):
    factor = {
        "sqrt_dk": 1.0 / math.sqrt(query.shape[-1]),
        "sqrt_dk_float32": 1.0 / torch.sqrt(torch.tensor(float(query.shape[-1]))),  # 0-d float32
        "none": 1.0,
        "dk": 1.0 / query.shape[-1],
    }[scale]
    return (query @ key.transpose(-2, -1)) * factor


@variant("missing_scale", "scaled_dot_scores")
def _scores_unscaled(query, key):
    return _scores(query, key, scale="none")


@variant("scale_by_d_k", "scaled_dot_scores")
def _scores_by_d_k(query, key):
    return _scores(query, key, scale="dk")


@variant("float32_precision_in_float64", "scaled_dot_scores")
def _scores_float32_scale(query, key):
    return _scores(query, key, scale="sqrt_dk_float32")


@variant("batched_transpose_with_T", "scaled_dot_scores")
def _scores_with_T(query, key):
    return (query @ key.T) / math.sqrt(query.shape[-1])


@variant("dtype_not_kept", "scaled_dot_scores")
def _scores_other_dtype(query, key):
    return _scores(query, key).to(mk.other_float_dtype(query.dtype))


_ATTENTION_VARIANTS = {
    "missing_scale": {"scale": "none"},
    "scale_by_d_k": {"scale": "dk"},
    "scale_by_d_v": {"scale": "sqrt_dv"},
    "scale_after_softmax": {"scale_weights": True},
    "inverted_mask": {"invert": True},
    "mask_ignored": {"use_mask": False},
    "mask_filled_with_zero": {"fill": 0.0, "zero_dead": False},
    "nan_on_fully_masked_rows": {"zero_dead": False},
    "large_negative_fill": {"fill": -1e9, "zero_dead": False},
    "minus_1e9_in_float16": {"fill": -1e9},
    "softmax_over_query_axis": {"softmax_dim": -2},
    "softmax_over_batch": {"softmax_dim": 0},
    "batched_transpose_with_T": {"transpose": "T"},
}


def _attention_variant(knobs: dict):
    def wrong_attention(query, key, value, attn_mask=None):
        return _sdpa(query, key, value, attn_mask, **knobs)

    return wrong_attention


for _mistake, _knobs in _ATTENTION_VARIANTS.items():
    variant(_mistake, "scaled_dot_product_attention")(_attention_variant(_knobs))


@variant("float32_precision_in_float64", "scaled_dot_product_attention")
def _attention_float32_scale(query, key, value, attn_mask=None):
    return _sdpa(query, key, value, attn_mask, scale="sqrt_dk_float32")


@variant("weights_wrong_shape", "scaled_dot_product_attention")
def _attention_weights_transposed(query, key, value, attn_mask=None):
    output, weights = _sdpa(query, key, value, attn_mask)
    return output, weights.transpose(-2, -1)


@variant("dtype_not_kept", "scaled_dot_product_attention")
def _attention_other_dtype(query, key, value, attn_mask=None):
    output, weights = _sdpa(query, key, value, attn_mask)
    other = mk.other_float_dtype(query.dtype)
    return output.to(other), weights.to(other)


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------


def check_scaled_dot_scores(scaled_dot_scores, suite: str = "visible") -> None:
    """Grade ``scaled_dot_scores(query, key) -> scores / sqrt(d_k)``."""
    run_task_check("scaled_dot_scores", scaled_dot_scores, suite)


def check_scaled_dot_product_attention(scaled_dot_product_attention, suite: str = "visible") -> None:
    """Grade ``scaled_dot_product_attention(query, key, value, attn_mask=None)``."""
    run_task_check("scaled_dot_product_attention", scaled_dot_product_attention, suite)
