"""The method audits: right numbers by the wrong method score 0, right methods in any
style pass, and the recording never outlives the check."""

from __future__ import annotations

import math

import pytest
import torch

from attncourse.grading.audit import OpLog
from attncourse.grading.core import run_task_check

pytestmark = pytest.mark.timeout(120)

METHOD = "not the method the exercise asks for, 0 points"


def _message(task: str, fn, suite: str) -> str:
    with pytest.raises(AssertionError) as info:
        run_task_check(task, fn, suite)
    return str(info.value)


# ---------------------------------------------------------------------------------------
# The recorder
# ---------------------------------------------------------------------------------------


def _records(fn):
    with OpLog() as log:
        fn()
    return log.records


@pytest.mark.parametrize(
    "expression, reduces",
    [
        (lambda x: x.amax(dim=-1, keepdim=True), True),
        (lambda x: x.max(-1), True),
        (lambda x: torch.max(x, dim=1), True),
        (lambda x: x.sum(), True),
        (lambda x: x.sum((0, 1)), True),
        (lambda x: torch.logsumexp(x, -1), True),
        (lambda x: x.max(dim=0), False),
        (lambda x: x.sum(0), False),
        (lambda x: torch.max(x, x), False),
        (lambda x: torch.maximum(x, x), False),
        (lambda x: torch.exp(x), False),
    ],
)
def test_reductions_over_the_last_axis_are_recognised(expression, reduces):
    x = torch.randn(3, 5)
    records = _records(lambda: expression(x))
    assert any(r.reduces_last_axis() for r in records) == reduces, records


def test_records_hold_names_and_shapes():
    x, y = torch.randn(3, 5), torch.randn(5, 3)
    (record,) = _records(lambda: torch.matmul(x, y))
    assert record.name == "torch.matmul"
    assert record.arg_shapes == ((3, 5), (5, 3))
    assert record.output_shapes == ((3, 3),)


def test_the_recorder_is_gone_after_a_check_that_raised():
    def broken(scores, block_size):
        raise RuntimeError("student bug")

    _message("online_softmax", broken, "visible")
    assert torch._C._len_torch_function_stack() == 0


# ---------------------------------------------------------------------------------------
# The online softmax: the statistics block by block
# ---------------------------------------------------------------------------------------


def _two_pass_amax(scores, block_size):
    exps = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return exps / exps.sum(dim=-1, keepdim=True)


def _two_pass_max_values(scores, block_size):
    m = torch.max(scores, dim=-1, keepdim=True).values
    return torch.exp(scores - m) / torch.exp(scores - m).sum(-1, keepdim=True)


def _blockwise_max_but_full_sum(scores, block_size):
    m = torch.full_like(scores[..., :1], float("-inf"))
    for start in range(0, scores.shape[-1], block_size):
        m = torch.maximum(m, scores[..., start : start + block_size].amax(-1, keepdim=True))
    exps = torch.exp(scores - m)
    return exps / exps.sum(-1, keepdim=True)


def _row_by_row(scores, block_size):
    rows = scores.reshape(-1, scores.shape[-1])
    out = torch.empty_like(rows)
    for i in range(rows.shape[0]):
        exps = torch.exp(rows[i] - rows[i].max())
        out[i] = exps / exps.sum()
    return out.reshape(scores.shape)


@pytest.mark.parametrize(
    "fn", [_two_pass_amax, _two_pass_max_values, _blockwise_max_but_full_sum, _row_by_row]
)
@pytest.mark.parametrize("suite", ["visible", "hidden"])
def test_two_pass_softmax_gets_the_method_message(fn, suite):
    message = _message("online_softmax", fn, suite)
    assert METHOD in message
    assert "over whole rows" in message and "running maximum" in message


def _maxima_first_then_sums(scores, block_size):
    # Two passes over the blocks: all the maxima, then all the sums.
    blocks = torch.split(scores, block_size, dim=-1)
    m = torch.full_like(scores[..., :1], -math.inf)
    for block in blocks:
        m = torch.maximum(m, block.amax(dim=-1, keepdim=True))
    total = sum(torch.exp(block - m).sum(dim=-1, keepdim=True) for block in blocks)
    return torch.exp(scores - m) / total


@pytest.mark.parametrize("suite", ["visible", "hidden"])
def test_two_passes_over_the_blocks_get_the_method_message(suite):
    message = _message("online_softmax", _maxima_first_then_sums, suite)
    assert METHOD in message
    assert "before it exponentiates any" in message


def _online_with_max_values(scores, block_size):
    m = torch.full_like(scores[..., :1], -math.inf)
    total = torch.zeros_like(m)
    for block in torch.split(scores, block_size, dim=-1):
        new_m = torch.maximum(m, torch.max(block, dim=-1, keepdim=True).values)
        total = total * torch.exp(m - new_m) + torch.exp(block - new_m).sum(-1, keepdim=True)
        m = new_m
    return torch.exp(scores - m) / total


def _online_over_columns_first(scores, block_size):
    # Moves the row axis last-but-one away: reduces over axis 0 of a transposed view.
    columns = scores.movedim(-1, 0)  # (n, ...)
    m = torch.full_like(columns[0], -math.inf)
    total = torch.zeros_like(m)
    for start in range(0, columns.shape[0], block_size):
        block = columns[start : start + block_size]
        new_m = torch.maximum(m, block.amax(dim=0))
        total = total * torch.exp(m - new_m) + torch.exp(block - new_m).sum(dim=0)
        m = new_m
    return torch.exp(scores - m.unsqueeze(-1)) / total.unsqueeze(-1)


@pytest.mark.parametrize("fn", [_online_with_max_values, _online_over_columns_first])
@pytest.mark.parametrize("suite", ["visible", "hidden"])
def test_online_softmax_in_other_styles_passes(fn, suite):
    run_task_check("online_softmax", fn, suite)


# ---------------------------------------------------------------------------------------
# Blockwise attention: never the whole score matrix
# ---------------------------------------------------------------------------------------


def _plain_attention(query, key, value, block_size):
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    return (weights / weights.sum(-1, keepdim=True)) @ value


def _blocks_then_concatenated(query, key, value, block_size):
    scale = 1 / math.sqrt(query.shape[-1])
    blocks = [
        query @ key[..., s : s + block_size, :].transpose(-2, -1) * scale
        for s in range(0, key.shape[-2], block_size)
    ]
    scores = torch.cat(blocks, dim=-1)
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    return (weights / weights.sum(-1, keepdim=True)) @ value


def _transposed_scores(query, key, value, block_size):
    scores_t = key @ query.transpose(-2, -1) / math.sqrt(query.shape[-1])  # (..., S, L)
    weights_t = torch.exp(scores_t - scores_t.amax(-2, keepdim=True))
    weights_t = weights_t / weights_t.sum(-2, keepdim=True)
    return weights_t.transpose(-2, -1) @ value


@pytest.mark.parametrize("fn", [_plain_attention, _blocks_then_concatenated, _transposed_scores])
@pytest.mark.parametrize("suite", ["visible", "hidden"])
def test_full_score_matrix_gets_the_method_message(fn, suite):
    message = _message("blockwise_attention", fn, suite)
    assert METHOD in message
    assert "one (n_q, block_size) block of scores" in message


def _blockwise_with_einsum_and_transposed_key(query, key, value, block_size):
    # Transposes the whole key first (d_k, n_k): legitimate, and (1, 4) on the hand case,
    # where n_q = d_k = d_v = 1 make shapes coincide; the audit must not mind.
    key_t = key.transpose(-2, -1) / math.sqrt(query.shape[-1])
    m = torch.full((*query.shape[:-1], 1), -math.inf, dtype=query.dtype)
    total = torch.zeros_like(m)
    acc = torch.zeros((*query.shape[:-1], value.shape[-1]), dtype=query.dtype)
    for start in range(0, key.shape[-2], block_size):
        scores = torch.einsum("...ld,...ds->...ls", query, key_t[..., start : start + block_size])
        new_m = torch.maximum(m, scores.amax(-1, keepdim=True))
        weights = torch.exp(scores - new_m)
        factor = torch.exp(m - new_m)
        total = total * factor + weights.sum(-1, keepdim=True)
        acc = acc * factor + weights @ value[..., start : start + block_size, :]
        m = new_m
    return acc / total


@pytest.mark.parametrize("suite", ["visible", "hidden"])
def test_blockwise_attention_in_another_style_passes(suite):
    run_task_check("blockwise_attention", _blockwise_with_einsum_and_transposed_key, suite)
