"""ex01_stable_softmax: a numerically stable softmax and log-sum-exp, from scratch.

Tasks:
    softmax(x, dim=-1) -> weights, same shape as x, summing to 1 along dim
    log_sum_exp(x, dim=-1) -> log(sum(exp(x))) along dim, that dimension removed

Both refuse delegation to torch's softmax family and to the library. The cases include
huge logits (where exp overflows), rows far below the others (where a global maximum
underflows), a dim other than -1, batches and float32.
"""

from __future__ import annotations

import torch

from ... import functional
from .. import cases as mk
from ..core import Case, Task, register_task, run_task_check
from ..mistakes import define, variant
from ..tripwire import LIBRARY_FAMILY, SOFTMAX_FAMILY

CHAPTER = "01_soft_lookup"


def _cases(seed: int, salt: int) -> list[Case]:
    gen = mk.generator(seed, salt=salt)
    return [
        Case("a hand-sized case", (mk.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]),), {"dim": -1}),
        Case("random (4, 5), dim=-1", (mk.randn(gen, 4, 5, scale=3.0),), {"dim": -1}),
        Case("random (4, 5), dim=0", (mk.randn(gen, 4, 5, scale=3.0),), {"dim": 0}),
        Case("batched (2, 3, 4), dim=-1", (mk.randn(gen, 2, 3, 4),), {"dim": -1}),
        Case(
            "huge logits (exp overflows without the max trick)",
            (mk.tensor([[1000.0, 1001.0, 1002.0], [0.0, 1.0, 2.0]]),),
            {"dim": -1},
        ),
        Case(
            "rows far apart (a global maximum underflows)",
            (mk.tensor([[0.0, 1.0, 2.0], [-800.0, -801.0, -799.0]]),),
            {"dim": -1},
        ),
        Case("float32 inputs", (mk.randn(gen, 4, 5, dtype=torch.float32),), {"dim": -1}),
        Case("batch and heads (2, 2, 3, 4), dim=-2", (mk.randn(gen, 2, 2, 3, 4),), {"dim": -2}),
        Case("huge batched logits", (mk.randn(gen, 2, 3, 4, scale=500.0),), {"dim": 1}, visible=False),
        Case(
            "one outlier (shifting by the mean still overflows)",
            (mk.tensor([[0.0, 0.0, 0.0, 1000.0], [3.0, -1.0, 2.0, 0.5]]),),
            {"dim": -1},
            visible=False,
        ),
        Case("a single row (1, 5): the row axis stays", (mk.randn(gen, 1, 5, scale=2.0),), {"dim": -1}, visible=False),
    ]


def reference_softmax(x, dim=-1):
    return functional.masked_softmax(x, None, dim=dim)


def reference_log_sum_exp(x, dim=-1):
    return torch.logsumexp(x, dim=dim)


STABLE_SOFTMAX = register_task(
    Task(
        name="stable_softmax",
        function_name="softmax",
        reference=reference_softmax,
        make_cases=lambda seed: _cases(seed, salt=11),
        result_names=("weights",),
        forbidden=SOFTMAX_FAMILY + LIBRARY_FAMILY,
        chapter=CHAPTER,
    )
)
LOG_SUM_EXP = register_task(
    Task(
        name="log_sum_exp",
        function_name="log_sum_exp",
        reference=reference_log_sum_exp,
        make_cases=lambda seed: _cases(seed, salt=12),
        result_names=("result",),
        forbidden=SOFTMAX_FAMILY + LIBRARY_FAMILY,
        chapter=CHAPTER,
    )
)

# ---------------------------------------------------------------------------------------
# Mistakes
# ---------------------------------------------------------------------------------------

define(
    "no_max_subtraction",
    "exp of a large score overflows to inf (exp(1000) = inf, and inf/inf = nan): subtract "
    "the maximum of each slice along dim (keepdim=True) before exponentiating.",
)
define(
    "global_max_subtraction",
    "the maximum subtracted is the one of the whole tensor, so a row far below it "
    "underflows to 0/0 = nan: take the maximum along dim, x.amax(dim=dim, keepdim=True).",
)
define(
    "max_without_keepdim",
    "the maximum (or sum) along dim lost that dimension, so it broadcasts against the "
    "wrong axis: use keepdim=True, e.g. x.amax(dim=dim, keepdim=True).",
)
define(
    "ignores_dim",
    "the function always works along the last dimension: use the dim argument "
    "everywhere (max, sum) instead of -1.",
)
define(
    "softmax_always_dim0",
    "the function always normalises along dim 0 (the first dimension), whatever dim "
    "says: pass dim on to every max and sum, x.amax(dim=dim, keepdim=True) and "
    "e.sum(dim=dim, keepdim=True), instead of a fixed 0.",
)
define(
    "forgot_exp",
    "the scores are divided by their sum without exponentiating first: softmax is "
    "exp(x - max) / sum(exp(x - max)).",
)
define(
    "lse_forgot_add_max",
    "the maximum subtracted for stability is not added back: "
    "log(sum(exp(x))) = m + log(sum(exp(x - m))).",
)
define(
    "lse_keeps_dim",
    "the result keeps the reduced dimension (size 1): log_sum_exp removes dim, like "
    "x.sum(dim) does; squeeze it or add back the maximum without keepdim.",
)


def _softmax(x, dim, *, shift="row", keepdim=True, use_exp=True):
    """Softmax with knobs for the mistakes; ``shift`` is 'row', 'global' or 'none'."""
    if shift == "row":
        x = x - x.amax(dim=dim, keepdim=keepdim)
    elif shift == "global":
        x = x - x.max()
    e = torch.exp(x) if use_exp else x
    return e / e.sum(dim=dim, keepdim=True)


def _log_sum_exp(x, dim, *, shift="row", keepdim=False, add_back=True):
    if shift == "row":
        m = x.amax(dim=dim, keepdim=True)
    elif shift == "global":
        m = x.max()
    else:
        m = torch.zeros((), dtype=x.dtype)
    total = torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))  # (..., 1, ...)
    if add_back:
        total = total + m
    return total if keepdim else total.squeeze(dim)


@variant("no_max_subtraction", "stable_softmax")
def _softmax_no_max(x, dim=-1):
    return _softmax(x, dim, shift="none")


@variant("global_max_subtraction", "stable_softmax")
def _softmax_global_max(x, dim=-1):
    return _softmax(x, dim, shift="global")


@variant("max_without_keepdim", "stable_softmax")
def _softmax_max_no_keepdim(x, dim=-1):
    return _softmax(x, dim, keepdim=False)


@variant("ignores_dim", "stable_softmax")
def _softmax_last_dim(x, dim=-1):
    return _softmax(x, -1)


@variant("softmax_always_dim0", "stable_softmax")
def _softmax_first_dim(x, dim=-1):
    return _softmax(x, 0)


@variant("forgot_exp", "stable_softmax")
def _softmax_no_exp(x, dim=-1):
    return _softmax(x, dim, shift="none", use_exp=False)


@variant("dtype_not_kept", "stable_softmax")
def _softmax_other_dtype(x, dim=-1):
    return _softmax(x, dim).to(mk.other_float_dtype(x.dtype))


@variant("no_max_subtraction", "log_sum_exp")
def _lse_no_max(x, dim=-1):
    return _log_sum_exp(x, dim, shift="none")


@variant("global_max_subtraction", "log_sum_exp")
def _lse_global_max(x, dim=-1):
    return _log_sum_exp(x, dim, shift="global")


@variant("max_without_keepdim", "log_sum_exp")
def _lse_max_no_keepdim(x, dim=-1):
    m = x.amax(dim=dim)  # the mistake: (...) without the reduced dimension
    return torch.log(torch.exp(x - m).sum(dim=dim)) + m


@variant("ignores_dim", "log_sum_exp")
def _lse_last_dim(x, dim=-1):
    return _log_sum_exp(x, -1)


@variant("lse_forgot_add_max", "log_sum_exp")
def _lse_no_add_back(x, dim=-1):
    return _log_sum_exp(x, dim, add_back=False)


@variant("lse_keeps_dim", "log_sum_exp")
def _lse_keepdim(x, dim=-1):
    return _log_sum_exp(x, dim, keepdim=True)


@variant("dtype_not_kept", "log_sum_exp")
def _lse_other_dtype(x, dim=-1):
    return _log_sum_exp(x, dim).to(mk.other_float_dtype(x.dtype))


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------


def check_stable_softmax(softmax, suite: str = "visible") -> None:
    """Grade ``softmax(x, dim=-1)`` against the library's softmax."""
    run_task_check("stable_softmax", softmax, suite)


def check_log_sum_exp(log_sum_exp, suite: str = "visible") -> None:
    """Grade ``log_sum_exp(x, dim=-1)`` against ``torch.logsumexp``."""
    run_task_check("log_sum_exp", log_sum_exp, suite)
