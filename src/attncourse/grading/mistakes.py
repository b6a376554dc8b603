"""The catalogue of typical mistakes, as data.

Each :class:`Mistake` has a name, a hint for the student, and for every task it applies
to a small wrong implementation (a *variant*) with the task's signature: the right code
with exactly this one mistake. When a check fails, :func:`diagnose` runs every applicable
variant on the same cases as the student's function and names the variant that behaves
like the student's code (same values within tolerance, NaN where the student has NaN, or
the same exception).

Entries are defined with :func:`define` (generic ones below, assignment-specific ones in
``attncourse.grading.assignments.*``) and variants attached with the :func:`variant`
decorator, for the same mistake in as many tasks as it fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .core import TOLERANCE, Case, Outcome, Task, call, same_behaviour, split_result


@dataclass
class Mistake:
    """A typical mistake: ``variants`` maps a task name to the wrong implementation."""

    name: str
    hint: str
    variants: dict[str, Callable] = field(default_factory=dict)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.variants)


CATALOGUE: dict[str, Mistake] = {}


def define(name: str, hint: str) -> Mistake:
    """Add a mistake to the catalogue (names are unique) and return it."""
    if name in CATALOGUE:
        raise ValueError(f"mistake {name!r} is defined twice")
    CATALOGUE[name] = Mistake(name, hint)
    return CATALOGUE[name]


def variant(mistake_name: str, task_name: str) -> Callable[[Callable], Callable]:
    """Decorator: register the function as the wrong variant of ``task_name``."""

    def register(fn: Callable) -> Callable:
        mistake = CATALOGUE[mistake_name]
        if task_name in mistake.variants:
            raise ValueError(f"mistake {mistake_name!r} has two variants for {task_name!r}")
        mistake.variants[task_name] = fn
        return fn

    return register


def applicable(task_name: str) -> list[Mistake]:
    """The catalogued mistakes that have a variant for ``task_name``."""
    return [m for m in CATALOGUE.values() if task_name in m.variants]


def diagnose(task: Task, cases: Sequence[Case], got: Sequence[Outcome], failed_at: int) -> list[Mistake]:
    """The mistakes whose variant behaves most like the student's function.

    A candidate must behave exactly like the student on the case that failed; among
    candidates, those matching the student on the most cases win (ties are all returned).
    When no variant fits, a float64 result that is right only to float32 precision is
    named as the mistake ``float32_precision_in_float64``, whatever the task.
    """
    best: list[Mistake] = []
    best_score = 0
    for mistake in applicable(task.name):
        wrong = mistake.variants[task.name]
        if not same_behaviour(task, call(wrong, cases[failed_at]), got[failed_at]):
            continue
        score = sum(same_behaviour(task, call(wrong, c), g) for c, g in zip(cases, got))
        if score > best_score:
            best, best_score = [mistake], score
        elif score == best_score:
            best.append(mistake)
    if not best and _right_to_float32_precision(task, call(task.reference, cases[failed_at]), got[failed_at]):
        best = [CATALOGUE["float32_precision_in_float64"]]
    return best


def _right_to_float32_precision(task: Task, expected: Outcome, got: Outcome) -> bool:
    """True when ``got`` has float64 tensors that match ``expected`` within float32's
    tolerance, so that only the precision was lost."""
    if expected.error is not None or got.error is not None:
        return False
    try:
        pairs = list(zip(split_result(task, expected.value), split_result(task, got.value)))
    except AssertionError:
        return False
    rtol, atol = TOLERANCE[torch.float32]
    for want, have in pairs:
        if not (isinstance(have, torch.Tensor) and isinstance(want, torch.Tensor)):
            return False
        if have.dtype != torch.float64 or want.dtype != torch.float64 or have.shape != want.shape:
            return False
        if not torch.allclose(have, want, rtol=rtol, atol=atol, equal_nan=True):
            return False
    return True


def hint_lines(mistakes: Sequence[Mistake], small_case_printed: bool = True) -> list[str]:
    """Lines for the failure message: one 'Likely mistake' line per mistake, or a fallback.

    ``small_case_printed`` says whether the failing case was the small one, whose inputs,
    expected and received values were printed.
    """
    if mistakes:
        return [f"Likely mistake [{m.name}]: {m.hint}" for m in mistakes]
    if small_case_printed:
        return [
            "Hint: this does not match any mistake in the catalogue; compare your result "
            "with the expected one on the small case printed above, step by step."
        ]
    return [
        "Hint: this does not match any mistake in the catalogue. Your function passes the "
        "cases before this one, so look at what this case adds (see its shapes and dtype "
        "above: batch dimensions, sizes that differ, masks, float32) and try your function "
        "on inputs like it."
    ]


# ---------------------------------------------------------------------------------------
# Generic mistakes, shared by many tasks; assignments attach their variants.
# ---------------------------------------------------------------------------------------

define(
    "float32_precision_in_float64",
    "your float64 result is right only to float32 precision (a relative error near 1e-7 "
    "where float64 gives 1e-15): part of the computation ran in float32. The usual cause "
    "is a constant made as a tensor, such as torch.sqrt(torch.tensor(d_k)), which is "
    "float32; use math.sqrt(d_k) or d_k ** 0.5, or give the tensor the input's dtype.",
)
define(
    "softmax_over_query_axis",
    "the softmax runs over the queries (dim=-2) instead of the keys: each ROW of the "
    "weights (one query) must sum to 1, so normalise along dim=-1.",
)
define(
    "softmax_over_batch",
    "the softmax runs over the batch dimension (dim=0): with batched inputs the weights "
    "must be normalised along the last dimension (the keys), dim=-1, never dim=0.",
)
define(
    "weights_wrong_shape",
    "the weights come back transposed, (n_k, n_q) instead of (n_q, n_k): rows are "
    "queries and columns are keys. Return the weights before any transpose.",
)
define(
    "dtype_not_kept",
    "the result does not keep the dtype (or device) of the inputs: create new tensors "
    "with dtype=x.dtype, device=x.device and avoid .float()/.double() on the result.",
)
define(
    "weights_are_scores",
    "the 'weights' are the raw scores: apply the softmax to the scores before using them "
    "to average the values.",
)
define(
    "batched_transpose_with_T",
    "key.T reverses ALL the dimensions of a batched tensor, not just the last two; use "
    "key.transpose(-2, -1) (or key.mT) to turn (..., n_k, d_k) into (..., d_k, n_k).",
)
