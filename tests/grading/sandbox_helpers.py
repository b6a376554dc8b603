"""Helpers of the engine's tests: notebooks built from Python functions, graded by the
sandboxed engine, and the verdict of each trusted test cell read back."""

from __future__ import annotations

import inspect
import textwrap
import types

import nbformat

from attncourse.grading.engine import GradingReport, NotebookGrader

PREAMBLE = """\
import contextlib
import math

import matplotlib
import torch
import torch.nn.functional as F
from torch import nn

matplotlib.use("Agg")
import matplotlib.pyplot as plt
"""


def _names_used(obj) -> set[str]:
    """Global names read by a function's or a class's code (nested code included)."""
    codes = []
    if isinstance(obj, type):
        codes = [v.__code__ for v in vars(obj).values() if isinstance(v, types.FunctionType)]
    elif isinstance(obj, types.FunctionType):
        codes = [obj.__code__]
    names: set[str] = set()
    while codes:
        code = codes.pop()
        names |= set(code.co_names)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return names


def source_with_helpers(obj, skip_decorators: tuple[str, ...]) -> list[str]:
    """The sources of ``obj`` and of the module-level functions and classes of its module
    that it uses (helpers first), with the registering decorators removed."""
    module = inspect.getmodule(obj)
    order: list[str] = []
    seen: set[str] = set()

    def visit(item) -> None:
        for name in sorted(_names_used(item)):
            helper = getattr(module, name, None)
            if name in seen or not isinstance(helper, (types.FunctionType, type)):
                continue
            if getattr(helper, "__module__", None) != module.__name__:
                continue
            seen.add(name)
            visit(helper)
            order.append(_clean(helper, skip_decorators))

    visit(obj)
    order.append(_clean(obj, skip_decorators))
    return order


def _clean(obj, skip_decorators: tuple[str, ...]) -> str:
    lines = textwrap.dedent(inspect.getsource(obj)).splitlines()
    kept = [line for line in lines if not line.lstrip().startswith(tuple(f"@{d}" for d in skip_decorators))]
    return "\n".join(kept)


# What the assignment modules' variants use besides their own helpers.
VARIANT_PREAMBLE = """\
import math
import types

import torch
import torch.nn.functional as F
from torch import nn

"""


def variant_source(variant) -> str:
    """A catalogued variant (a plain function) as notebook code: its helpers, its own
    code, and the one helper of the cases module that variants use, ``mk``."""
    from attncourse.grading import cases

    module = inspect.getmodule(variant)
    plain = isinstance(variant, types.FunctionType) and not getattr(variant, "takes_case_arguments", False)
    if not plain or getattr(module, variant.__name__, None) is not variant:
        raise TypeError(f"variant {variant!r} is not a plain function; edit a reference answer instead")
    mk = textwrap.dedent(inspect.getsource(cases.other_float_dtype))
    parts = [VARIANT_PREAMBLE + mk + "\n\nmk = types.SimpleNamespace(other_float_dtype=other_float_dtype)"]
    parts += source_with_helpers(variant, ("variant",))
    return "\n\n\n".join(parts)


def notebook_of(cells: list[str], checks: dict[str, str]) -> tuple[nbformat.NotebookNode, dict[str, str]]:
    """A notebook with the given code cells, then one trusted test cell per entry of
    ``checks`` (grade id -> source); returns it and its trusted sources."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    for gid, source in checks.items():
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["nbgrader"] = {"grade": True, "grade_id": gid, "locked": True, "points": 1, "solution": False}
        nb.cells.append(cell)
    return nb, dict(checks)


def check_source(task: str, function_name: str, suite: str) -> str:
    return (
        "from attncourse.grading.core import run_task_check\n"
        f"run_task_check({task!r}, {function_name}, {suite!r})"
    )


def grade(nb: nbformat.NotebookNode, trusted: dict[str, str], **options) -> tuple[dict[str, tuple[bool, str]], GradingReport]:
    """grade id -> (passed, text of its outputs) for every trusted test cell."""
    report = NotebookGrader(nb, trusted, **options).grade()
    verdicts = {}
    for cell in nb.cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in trusted:
            failed = any(o.output_type == "error" or o.get("name") == "stderr" for o in cell.outputs)
            text = "\n".join(str(o.get("text") or o.get("evalue") or "") for o in cell.outputs)
            verdicts[gid] = (not failed, text)
    return verdicts, report
