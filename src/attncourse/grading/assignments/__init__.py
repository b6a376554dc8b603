"""One module per assignment: its tasks, cases, mistakes and checks.

Importing this package registers every task in ``core.TASKS`` and every mistake in
``mistakes.CATALOGUE``. Add a new assignment's module to ``ASSIGNMENT_MODULES``.
"""

from __future__ import annotations

import importlib

ASSIGNMENT_MODULES = (
    "ex01_stable_softmax",
    "ex02_dot_product",
    "ex03_scaled_dot_product",
    "ex04_additive_bilinear",
    "ex05_masking",
    "ex06_multi_head",
    "ex07_attention_maps",
    "ex08_efficient_attention",
    "ex09_positions",
)

for _name in ASSIGNMENT_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
