"""ex04_additive_bilinear: additive (Bahdanau) and bilinear (Luong "general") scores.

Tasks:
    additive_scores(query, key, W_q, W_k, w_v) -> scores (..., n_q, n_k)
        entry (i, j) = w_v^T tanh(W_q q_i + W_k k_j), weights laid out like nn.Linear:
        W_q (d_h, d_q), W_k (d_h, d_k), w_v (d_h,)
    bilinear_scores(query, key, W) -> scores (..., n_q, n_k), entry (i, j) = q_i^T W k_j,
        W (d_q, d_k)
    additive_attention(query, key, value, W_q, W_k, w_v) -> (output (..., n_q, d_v),
        weights (..., n_q, n_k))

The hand-sized cases use square, non-symmetric weights (d_h = d_q = d_k), so that the
code with ``x @ W`` in place of ``x @ W.T`` runs and shows its wrong numbers instead of
failing on a shape; later cases use d_h != d_q != d_k, n_q != n_k and d_k != d_v.
"""

from __future__ import annotations

import torch

from ... import functional
from .. import cases as mk
from ..core import Case, Task, register_task, run_task_check
from ..mistakes import CATALOGUE, define, variant
from ..tripwire import ATTENTION_FAMILY, LIBRARY_FAMILY

CHAPTER = "04_additive_bilinear"
FORBIDDEN = ATTENTION_FAMILY + LIBRARY_FAMILY

# Hand-sized example: two queries and three keys in 2-d, hidden size 2.
SMALL_QUERIES = [[1.0, 0.0], [0.5, -1.0]]
SMALL_KEYS = [[0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]]
SMALL_VALUES = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]
SMALL_W_Q = [[1.0, 2.0], [0.0, -1.0]]  # (d_h, d_q), not symmetric
SMALL_W_K = [[0.5, 0.0], [1.0, 1.5]]  # (d_h, d_k), not symmetric
SMALL_W_V = [1.0, -2.0]  # (d_h,)
SMALL_W = [[1.0, -1.0], [2.0, 0.5]]  # bilinear (d_q, d_k), not symmetric


def _additive_weights(gen, d_h: int, d_q: int, d_k: int, dtype=torch.float64):
    """W_q (d_h, d_q), W_k (d_h, d_k), w_v (d_h,), scaled so that tanh is not saturated."""
    return (
        mk.randn(gen, d_h, d_q, dtype=dtype, scale=0.7),
        mk.randn(gen, d_h, d_k, dtype=dtype, scale=0.7),
        mk.randn(gen, d_h, dtype=dtype),
    )


def _additive_scores_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=41)
    small = (mk.tensor(SMALL_QUERIES), mk.tensor(SMALL_KEYS))
    small_weights = (mk.tensor(SMALL_W_Q), mk.tensor(SMALL_W_K), mk.tensor(SMALL_W_V))
    return [
        Case("hand-sized, n_q=2, n_k=3, d_h=d_q=d_k=2", small + small_weights),
        Case(
            "random, n_q=4, n_k=5, d_h=d_q=d_k=3",
            (mk.randn(gen, 4, 3), mk.randn(gen, 5, 3)) + _additive_weights(gen, 3, 3, 3),
        ),
        Case(
            "batched, B=2, d_q=3, d_k=4, d_h=5",
            (mk.randn(gen, 2, 4, 3), mk.randn(gen, 2, 6, 4)) + _additive_weights(gen, 5, 3, 4),
        ),
        Case(
            "float32 inputs",
            (mk.randn(gen, 3, 4, dtype=torch.float32), mk.randn(gen, 5, 2, dtype=torch.float32))
            + _additive_weights(gen, 6, 4, 2, dtype=torch.float32),
        ),
        Case(
            "batch and heads, (2, 3, ...)",
            (mk.randn(gen, 2, 3, 4, 5), mk.randn(gen, 2, 3, 7, 3)) + _additive_weights(gen, 8, 5, 3),
        ),
        Case(
            "one query, one key",
            (mk.randn(gen, 1, 3), mk.randn(gen, 1, 2)) + _additive_weights(gen, 4, 3, 2),
            visible=False,
        ),
    ]


def _bilinear_scores_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=42)
    return [
        Case(
            "hand-sized, n_q=2, n_k=3, d_q=d_k=2",
            (mk.tensor(SMALL_QUERIES), mk.tensor(SMALL_KEYS), mk.tensor(SMALL_W)),
        ),
        Case(
            "random, n_q=4, n_k=5, d_q=d_k=3",
            (mk.randn(gen, 4, 3), mk.randn(gen, 5, 3), mk.randn(gen, 3, 3)),
        ),
        Case(
            "batched, B=2, d_q=3, d_k=4",
            (mk.randn(gen, 2, 4, 3), mk.randn(gen, 2, 6, 4), mk.randn(gen, 3, 4)),
        ),
        Case(
            "float32 inputs",
            tuple(mk.randn(gen, *shape, dtype=torch.float32) for shape in ((3, 4), (5, 2), (4, 2))),
        ),
        Case(
            "batch and heads, (2, 3, ...)",
            (mk.randn(gen, 2, 3, 4, 5), mk.randn(gen, 2, 3, 7, 3), mk.randn(gen, 5, 3)),
        ),
        Case(
            "one query (1, 3): the query axis stays",
            (mk.randn(gen, 1, 3), mk.randn(gen, 4, 2), mk.randn(gen, 3, 2)),
            visible=False,
        ),
    ]


def _additive_attention_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=43)
    small_weights = (mk.tensor(SMALL_W_Q), mk.tensor(SMALL_W_K), mk.tensor(SMALL_W_V))

    def qkv(*batch: int, L: int, S: int, d_q: int, d_k: int, d_v: int, dtype=torch.float64):
        return (
            mk.randn(gen, *batch, L, d_q, dtype=dtype),
            mk.randn(gen, *batch, S, d_k, dtype=dtype),
            mk.randn(gen, *batch, S, d_v, dtype=dtype),
        )

    return [
        Case(
            "hand-sized, n_q=2, n_k=3, d_v=3",
            (mk.tensor(SMALL_QUERIES), mk.tensor(SMALL_KEYS), mk.tensor(SMALL_VALUES)) + small_weights,
        ),
        Case(
            "random, n_q=4, n_k=5, d_h=d_q=d_k=3, d_v=2",
            qkv(L=4, S=5, d_q=3, d_k=3, d_v=2) + _additive_weights(gen, 3, 3, 3),
        ),
        Case(
            "batched, B=2, d_q=3, d_k=4, d_h=5, d_v=2",
            qkv(2, L=4, S=6, d_q=3, d_k=4, d_v=2) + _additive_weights(gen, 5, 3, 4),
        ),
        Case(
            "float32 inputs",
            qkv(L=3, S=5, d_q=4, d_k=2, d_v=3, dtype=torch.float32)
            + _additive_weights(gen, 6, 4, 2, dtype=torch.float32),
        ),
        Case(
            "batch and heads, (2, 3, ...)",
            qkv(2, 3, L=4, S=7, d_q=5, d_k=3, d_v=6) + _additive_weights(gen, 8, 5, 3),
        ),
        Case(
            "large hidden size, d_h=64",
            qkv(2, L=5, S=3, d_q=4, d_k=4, d_v=2) + _additive_weights(gen, 64, 4, 4),
            visible=False,
        ),
        Case(
            "one query: the query axis stays",
            qkv(L=1, S=4, d_q=3, d_k=2, d_v=2) + _additive_weights(gen, 3, 3, 2),
            visible=False,
        ),
    ]


def reference_additive_scores(query, key, W_q, W_k, w_v):
    return functional.additive_scores(query, key, W_q, W_k, w_v)


def reference_bilinear_scores(query, key, W):
    return functional.general_scores(query, key, W)


def reference_additive_attention(query, key, value, W_q, W_k, w_v):
    return functional.additive_attention(query, key, value, W_q, W_k, w_v, return_weights=True)


ADDITIVE_SCORES = register_task(
    Task(
        name="additive_scores",
        function_name="additive_scores",
        reference=reference_additive_scores,
        make_cases=_additive_scores_cases,
        result_names=("scores",),
        forbidden=FORBIDDEN,
        chapter=CHAPTER,
    )
)
BILINEAR_SCORES = register_task(
    Task(
        name="bilinear_scores",
        function_name="bilinear_scores",
        reference=reference_bilinear_scores,
        make_cases=_bilinear_scores_cases,
        result_names=("scores",),
        forbidden=FORBIDDEN,
        chapter=CHAPTER,
    )
)
ADDITIVE_ATTENTION = register_task(
    Task(
        name="additive_attention",
        function_name="additive_attention",
        reference=reference_additive_attention,
        make_cases=_additive_attention_cases,
        result_names=("output", "weights"),
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
    "additive_without_tanh",
    "the additive score needs the tanh between the sum and w_v: w_v^T tanh(W_q q_i + "
    "W_k k_j). Without it the score is linear and splits into a query part plus a key "
    "part, so every query ranks the keys the same way.",
)
define_once(
    "x_at_W_instead_of_W_T",
    "the weights follow nn.Linear, shape (out_features, in_features): W x is computed as "
    "x @ W.T, not x @ W (which only runs by chance when W is square, and gives the wrong "
    "numbers).",
)
define_once(
    "bilinear_W_transposed",
    "the bilinear score is q_i^T W k_j = query @ W @ key^T, with W of shape (d_q, d_k); "
    "query @ W.T @ key^T uses the transpose of W.",
)


def _additive(query, key, W_q, W_k, w_v, *, squash=torch.tanh, transpose_weights=True):
    """Additive scores with knobs for the mistakes: (..., L, S)."""
    if transpose_weights:
        projected_q, projected_k = query @ W_q.T, key @ W_k.T  # (..., L, H), (..., S, H)
    else:
        projected_q, projected_k = query @ W_q, key @ W_k
    hidden = squash(projected_q.unsqueeze(-2) + projected_k.unsqueeze(-3))  # (..., L, S, H)
    return hidden @ w_v  # (..., L, S)


def _identity(x):
    return x


@variant("additive_without_tanh", "additive_scores")
def _additive_no_tanh(query, key, W_q, W_k, w_v):
    return _additive(query, key, W_q, W_k, w_v, squash=_identity)


@variant("x_at_W_instead_of_W_T", "additive_scores")
def _additive_untransposed(query, key, W_q, W_k, w_v):
    return _additive(query, key, W_q, W_k, w_v, transpose_weights=False)


@variant("dtype_not_kept", "additive_scores")
def _additive_other_dtype(query, key, W_q, W_k, w_v):
    return _additive(query, key, W_q, W_k, w_v).to(mk.other_float_dtype(query.dtype))


@variant("bilinear_W_transposed", "bilinear_scores")
def _bilinear_W_transposed(query, key, W):
    return query @ W.T @ key.transpose(-2, -1)


@variant("scores_transposed", "bilinear_scores")
def _bilinear_keys_in_rows(query, key, W):
    return key @ W.T @ query.transpose(-2, -1)  # (..., S, L)


@variant("batched_transpose_with_T", "bilinear_scores")
def _bilinear_with_T(query, key, W):
    return query @ W @ key.T


@variant("dtype_not_kept", "bilinear_scores")
def _bilinear_other_dtype(query, key, W):
    return (query @ W @ key.transpose(-2, -1)).to(mk.other_float_dtype(query.dtype))


def _additive_attention(query, key, value, W_q, W_k, w_v, *, softmax_dim=-1, **score_knobs):
    """Additive attention with knobs for the mistakes: (output, weights)."""
    scores = _additive(query, key, W_q, W_k, w_v, **score_knobs)  # (..., L, S)
    weights = torch.softmax(scores, dim=softmax_dim) if softmax_dim is not None else scores
    return weights @ value, weights  # (..., L, Ev), (..., L, S)


@variant("additive_without_tanh", "additive_attention")
def _attention_no_tanh(query, key, value, W_q, W_k, w_v):
    return _additive_attention(query, key, value, W_q, W_k, w_v, squash=_identity)


@variant("x_at_W_instead_of_W_T", "additive_attention")
def _attention_untransposed(query, key, value, W_q, W_k, w_v):
    return _additive_attention(query, key, value, W_q, W_k, w_v, transpose_weights=False)


@variant("softmax_over_query_axis", "additive_attention")
def _attention_query_axis(query, key, value, W_q, W_k, w_v):
    return _additive_attention(query, key, value, W_q, W_k, w_v, softmax_dim=-2)


@variant("softmax_over_batch", "additive_attention")
def _attention_batch_axis(query, key, value, W_q, W_k, w_v):
    return _additive_attention(query, key, value, W_q, W_k, w_v, softmax_dim=0)


@variant("weights_are_scores", "additive_attention")
def _attention_without_softmax(query, key, value, W_q, W_k, w_v):
    return _additive_attention(query, key, value, W_q, W_k, w_v, softmax_dim=None)


@variant("weights_wrong_shape", "additive_attention")
def _attention_weights_transposed(query, key, value, W_q, W_k, w_v):
    output, weights = _additive_attention(query, key, value, W_q, W_k, w_v)
    return output, weights.transpose(-2, -1)


@variant("dtype_not_kept", "additive_attention")
def _attention_other_dtype(query, key, value, W_q, W_k, w_v):
    other = mk.other_float_dtype(query.dtype)
    output, weights = _additive_attention(query, key, value, W_q, W_k, w_v)
    return output.to(other), weights.to(other)


# ---------------------------------------------------------------------------------------
# The checks the notebook's test cells call
# ---------------------------------------------------------------------------------------


def check_additive_scores(additive_scores, suite: str = "visible") -> None:
    """Grade ``additive_scores(query, key, W_q, W_k, w_v) -> scores`` against the library."""
    run_task_check("additive_scores", additive_scores, suite)


def check_bilinear_scores(bilinear_scores, suite: str = "visible") -> None:
    """Grade ``bilinear_scores(query, key, W) -> scores`` against the library."""
    run_task_check("bilinear_scores", bilinear_scores, suite)


def check_additive_attention(additive_attention, suite: str = "visible") -> None:
    """Grade ``additive_attention(query, key, value, W_q, W_k, w_v) -> (output, weights)``."""
    run_task_check("additive_attention", additive_attention, suite)
