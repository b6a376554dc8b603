"""ex02_dot_product: dot-product scores and (unscaled) dot-product attention.

Tasks:
    dot_scores(query, key) -> scores (..., n_q, n_k)
    dot_product_attention(query, key, value) -> (output (..., n_q, d_v), weights (..., n_q, n_k))

Cases use n_q != n_k and d_k != d_v, so that transposed or mixed-up axes show.
"""

from __future__ import annotations

import math

import torch

from ... import functional
from .. import cases as mk
from ..core import Case, Task, register_task, run_task_check
from ..mistakes import define, variant
from ..tripwire import ATTENTION_FAMILY, LIBRARY_FAMILY

CHAPTER = "02_dot_product"

# A small hand-sized case: three tokens of size 2 attending to themselves (Q = K = X)
# and carrying values of size 3. (Not the book's walkthrough, whose queries and keys
# differ; the notebook's "try it" cell uses the book's numbers.)
THREE_TOKENS = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
THREE_VALUES = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]


def _scores_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=21)
    x = mk.tensor(THREE_TOKENS)
    return [
        Case("hand-sized: 3 tokens of size 2, Q = K = X", (x, x)),
        Case("random, n_q=4, n_k=5, d_k=3", (mk.randn(gen, 4, 3), mk.randn(gen, 5, 3))),
        Case("batched, B=2", (mk.randn(gen, 2, 4, 3), mk.randn(gen, 2, 5, 3))),
        Case("float32 inputs", (mk.randn(gen, 4, 3, dtype=torch.float32), mk.randn(gen, 5, 3, dtype=torch.float32))),
        Case("batch and heads, (2, 3, ...)", (mk.randn(gen, 2, 3, 4, 6), mk.randn(gen, 2, 3, 5, 6))),
        Case("one query (1, 3): the query axis stays", (mk.randn(gen, 1, 3), mk.randn(gen, 5, 3)), visible=False),
    ]


def _attention_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=22)
    x = mk.tensor(THREE_TOKENS)
    values = mk.tensor(THREE_VALUES)

    def qkv(*batch: int, L: int = 4, S: int = 5, E: int = 3, Ev: int = 2, dtype=torch.float64):
        return (
            mk.randn(gen, *batch, L, E, dtype=dtype),
            mk.randn(gen, *batch, S, E, dtype=dtype),
            mk.randn(gen, *batch, S, Ev, dtype=dtype),
        )

    return [
        Case("hand-sized: 3 tokens of size 2, Q = K = X", (x, x, values)),
        Case("random, n_q=4, n_k=5, d_k=3, d_v=2", qkv()),
        Case("batched, B=2", qkv(2)),
        Case("float32 inputs", qkv(dtype=torch.float32)),
        Case("batch and heads, (2, 3, ...)", qkv(2, 3, L=3, S=6, E=4, Ev=5)),
        Case("one query, one key", qkv(L=1, S=1), visible=False),
        Case(
            "large scores, 900 and 870 (exp overflows without the max trick)",
            (mk.tensor([[30.0], [-30.0]]), mk.tensor([[30.0], [29.0]]), mk.tensor([[1.0, 2.0], [3.0, 4.0]])),
            visible=False,
        ),
    ]


def reference_dot_scores(query, key):
    return functional.dot_scores(query, key)


def reference_dot_product_attention(query, key, value):
    return functional.dot_product_attention(query, key, value, return_weights=True)


DOT_SCORES = register_task(
    Task(
        name="dot_scores",
        function_name="dot_scores",
        reference=reference_dot_scores,
        make_cases=_scores_cases,
        result_names=("scores",),
        forbidden=ATTENTION_FAMILY + LIBRARY_FAMILY,
        chapter=CHAPTER,
    )
)
DOT_PRODUCT_ATTENTION = register_task(
    Task(
        name="dot_product_attention",
        function_name="dot_product_attention",
        reference=reference_dot_product_attention,
        make_cases=_attention_cases,
        result_names=("output", "weights"),
        forbidden=ATTENTION_FAMILY + LIBRARY_FAMILY,
        chapter=CHAPTER,
    )
)

# ---------------------------------------------------------------------------------------
# Mistakes of this assignment, and its variants of the generic ones
# ---------------------------------------------------------------------------------------

define(
    "scores_transposed",
    "the scores come out as (n_k, n_q): key @ query^T puts keys in the rows. Rows are "
    "queries: compute query @ key^T.",
)
define(
    "scaled_when_not_asked",
    "this task is plain dot-product attention, with no scaling: the division by "
    "sqrt(d_k) comes with scaled dot-product attention (chapter 3).",
)


@variant("batched_transpose_with_T", "dot_scores")
def _scores_with_T(query, key):
    return query @ key.T


@variant("scores_transposed", "dot_scores")
def _scores_transposed(query, key):
    return key @ query.transpose(-2, -1)


@variant("dtype_not_kept", "dot_scores")
def _scores_other_dtype(query, key):
    return (query @ key.transpose(-2, -1)).to(mk.other_float_dtype(query.dtype))


def _attention(query, key, value, *, softmax_dim=-1, transpose=None, scale=1.0, use_softmax=True):
    """Dot-product attention with knobs for the mistakes: (output, weights)."""
    keys_t = key.T if transpose == "T" else key.transpose(-2, -1)
    scores = (query @ keys_t) * scale  # (..., L, S)
    weights = torch.softmax(scores, dim=softmax_dim) if use_softmax else scores
    return weights @ value, weights  # (..., L, Ev), (..., L, S)


@variant("softmax_over_query_axis", "dot_product_attention")
def _attention_query_axis(query, key, value):
    return _attention(query, key, value, softmax_dim=-2)


@variant("softmax_over_batch", "dot_product_attention")
def _attention_batch_axis(query, key, value):
    return _attention(query, key, value, softmax_dim=0)


@variant("weights_wrong_shape", "dot_product_attention")
def _attention_weights_transposed(query, key, value):
    output, weights = _attention(query, key, value)
    return output, weights.transpose(-2, -1)


@variant("dtype_not_kept", "dot_product_attention")
def _attention_other_dtype(query, key, value):
    output, weights = _attention(query, key, value)
    other = mk.other_float_dtype(query.dtype)
    return output.to(other), weights.to(other)


@variant("weights_are_scores", "dot_product_attention")
def _attention_without_softmax(query, key, value):
    return _attention(query, key, value, use_softmax=False)


@variant("batched_transpose_with_T", "dot_product_attention")
def _attention_with_T(query, key, value):
    return _attention(query, key, value, transpose="T")


@variant("scaled_when_not_asked", "dot_product_attention")
def _attention_scaled(query, key, value):
    return _attention(query, key, value, scale=1.0 / math.sqrt(query.shape[-1]))


# ---------------------------------------------------------------------------------------
# The checks the notebook's test cells call
# ---------------------------------------------------------------------------------------


def check_dot_scores(dot_scores, suite: str = "visible") -> None:
    """Grade ``dot_scores(query, key) -> scores`` against the library."""
    run_task_check("dot_scores", dot_scores, suite)


def check_dot_product_attention(dot_product_attention, suite: str = "visible") -> None:
    """Grade ``dot_product_attention(query, key, value) -> (output, weights)``."""
    run_task_check("dot_product_attention", dot_product_attention, suite)
