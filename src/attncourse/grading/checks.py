"""The checks that notebook test cells call, one per task.

Each ``check_<task>(student_function, suite="visible")`` runs the student's function and
the library's on the same seeded cases, prints a short line when everything agrees, and
raises ``AssertionError`` naming the failing case and the likely mistake otherwise.
``suite="hidden"`` runs the larger hidden suite (other seeds, more cases).
"""

from __future__ import annotations

from .assignments.ex01_stable_softmax import check_log_sum_exp, check_stable_softmax
from .assignments.ex02_dot_product import check_dot_product_attention, check_dot_scores
from .assignments.ex03_scaled_dot_product import (
    check_scaled_dot_product_attention,
    check_scaled_dot_scores,
)

__all__ = [
    "check_stable_softmax",
    "check_log_sum_exp",
    "check_dot_scores",
    "check_dot_product_attention",
    "check_scaled_dot_scores",
    "check_scaled_dot_product_attention",
]
