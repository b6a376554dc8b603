"""ex08_efficient_attention: the online softmax, then blockwise attention.

Tasks:
    online_softmax(scores, block_size) -> weights (..., n)
        softmax over the last axis, with the row maximum and the sum of exponentials
        gathered in one pass over blocks of ``block_size`` columns (running max and sum).
    blockwise_attention(query, key, value, block_size) -> output (..., n_q, d_v)
        softmax(Q K^T / sqrt(d_k)) V, walking over blocks of ``block_size`` keys with a
        running maximum, running sum and running (unnormalised) output.

Both tasks are audited for their method (:mod:`attncourse.grading.audit`): no maximum or
sum over a whole row in the online softmax, no full score matrix in blockwise attention.
Cases put the largest score of a row in a later block (so that forgetting a rescaling
shows), use lengths that block sizes do and do not divide, and n_q != n_k, d_k != d_v.
"""

from __future__ import annotations

import math

import torch

from ... import functional
from ...efficient import blockwise_attention as library_blockwise_attention
from .. import cases as mk
from ..audit import no_full_row_reduction, no_full_score_matrix
from ..core import Case, MemoryAudit, Task, register_task, run_task_check
from ..mistakes import define, variant
from ..tripwire import ATTENTION_FAMILY, LIBRARY_FAMILY, SOFTMAX_FAMILY

CHAPTER = "08_efficient_attention"
FORBIDDEN = SOFTMAX_FAMILY + ATTENTION_FAMILY + LIBRARY_FAMILY + ("attncourse.efficient.*",)

# The chapter's hand example: one row, two blocks of two, the maximum in the second block.
HAND_SCORES = [[2.0, 0.0, 3.0, 1.0]]


def _softmax_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=81)
    rising = torch.arange(10, dtype=torch.float64).repeat(3, 1)  # the max keeps rising
    return [
        Case("the chapter's row (2, 0 | 3, 1), blocks of 2", (mk.tensor(HAND_SCORES), 2)),
        Case("random (4, 9), blocks of 3 (divides)", (mk.randn(gen, 4, 9, scale=3.0), 3)),
        Case("random (4, 10), blocks of 4 (does not divide)", (mk.randn(gen, 4, 10, scale=3.0), 4)),
        Case("rising scores (3, 10), blocks of 3", (rising + mk.randn(gen, 3, 10, scale=0.1), 3)),
        Case("batched (2, 3, 7), blocks of 5", (mk.randn(gen, 2, 3, 7), 5)),
        Case("float32 (4, 10), blocks of 4", (mk.randn(gen, 4, 10, dtype=torch.float32), 4)),
        Case("one block as wide as the row", (mk.randn(gen, 3, 6), 6), visible=False),
        Case("blocks of one column", (mk.randn(gen, 2, 5, scale=2.0), 1), visible=False),
        Case("large scores (2, 12), blocks of 5", (mk.randn(gen, 2, 12, scale=300.0), 5), visible=False),
        Case("batch and heads (2, 2, 3, 11), blocks of 4", (mk.randn(gen, 2, 2, 3, 11), 4)),
        Case(
            "every score near -800 (a running maximum started at 0 underflows)",
            (mk.randn(gen, 3, 10) - 800.0, 4),
            visible=False,
        ),
        Case(
            "rows far apart, blocks of 2 (a maximum shared by all rows underflows)",
            (mk.tensor([[0.0, 1.0, 2.0, 3.0, 4.0], [-800.0, -801.0, -799.0, -802.0, -800.0]]), 2),
            visible=False,
        ),
    ]


def _attention_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=82)

    def qkv(*batch: int, L: int = 4, S: int = 10, E: int = 3, Ev: int = 2, dtype=torch.float64):
        return (
            mk.randn(gen, *batch, L, E, dtype=dtype, scale=2.0),
            mk.randn(gen, *batch, S, E, dtype=dtype, scale=2.0),
            mk.randn(gen, *batch, S, Ev, dtype=dtype),
        )

    hand_query = mk.tensor([[2.0]])  # scale 1/sqrt(1) = 1: the scores are 2 * keys
    hand_keys = mk.tensor([[1.0], [0.0], [1.5], [0.5]])  # scores (2, 0 | 3, 1)
    hand_values = mk.tensor([[10.0], [20.0], [30.0], [40.0]])
    return [
        Case("the chapter's row: scores (2, 0 | 3, 1), blocks of 2", (hand_query, hand_keys, hand_values, 2)),
        Case("random, n_q=4, n_k=10, d_k=3, d_v=2, blocks of 4", (*qkv(), 4)),
        Case("random, n_k=9, blocks of 3 (divides)", (*qkv(S=9), 3)),
        Case("batched, B=2, blocks of 3", (*qkv(2), 3)),
        Case("float32, blocks of 4", (*qkv(dtype=torch.float32), 4)),
        Case("batch and heads (2, 3, ...), blocks of 5", (*qkv(2, 3, L=5, S=12, E=4, Ev=3), 5)),
        Case("one block holds every key", (*qkv(S=6), 6), visible=False),
        Case("blocks of one key", (*qkv(S=5), 1), visible=False),
        Case("more queries than keys", (*qkv(L=7, S=4), 3), visible=False),
        Case(
            "scores -800, -1000, -900 (a running maximum started at 0 underflows)",
            (mk.tensor([[-20.0]]), mk.tensor([[40.0], [50.0], [45.0]]), mk.tensor([[1.0], [2.0], [3.0]]), 2),
            visible=False,
        ),
    ]


def reference_online_softmax(scores, block_size):
    return functional.masked_softmax(scores, dim=-1)


def reference_blockwise_attention(query, key, value, block_size):
    return library_blockwise_attention(query, key, value, block_size=(query.shape[-2], block_size))


ONLINE_SOFTMAX = register_task(
    Task(
        name="online_softmax",
        function_name="online_softmax",
        reference=reference_online_softmax,
        make_cases=_softmax_cases,
        result_names=("weights",),
        forbidden=FORBIDDEN,
        chapter=CHAPTER,
        audit=no_full_row_reduction,
    )
)
# The memory audit: a case large enough that the whole score matrix (128 MiB in float64)
# dwarfs what blockwise attention holds (a few blocks of 4096 x 64 scores, 2 MiB each).
MEMORY_CASE_SIZE, MEMORY_CASE_DIM, MEMORY_CASE_BLOCK = 4096, 16, 64


def _memory_case(seed: int) -> Case:
    gen = mk.generator(seed, salt=83)
    n, d = MEMORY_CASE_SIZE, MEMORY_CASE_DIM
    return Case(
        f"large: {n} queries and {n} keys, d_k = d_v = {d}, blocks of {MEMORY_CASE_BLOCK} keys",
        (mk.randn(gen, n, d), mk.randn(gen, n, d), mk.randn(gen, n, d), MEMORY_CASE_BLOCK),
    )


def _score_matrix_bytes(case: Case) -> int:
    query, key = case.args[:2]
    return query.shape[-2] * key.shape[-2] * query.element_size()


def _memory_limit(case: Case) -> int:
    """Half the score matrix: a blockwise method stays far below, a full one far above."""
    return _score_matrix_bytes(case) // 2


def _memory_message(case: Case, growth: int) -> str:
    query, key, _value, block = case.args
    full, one_block = _score_matrix_bytes(case), query.shape[-2] * block * query.element_size()
    return (
        f"while your function ran, the memory of the notebook's process grew by "
        f"{growth / 2**20:.0f} MiB (measured by the operating system, from outside). All "
        f"{query.shape[-2]} x {key.shape[-2]} scores take {full / 2**20:.0f} MiB in float64, "
        f"one block of {block} keys {one_block / 2**20:.0f} MiB: your function holds the "
        "whole score matrix at once, in torch or another way (NumPy, Python lists). "
        "Blockwise attention keeps one block of scores at a time."
    )


BLOCKWISE_MEMORY = MemoryAudit(make_case=_memory_case, limit=_memory_limit, message=_memory_message)

BLOCKWISE_ATTENTION = register_task(
    Task(
        name="blockwise_attention",
        function_name="blockwise_attention",
        reference=reference_blockwise_attention,
        make_cases=_attention_cases,
        result_names=("output",),
        forbidden=FORBIDDEN,
        chapter=CHAPTER,
        audit=no_full_score_matrix,
        memory_audit=BLOCKWISE_MEMORY,
    )
)

# ---------------------------------------------------------------------------------------
# Mistakes of this assignment
# ---------------------------------------------------------------------------------------

define(
    "running_sum_not_rescaled",
    "the running sum is not rescaled when the maximum rises: before adding a block, "
    "multiply the old sum by exp(m_old - m_new), because it was taken against the old "
    "maximum (l' = l * exp(m - m') + sum exp(s - m')).",
)
define(
    "output_rescaled_with_wrong_factor",
    "the running output is rescaled with the wrong factor: when the maximum rises from m "
    "to m', multiply the old output by exp(m - m') (at most 1), not by exp(m' - m).",
)
define(
    "last_block_skipped",
    "the last block is never read: with range(0, n - block_size, block_size) the loop "
    "stops one block early. Use range(0, n, block_size) and let the last slice be short.",
)
define(
    "blocks_overlap_by_one",
    "neighbouring blocks share a column: the slice start:start + block_size + 1 reads one "
    "column too many, which is then counted twice. A block is start:start + block_size.",
)


def _block_starts(n: int, block_size: int, mistake: str | None) -> range:
    stop = n - block_size if mistake == "last_block_skipped" else n
    return range(0, stop, block_size)


def _block_stop(start: int, block_size: int, mistake: str | None) -> int:
    """Where the block starting at ``start`` ends (one too far with the overlap mistake)."""
    return start + block_size + (1 if mistake == "blocks_overlap_by_one" else 0)


def _online_softmax(scores, block_size, mistake=None):
    """Online softmax with one optional mistake: (..., n) -> (..., n)."""
    running_max = torch.full_like(scores[..., :1], float("-inf"))  # (..., 1)
    running_sum = torch.zeros_like(scores[..., :1])  # (..., 1)
    for start in _block_starts(scores.shape[-1], block_size, mistake):
        block = scores[..., start : _block_stop(start, block_size, mistake)]  # (..., b)
        new_max = torch.maximum(running_max, block.amax(dim=-1, keepdim=True))
        correction = 1.0 if mistake == "running_sum_not_rescaled" else torch.exp(running_max - new_max)
        running_sum = running_sum * correction + torch.exp(block - new_max).sum(dim=-1, keepdim=True)
        running_max = new_max
    return torch.exp(scores - running_max) / running_sum


def _blockwise_attention(query, key, value, block_size, mistake=None):
    """Blockwise attention over key blocks with one optional mistake: (..., L, Ev)."""
    scaled_query = query / math.sqrt(query.shape[-1])  # (..., L, E)
    shape = (*scaled_query.shape[:-1], 1)
    running_max = torch.full(shape, float("-inf"), dtype=query.dtype)  # (..., L, 1)
    running_sum = torch.zeros(shape, dtype=query.dtype)  # (..., L, 1)
    acc = torch.zeros((*shape[:-1], value.shape[-1]), dtype=query.dtype)  # (..., L, Ev)
    for start in _block_starts(key.shape[-2], block_size, mistake):
        stop = _block_stop(start, block_size, mistake)
        k_block, v_block = key[..., start:stop, :], value[..., start:stop, :]  # (..., b, E), (..., b, Ev)
        scores = scaled_query @ k_block.transpose(-2, -1)  # (..., L, b)
        new_max = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True))
        correction = torch.exp(running_max - new_max)
        sum_correction = 1.0 if mistake == "running_sum_not_rescaled" else correction
        if mistake == "output_rescaled_with_wrong_factor":
            output_correction = torch.exp(new_max - running_max).nan_to_num(posinf=0.0)
        else:
            output_correction = correction
        weights = torch.exp(scores - new_max)  # (..., L, b)
        running_sum = running_sum * sum_correction + weights.sum(dim=-1, keepdim=True)
        acc = acc * output_correction + weights @ v_block  # (..., L, Ev)
        running_max = new_max
    return acc / running_sum


for _mistake in (
    "running_sum_not_rescaled",
    "last_block_skipped",
    "blocks_overlap_by_one",
):
    variant(_mistake, "online_softmax")(
        (lambda m: lambda scores, block_size: _online_softmax(scores, block_size, m))(_mistake)
    )

for _mistake in (
    "running_sum_not_rescaled",
    "output_rescaled_with_wrong_factor",
    "last_block_skipped",
    "blocks_overlap_by_one",
):
    variant(_mistake, "blockwise_attention")(
        (lambda m: lambda q, k, v, block_size: _blockwise_attention(q, k, v, block_size, m))(
            _mistake
        )
    )


@variant("missing_scale", "blockwise_attention")
def _blockwise_unscaled(query, key, value, block_size):
    return _blockwise_attention(query * math.sqrt(query.shape[-1]), key, value, block_size)


@variant("dtype_not_kept", "blockwise_attention")
def _blockwise_other_dtype(query, key, value, block_size):
    output = _blockwise_attention(query, key, value, block_size)
    return output.to(mk.other_float_dtype(query.dtype))


@variant("dtype_not_kept", "online_softmax")
def _online_softmax_other_dtype(scores, block_size):
    return _online_softmax(scores, block_size).to(mk.other_float_dtype(scores.dtype))


# ---------------------------------------------------------------------------------------
# The checks the notebook's test cells call
# ---------------------------------------------------------------------------------------


def check_online_softmax(online_softmax, suite: str = "visible") -> None:
    """Grade ``online_softmax(scores, block_size) -> weights`` against the library."""
    run_task_check("online_softmax", online_softmax, suite)


def check_blockwise_attention(blockwise_attention, suite: str = "visible") -> None:
    """Grade ``blockwise_attention(query, key, value, block_size) -> output``."""
    run_task_check("blockwise_attention", blockwise_attention, suite)
