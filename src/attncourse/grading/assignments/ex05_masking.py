"""ex05_masking: padding masks, causal masks with both alignments, the masked softmax.

Tasks:
    padding_mask(lengths, n_k) -> bool (B, 1, n_k), True = may attend (a real key)
    causal_mask(n_q, n_k, alignment="top_left") -> bool (n_q, n_k), True = may attend
    masked_softmax(scores, mask) -> weights with the shape and dtype of ``scores``; masked
        entries 0, a row with nothing allowed all zeros (never NaN)

Masks follow the library's convention (True = may attend). The masked-softmax cases all
contain a fully masked row and n_q != n_k; one case is float16, where -1e9 overflows.
"""

from __future__ import annotations

import dataclasses

import torch

from ... import functional, masks
from .. import cases as mk
from ..core import Case, Task, register_task, run_task_check
from ..mistakes import CATALOGUE, define, variant
from ..tripwire import ATTENTION_FAMILY, LIBRARY_FAMILY

CHAPTER = "05_masking"
FORBIDDEN = ATTENTION_FAMILY + LIBRARY_FAMILY + ("attncourse.masks.*",)


def _padding_cases(seed: int) -> list[Case]:
    gen = torch.Generator().manual_seed(1000 * seed + 51)
    random_lengths = torch.randint(0, 8, (5,), generator=gen)
    return [
        Case("hand-sized, lengths [1, 3], n_k=4", (torch.tensor([1, 3]), 4)),
        Case("an empty and a full sequence, lengths [0, 5, 2], n_k=5", (torch.tensor([0, 5, 2]), 5)),
        Case("one sequence, lengths [6], n_k=6", (torch.tensor([6]), 6), visible=False),
        Case(f"random lengths {random_lengths.tolist()}, n_k=7", (random_lengths, 7), visible=False),
    ]


def _causal_cases(seed: int) -> list[Case]:
    del seed  # masks have no random inputs: every suite checks fixed sizes
    cases = [
        Case("n_q=3, n_k=5, top_left", (3, 5), {"alignment": "top_left"}),
        Case("n_q=3, n_k=5, bottom_right", (3, 5), {"alignment": "bottom_right"}),
        Case("n_q=4, n_k=4, bottom_right", (4, 4), {"alignment": "bottom_right"}),
        Case("n_q=5, n_k=3, top_left", (5, 3), {"alignment": "top_left"}),
        Case("n_q=3, n_k=6, default alignment", (3, 6)),
        Case("an unknown alignment, 'middle'", (3, 5), {"alignment": "middle"}, raises=ValueError),
    ]
    hidden = [
        Case("n_q=5, n_k=3, bottom_right (first rows see nothing)", (5, 3), {"alignment": "bottom_right"}),
        Case("n_q=1, n_k=6, bottom_right (one new token, a cache of 5)", (1, 6), {"alignment": "bottom_right"}),
        Case("n_q=6, n_k=1, top_left", (6, 1), {"alignment": "top_left"}),
        Case("n_q=2, n_k=7, default alignment", (2, 7)),
        Case("an unknown alignment, 'bottom'", (4, 6), {"alignment": "bottom"}, raises=ValueError),
        Case("an unknown alignment, 'top_right'", (4, 6), {"alignment": "top_right"}, raises=ValueError),
    ]
    return cases + [dataclasses.replace(c, visible=False) for c in hidden]


def _scores_and_mask(gen, shape, dead_rows, dtype=torch.float64, scale=1.0):
    """Random scores of ``shape`` (..., L, S) and a random boolean mask (True = keep),
    with the query rows in ``dead_rows`` fully masked and every other row keeping at
    least one key."""
    scores = mk.randn(gen, *shape, dtype=dtype, scale=scale)
    keep = torch.rand(*shape, generator=gen) < 0.6
    keep[..., 0] = True  # every row keeps its first key ...
    keep[..., dead_rows, :] = False  # ... except the fully masked ones
    return scores, keep


def _softmax_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=53)
    hand_scores = mk.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, 1.0, 3.0, 2.0], [2.0, -2.0, 1.0, 0.0]])
    hand_mask = torch.tensor(
        [[True, True, False, False], [False, False, False, False], [True, False, True, True]]
    )
    padding_scores = mk.randn(gen, 2, 3, 5)
    padding = masks.padding_mask(torch.tensor([3, 0]), 5, heads=False)  # (2, 1, 5)
    return [
        Case("hand-sized, n_q=3, n_k=4, row 2 fully masked", (hand_scores, hand_mask)),
        Case("batched, B=2, n_q=3, n_k=5", _scores_and_mask(gen, (2, 3, 5), dead_rows=[1])),
        Case("a (B, 1, n_k) padding mask, sequence 2 empty", (padding_scores, padding)),
        Case(
            "float16 scores",
            _scores_and_mask(gen, (4, 6), dead_rows=[2], dtype=torch.float16),
        ),
        Case(
            "float32, large scores (about +-30)",
            _scores_and_mask(gen, (2, 4, 6), dead_rows=[0], dtype=torch.float32, scale=30.0),
            visible=False,
        ),
        Case("batch and heads, (2, 3, 4, 5)", _scores_and_mask(gen, (2, 3, 4, 5), dead_rows=[3]), visible=False),
        Case(
            "nothing masked",
            (mk.randn(gen, 3, 4), torch.ones(3, 4, dtype=torch.bool)),
            visible=False,
        ),
        Case(
            "bfloat16 scores",
            _scores_and_mask(gen, (3, 5), dead_rows=[1], dtype=torch.bfloat16),
            visible=False,
        ),
        Case(
            "allowed scores far below a masked one: -2e4, -3e4 and (masked) 5e4",
            (mk.tensor([[-2e4, -3e4, 5e4], [1.0, 2.0, 3.0]]), torch.tensor([[True, True, False], [True, False, True]])),
            visible=False,
        ),
    ]


def reference_padding_mask(lengths, n_k):
    return masks.padding_mask(lengths, n_k, heads=False)


def reference_causal_mask(n_q, n_k, alignment="top_left"):
    return masks.causal_mask(n_q, n_k, alignment=alignment)


def reference_masked_softmax(scores, mask):
    return functional.masked_softmax(scores, mask)


PADDING_MASK = register_task(
    Task(
        name="padding_mask",
        function_name="padding_mask",
        reference=reference_padding_mask,
        make_cases=_padding_cases,
        result_names=("mask",),
        forbidden=FORBIDDEN,
        chapter=CHAPTER,
    )
)
CAUSAL_MASK = register_task(
    Task(
        name="causal_mask",
        function_name="causal_mask",
        reference=reference_causal_mask,
        make_cases=_causal_cases,
        result_names=("mask",),
        forbidden=FORBIDDEN,
        chapter=CHAPTER,
    )
)
MASKED_SOFTMAX = register_task(
    Task(
        name="masked_softmax",
        function_name="masked_softmax",
        reference=reference_masked_softmax,
        make_cases=_softmax_cases,
        result_names=("weights",),
        forbidden=FORBIDDEN,
        chapter=CHAPTER,
    )
)

# ---------------------------------------------------------------------------------------
# Mistakes of this assignment, and its variants of the generic ones
# ---------------------------------------------------------------------------------------


def define_once(name: str, hint: str):
    """Define a mistake unless another assignment already did (then keep its hint)."""
    return CATALOGUE[name] if name in CATALOGUE else define(name, hint)


define_once(
    "inverted_mask",
    "the mask is inverted: in this course (as in F.scaled_dot_product_attention) True "
    "means 'may attend'. nn.MultiheadAttention uses the opposite (True = ignore); keep the "
    "entries where the mask is True and remove those where it is False.",
)
define_once(
    "mask_filled_with_zero",
    "masked scores were set to 0 (or multiplied by the mask), but a score of 0 still gets "
    "weight exp(0) after the softmax. Fill masked scores with float('-inf') so that their "
    "weight becomes exactly 0.",
)
define_once(
    "large_negative_fill",
    "masked scores were filled with a large negative number such as -1e9: a row with "
    "nothing allowed then gets uniform weights (1/n_k each) instead of zeros, and -1e9 "
    "does not fit in float16. Fill with float('-inf') and set fully masked rows to 0.",
)
define_once(
    "minus_1e9_in_float16",
    "-1e9 does not fit in float16 (its largest magnitude is 65504), so filling float16 "
    "scores with it overflows. Fill with float('-inf'), which every floating dtype has, "
    "and handle fully masked rows separately.",
)
define_once(
    "nan_on_fully_masked_rows",
    "a row where every key is masked comes out as NaN: softmax of a row of -inf divides 0 "
    "by 0. Find those rows (mask.any(dim=-1) is False) and give them zero weights.",
)
define_once(
    "mask_ignored",
    "the mask is not used: entries where it is False must get weight 0.",
)
define_once(
    "causal_off_by_one",
    "the causal mask is off by one: query i may attend to key i itself (the diagonal is "
    "allowed), so compare key <= query, not key < query.",
)
define_once(
    "causal_wrong_alignment",
    "the alignment argument is ignored: with n_q != n_k, 'bottom_right' lines the last "
    "query up with the last key, so query i sees keys 0 .. i + (n_k - n_q); 'top_left' "
    "lets query i see keys 0 .. i.",
)
define_once(
    "causal_alignment_swapped",
    "the two alignments are swapped: 'top_left' (the default, as torch's is_causal=True) "
    "lets query i see keys 0 .. i; 'bottom_right' shifts that by n_k - n_q.",
)
define_once(
    "padding_off_by_one",
    "the padding mask is off by one: a sequence of length n has real keys at positions "
    "0 .. n-1, so keep position j when j < length, not j <= length.",
)
define_once(
    "padding_mask_without_query_axis",
    "the padding mask must have shape (B, 1, n_k), with an axis of size 1 for the queries, "
    "so that it broadcasts against scores (B, n_q, n_k); a (B, n_k) mask broadcasts the "
    "batch against the queries. Use .unsqueeze(-2).",
)


def _padding(lengths, n_k, *, strict=True, query_axis=True):
    lengths = torch.as_tensor(lengths)
    positions = torch.arange(n_k)  # (n_k,)
    if strict:
        keep = positions < lengths.unsqueeze(-1)  # (B, n_k)
    else:
        keep = positions <= lengths.unsqueeze(-1)
    return keep.unsqueeze(-2) if query_axis else keep  # (B, 1, n_k) or (B, n_k)


@variant("inverted_mask", "padding_mask")
def _padding_inverted(lengths, n_k):
    return ~_padding(lengths, n_k)


@variant("padding_off_by_one", "padding_mask")
def _padding_inclusive(lengths, n_k):
    return _padding(lengths, n_k, strict=False)


@variant("padding_mask_without_query_axis", "padding_mask")
def _padding_flat(lengths, n_k):
    return _padding(lengths, n_k, query_axis=False)


def _causal(n_q, n_k, alignment="top_left", *, strict=False, swap=False, ignore_alignment=False):
    if alignment not in ("top_left", "bottom_right"):  # the variants keep the argument check
        raise ValueError(f"alignment must be 'top_left' or 'bottom_right', got {alignment!r}")
    bottom_right = alignment == "bottom_right"
    if swap:
        bottom_right = not bottom_right
    if ignore_alignment:
        bottom_right = False
    offset = n_k - n_q if bottom_right else 0
    query_pos = torch.arange(n_q).unsqueeze(-1)  # (n_q, 1)
    key_pos = torch.arange(n_k).unsqueeze(0)  # (1, n_k)
    if strict:
        return key_pos < query_pos + offset
    return key_pos <= query_pos + offset  # (n_q, n_k)


@variant("inverted_mask", "causal_mask")
def _causal_inverted(n_q, n_k, alignment="top_left"):
    return ~_causal(n_q, n_k, alignment)


@variant("causal_off_by_one", "causal_mask")
def _causal_strict(n_q, n_k, alignment="top_left"):
    return _causal(n_q, n_k, alignment, strict=True)


@variant("causal_wrong_alignment", "causal_mask")
def _causal_always_top_left(n_q, n_k, alignment="top_left"):
    return _causal(n_q, n_k, alignment, ignore_alignment=True)


@variant("causal_alignment_swapped", "causal_mask")
def _causal_swapped(n_q, n_k, alignment="top_left"):
    return _causal(n_q, n_k, alignment, swap=True)


def _softmax(scores, mask, *, fill=float("-inf"), invert=False, zero_dead_rows=True, dim=-1):
    """A masked softmax with knobs for the mistakes."""
    keep = ~mask if invert else mask
    weights = torch.softmax(scores.masked_fill(~keep, fill), dim=dim)
    if zero_dead_rows:
        dead = ~keep.any(dim=-1, keepdim=True)  # (..., L, 1): nothing to attend to
        weights = weights.masked_fill(dead, 0.0)
    return weights


@variant("inverted_mask", "masked_softmax")
def _softmax_inverted(scores, mask):
    return _softmax(scores, mask, invert=True)


@variant("mask_filled_with_zero", "masked_softmax")
def _softmax_zero_fill(scores, mask):
    return _softmax(scores, mask, fill=0.0, zero_dead_rows=False)


@variant("large_negative_fill", "masked_softmax")
def _softmax_minus_1e9(scores, mask):
    return _softmax(scores, mask, fill=-1e9, zero_dead_rows=False)


@variant("minus_1e9_in_float16", "masked_softmax")
def _softmax_minus_1e9_rows_handled(scores, mask):
    return _softmax(scores, mask, fill=-1e9)


@variant("nan_on_fully_masked_rows", "masked_softmax")
def _softmax_nan_rows(scores, mask):
    return _softmax(scores, mask, zero_dead_rows=False)


@variant("mask_ignored", "masked_softmax")
def _softmax_unmasked(scores, mask):
    return torch.softmax(scores, dim=-1)


@variant("softmax_over_query_axis", "masked_softmax")
def _softmax_query_axis(scores, mask):
    return _softmax(scores, mask, dim=-2)


@variant("dtype_not_kept", "masked_softmax")
def _softmax_in_float32(scores, mask):
    return _softmax(scores.to(mk.other_float_dtype(scores.dtype)), mask)


# ---------------------------------------------------------------------------------------
# The checks the notebook's test cells call
# ---------------------------------------------------------------------------------------


def check_padding_mask(padding_mask, suite: str = "visible") -> None:
    """Grade ``padding_mask(lengths, n_k) -> bool (B, 1, n_k)`` against the library."""
    run_task_check("padding_mask", padding_mask, suite)


def check_causal_mask(causal_mask, suite: str = "visible") -> None:
    """Grade ``causal_mask(n_q, n_k, alignment="top_left") -> bool (n_q, n_k)``."""
    run_task_check("causal_mask", causal_mask, suite)


def check_masked_softmax(masked_softmax, suite: str = "visible") -> None:
    """Grade ``masked_softmax(scores, mask) -> weights`` against the library."""
    run_task_check("masked_softmax", masked_softmax, suite)
