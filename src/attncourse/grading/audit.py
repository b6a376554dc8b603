"""Checks of how a student's function computes, not only of what it returns.

Some exercises ask for an algorithm rather than a result. The online softmax must gather
each row's maximum and sum block by block; blockwise attention must never hold the whole
``n_q x n_k`` matrix of scores. A two-pass softmax, or plain attention, returns the same
numbers, so comparing outputs cannot tell them apart.

:class:`OpLog` records every torch call the student's function makes, through a
``TorchFunctionMode``, as light :class:`OpRecord` entries (names and shapes, no tensors).
A task's ``audit`` is a function ``(case, records) -> message or None`` that reads them;
the check applies it only once the outputs are right, so a wrong answer still gets the
hint for its mistake first. Audits skip cases where the method cannot show (a single
block, or sizes that coincide), so that they never fail a correct blockwise solution.
"Coincide" is generous: a block may carry up to two extra columns of running statistics
(``torch.cat([running_max, block], -1)`` is a correct way to update a maximum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.overrides import TorchFunctionMode, resolve_name
from torch.utils._python_dispatch import TorchDispatchMode

# Reductions whose use over a whole row gives the two-pass method away.
_ROW_REDUCTIONS = frozenset({"max", "amax", "sum", "nansum", "logsumexp"})


@dataclass(frozen=True)
class OpRecord:
    """One torch call: its name, argument shapes and result shapes.

    Attributes:
        name: the qualified name, e.g. ``"torch.Tensor.amax"`` or ``"torch.exp"``.
        arg_shapes: for each positional argument, its shape if it is a tensor, else None.
        dim: the ``dim`` argument (second positional or keyword) when it is not a tensor;
            None when absent.
        output_shapes: shapes of the tensors the call returned.
    """

    name: str
    arg_shapes: tuple[tuple[int, ...] | None, ...]
    dim: Any
    output_shapes: tuple[tuple[int, ...], ...]

    def to_plain(self) -> dict:
        """The record as plain data, to cross the sandbox boundary."""
        return {
            "name": self.name,
            "arg_shapes": [None if s is None else list(s) for s in self.arg_shapes],
            "dim": self.dim if _plain_dim(self.dim) else repr(self.dim),
            "output_shapes": [list(s) for s in self.output_shapes],
        }

    @classmethod
    def from_plain(cls, data: Any) -> "OpRecord":
        """Rebuild a record sent by the sandbox; ValueError when it is malformed."""
        if type(data) is not dict:
            raise ValueError("an op record must be a dict")
        name, dim = data.get("name"), data.get("dim")
        if type(name) is not str or not _plain_dim(dim) and type(dim) is not str:
            raise ValueError("malformed op record")
        return cls(
            name=name[:200],
            arg_shapes=tuple(None if s is None else _shape_of(s) for s in _list(data.get("arg_shapes"))),
            dim=tuple(dim) if type(dim) is list else dim,
            output_shapes=tuple(_shape_of(s) for s in _list(data.get("output_shapes"))),
        )

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    def is_reduction(self) -> bool:
        """True for a max/amax/sum/nansum/logsumexp that reduces a tensor of 1 or more dims."""
        if self.short_name not in _ROW_REDUCTIONS or not self.arg_shapes:
            return False
        if not self.arg_shapes[0]:  # not a tensor, or a 0-d tensor
            return False
        return not (len(self.arg_shapes) > 1 and self.arg_shapes[1] is not None)  # not max(a, b)

    def reduces_last_axis(self) -> bool:
        """True for a reduction (see ``is_reduction``) that includes the last axis."""
        if not self.is_reduction():
            return False
        shape = self.arg_shapes[0]
        if self.dim is None:
            return True  # reduces every axis
        dims = self.dim if isinstance(self.dim, (tuple, list)) else (self.dim,)
        last = len(shape) - 1
        return any(isinstance(d, int) and d % len(shape) == last for d in dims)


def _plain_dim(dim: Any) -> bool:
    if dim is None or type(dim) is int:
        return True
    return type(dim) in (tuple, list) and all(type(d) is int for d in dim)


def _list(value: Any) -> list:
    if type(value) is not list or len(value) > 64:
        raise ValueError("malformed op record")
    return value


def _shape_of(value: Any) -> tuple[int, ...]:
    if type(value) is not list or len(value) > 16 or not all(type(s) is int for s in value):
        raise ValueError("malformed shape in an op record")
    return tuple(value)


def _shape(value) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


class OpLog(TorchFunctionMode):
    """Context manager recording the torch calls made inside it, in ``self.records``."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[OpRecord] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        self.records.append(
            OpRecord(
                name=resolve_name(func) or getattr(func, "__name__", repr(func)),
                arg_shapes=tuple(_shape(a) for a in args),
                dim=None if isinstance(dim, torch.Tensor) else dim,
                output_shapes=tuple(tuple(t.shape) for t in _tensors(result)),
            )
        )
        return result


class AtenRecorder(TorchDispatchMode):
    """Context manager recording which of the ``watched`` aten operators ran inside it.

    It sits at torch's dispatcher, below every Python-level name: ``torch.softmax``,
    ``F.softmax``, ``Tensor.softmax``, ``nn.Softmax``, ``torch.ops.aten._softmax`` and
    ``torch._C._VariableFunctions.softmax`` all arrive as ``aten::_softmax``. ``calls``
    lists ``aten::<name>`` once per operator seen.
    """

    def __init__(self, watched: frozenset[str]) -> None:
        super().__init__()
        self.watched = watched
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.watched and f"aten::{name}" not in self.calls:
            self.calls.append(f"aten::{name}")
        return func(*args, **(kwargs or {}))


# ---------------------------------------------------------------------------------------
# Audits of the efficient-attention exercise
# ---------------------------------------------------------------------------------------

# A block may be widened by this many columns of carried statistics (max, sum).
_CARRIED_COLUMNS = 2
_EXPONENTIALS = frozenset({"exp", "exp_"})
# Calls that find or use a maximum: reductions (max, amax), element-wise maxima (maximum,
# fmax, max(a, b)) and the comparisons a running maximum can be written with (where, gt...).
_MAXIMUM_LIKE = frozenset(
    {
        "max", "amax", "maximum", "fmax", "argmax", "where", "gt", "ge", "lt", "le",
        "greater", "greater_equal", "less", "less_equal", "clamp", "clamp_min", "clip",
        "sort", "topk", "kthvalue", "__gt__", "__ge__", "__lt__", "__le__",
    }
)


def _two_passes(records: Sequence[OpRecord]) -> bool:
    """True when nothing finds or uses a maximum after the first exponential: every
    block's maximum was found before any block was exponentiated, which is a pass of its
    own. A one-pass method updates its running maximum after exponentiating the first
    block, whether with a reduction (``block.amax(-1)``), element-wise
    (``torch.maximum(m, column)``) or with a comparison (``torch.where(block > m, ...)``).
    """
    first_exp = next((i for i, r in enumerate(records) if r.short_name in _EXPONENTIALS), None)
    if first_exp is None:
        return False
    return not any(r.short_name in _MAXIMUM_LIKE for r in records[first_exp:])


_TWO_PASSES_MESSAGE = (
    "your function finds the maximum of every block before it exponentiates any, which "
    "is a second pass over the blocks. The online method folds each block in as it reads "
    "it: update the running maximum, rescale what you have, add the block's exponentials, "
    "then go on to the next block."
)


def _near(*sizes: int) -> set[int]:
    """The sizes a correct blockwise solution may give a tensor's axis: each size, plus up
    to ``_CARRIED_COLUMNS`` columns of carried statistics."""
    return {size + extra for size in sizes for extra in range(_CARRIED_COLUMNS + 1)}


def no_full_row_reduction(case, records: Sequence[OpRecord]) -> str | None:
    """The online softmax: no max or sum over a whole row of ``n`` > ``block_size`` columns.

    ``case.args`` is ``(scores, block_size)`` with scores of shape (..., n).
    """
    scores, block_size = case.args[:2]
    n = scores.shape[-1]
    if n in _near(block_size) or block_size >= n:
        return None  # a (widened) block could be as wide as the row: nothing to tell apart
    for record in records:
        if record.reduces_last_axis() and record.arg_shapes[0][-1] == n:
            return (
                f"your function called {record.name} over whole rows of {n} scores (a tensor "
                f"of shape {record.arg_shapes[0]}), with blocks of {block_size}. The online "
                "softmax never takes a maximum or a sum over a whole row: it reduces one "
                "block at a time and keeps a running maximum and a running sum."
            )
    if _two_passes(records):
        return f"with blocks of {block_size} over rows of {n} scores, {_TWO_PASSES_MESSAGE}"
    return None


def no_full_score_matrix(case, records: Sequence[OpRecord]) -> str | None:
    """Blockwise attention: no tensor of shape (..., n_q, n_k) or (..., n_k, n_q) appears.

    ``case.args`` is ``(query, key, value, block_size)`` with query (..., n_q, d_k), key
    (..., n_k, d_k) and value (..., n_k, d_v). Cases are skipped where a legitimate tensor
    could have one of those shapes: n_q = n_k; n_k near the block size, d_k, d_v or 1 (a
    block of scores, a transposed key or value, widened by carried statistics); n_q equal
    to d_k, d_v or d_v + 1 (the key, the value, the value with a column of ones).
    """
    query, key, value, block_size = case.args[:4]
    n_q, d_k = query.shape[-2:]
    n_k, d_v = key.shape[-2], value.shape[-1]
    if (
        n_q == n_k
        or n_k in _near(block_size, d_k, d_v, 1)
        or n_q in {d_k, d_v, d_v + 1}
        or block_size >= n_k
    ):
        return None
    for record in records:
        for shape in record.output_shapes:
            if len(shape) >= 2 and shape[-2:] in ((n_q, n_k), (n_k, n_q)):
                return (
                    f"{record.name} built a tensor of shape {shape}: all {n_q} x {n_k} "
                    f"scores at once, with blocks of {block_size} keys. Blockwise attention "
                    "only ever holds one (n_q, block_size) block of scores: compute the "
                    "scores of one block of keys, fold it into the running maximum, sum and "
                    "output, and move on."
                )
    if _two_passes(records):
        return f"with blocks of {block_size} keys out of {n_k}, {_TWO_PASSES_MESSAGE}"
    return None
