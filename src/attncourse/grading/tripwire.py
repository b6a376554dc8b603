"""Delegation refusal and kernel protection.

:class:`Tripwire` replaces forbidden functions (``torch.softmax`` in a softmax exercise,
``F.scaled_dot_product_attention`` or anything of ``attncourse`` in an attention exercise)
with recorders, only while the student's function runs inside a check, and puts the
originals back afterwards, also when the student's code raises or is interrupted. The
recorders call the original, so the student's function completes; the check then refuses
the result. Names the student bound directly (``from torch.nn.functional import softmax``)
are found in the function's globals and replaced there too.

:func:`protect_kernel` turns ``os._exit`` and ``os.abort`` called from notebook code into
exceptions, so a stray exit costs the cells that run it, not the whole notebook.

This stops honest mistakes and casual shortcuts, not a determined attacker: see the
instructor appendix for the threat model.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any, Callable, Sequence

# Families of forbidden names, combined per task.
SOFTMAX_FAMILY = (
    "torch.softmax",
    "torch.log_softmax",
    "torch.logsumexp",
    "torch.special.softmax",
    "torch.special.log_softmax",
    "torch.special.logsumexp",
    "torch.nn.functional.softmax",
    "torch.nn.functional.log_softmax",
    "torch.nn.functional.softmin",
    "torch.Tensor.softmax",
    "torch.Tensor.log_softmax",
    "torch.Tensor.logsumexp",
)
ATTENTION_FAMILY = (
    "torch.nn.functional.scaled_dot_product_attention",
    "torch.nn.functional.multi_head_attention_forward",
    "torch.nn.MultiheadAttention",
)
LIBRARY_FAMILY = (
    "attncourse.*",
    "attncourse.functional.*",
    "attncourse.modules.*",
    "attncourse.reference.*",
)
_MISSING = object()

# The aten operators that each family's functions end in, whatever Python name reached
# them (``torch.ops.aten._softmax``, ``torch._C._VariableFunctions.softmax``,
# ``nn.Softmax``...). ``_safe_softmax`` is the softmax inside torch's attention kernels.
SOFTMAX_OPS = frozenset({"_softmax", "_log_softmax", "logsumexp", "_safe_softmax"})
ATTENTION_OPS = frozenset(
    {
        "_scaled_dot_product_attention_math",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable",
        "_fused_sdp_choice",
        "_native_multi_head_attention",
        "_safe_softmax",
    }
)


def aten_ops_for(forbidden: Sequence[str]) -> frozenset[str]:
    """The aten operators that give away a call of a family named in ``forbidden``."""
    ops: set[str] = set()
    if set(forbidden) & set(SOFTMAX_FAMILY):
        ops |= SOFTMAX_OPS
    if set(forbidden) & set(ATTENTION_FAMILY):
        ops |= ATTENTION_OPS
    return frozenset(ops)


def _import_prefix(parts: Sequence[str]) -> tuple[Any, int]:
    """Import the longest module prefix of ``parts``; return it and how many parts it used."""
    for n in range(len(parts), 0, -1):
        try:
            return importlib.import_module(".".join(parts[:n])), n
        except ImportError:
            continue
    raise ValueError(f"no importable module in {'.'.join(parts)!r}")


def resolve(dotted: str) -> list[tuple[Any, str]]:
    """(owner, attribute) pairs named by ``dotted``; ``module.*`` means its public callables."""
    parts = dotted.split(".")
    wildcard = parts[-1] == "*"
    if wildcard:
        parts = parts[:-1]
    owner, used = _import_prefix(parts)
    for name in parts[used:-1] if not wildcard else parts[used:]:
        owner = getattr(owner, name)
    if not wildcard:
        return [(owner, parts[-1])] if hasattr(owner, parts[-1]) else []
    return [(owner, name) for name in _public_callables(owner)]


def _public_callables(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    return [
        n
        for n in names
        if callable(getattr(module, n, None)) and not isinstance(getattr(module, n), ModuleType)
    ]


def _describe(owner: Any, attr: str) -> str:
    prefix = getattr(owner, "__name__", type(owner).__name__)
    if isinstance(owner, type):
        prefix = f"{owner.__module__}.{owner.__qualname__}"
    return f"{prefix}.{attr}"


class Tripwire:
    """Context manager: record calls to forbidden functions made by ``student_fn``.

    ``calls`` lists the dotted names of the forbidden functions that were called.
    """

    def __init__(self, forbidden: Sequence[str], student_fn: Callable | None = None):
        self.forbidden = tuple(forbidden)
        self.student_fn = student_fn
        self.calls: list[str] = []
        self._restore: list[tuple[Any, str, Any]] = []

    def _recorder(self, label: str, original: Callable) -> Callable:
        calls = self.calls

        def recorder(*args, **kwargs):
            calls.append(label)
            return original(*args, **kwargs)

        recorder.__name__ = getattr(original, "__name__", "recorder")
        recorder.__doc__ = getattr(original, "__doc__", None)
        return recorder

    def _patch(self, owner: Any, attr: str, new: Any) -> None:
        saved = owner.__dict__.get(attr, _MISSING) if isinstance(owner, type) else getattr(owner, attr)
        self._restore.append((owner, attr, saved))
        setattr(owner, attr, new)

    def __enter__(self) -> "Tripwire":
        try:
            originals: dict[int, Any] = {}  # id -> forbidden object, to match by identity
            recorders: dict[int, Callable] = {}
            for dotted in self.forbidden:
                for owner, attr in resolve(dotted):
                    original = getattr(owner, attr)
                    if id(original) not in recorders:
                        originals[id(original)] = original
                        recorders[id(original)] = self._recorder(_describe(owner, attr), original)
                    self._patch(owner, attr, recorders[id(original)])
            self._patch_student_globals(originals, recorders)
            self._patch_exits()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _patch_student_globals(self, originals: dict[int, Any], recorders: dict[int, Callable]) -> None:
        """Replace names the student bound directly to a forbidden object."""
        namespace = getattr(self.student_fn, "__globals__", None)
        if not isinstance(namespace, dict):
            return
        for name, value in list(namespace.items()):
            if originals.get(id(value), _MISSING) is value:
                self._restore.append((namespace, name, value))
                namespace[name] = recorders[id(value)]

    def _patch_exits(self) -> None:
        def refuse_exit(*_args, **_kwargs):
            raise SystemExit("the checked function tried to end the Python process")

        for owner, attr in ((os, "_exit"), (os, "abort"), (sys, "exit")):
            self._patch(owner, attr, refuse_exit)

    def __exit__(self, *exc_info) -> None:
        while self._restore:
            owner, attr, saved = self._restore.pop()
            if isinstance(owner, dict):
                owner[attr] = saved
            elif saved is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, saved)


# ---------------------------------------------------------------------------------------
# Kernel protection for graded notebooks
# ---------------------------------------------------------------------------------------

_ORIGINAL_EXITS: dict[str, Callable] = {}


def _called_from_notebook_cell(depth: int = 2) -> bool:
    """True when the caller's code was typed in a notebook cell (IPython's cell files)."""
    frame = sys._getframe(depth)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith("<ipython-input") or "ipykernel_" in filename:
            return True
        frame = frame.f_back
    return False


def protect_kernel() -> None:
    """Make ``os._exit`` and ``os.abort`` raise when notebook code calls them.

    The set-up cell of every graded notebook calls this, so that a submission that calls
    ``os._exit`` loses the cells that run it instead of killing the kernel and with it the
    grading of the whole notebook. Calls from library code (the kernel's own shutdown)
    still reach the real functions. Calling it twice is harmless.
    """
    for name in ("_exit", "abort"):
        if name in _ORIGINAL_EXITS:
            continue
        original = getattr(os, name)
        _ORIGINAL_EXITS[name] = original

        def guarded(*args, _original=original, _name=name, **kwargs):
            if _called_from_notebook_cell():
                raise SystemExit(f"os.{_name} is disabled in graded notebooks")
            return _original(*args, **kwargs)

        setattr(os, name, guarded)
