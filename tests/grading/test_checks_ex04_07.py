"""Grader tests specific to ex04-ex07: delegation refused for every task, the adapters of
the module, hook and plot tasks, and the self-check on the four notebooks.

The generic tests in test_checks.py already cover these assignments' tasks (references
pass, stubs fail, every catalogued mistake is named alone); this file adds what needs a
class or a model to express.
"""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib
import pytest
import torch
from torch import nn

import attncourse
from attncourse import functional, masks
from attncourse.grading.assignments import ex06_multi_head, ex07_attention_maps
from attncourse.grading.core import run_task_check
from grading_helpers import EXERCISES, SOLUTIONS, notebook_path, venv_env

matplotlib.use("Agg")

pytestmark = pytest.mark.timeout(300)

NAMES = ["ex04_additive_bilinear", "ex05_masking", "ex06_multi_head", "ex07_attention_maps"]


def _failure(task: str, fn, suite: str = "visible") -> str:
    with pytest.raises(AssertionError) as info:
        run_task_check(task, fn, suite)
    return str(info.value)


# ---------------------------------------------------------------------------------------
# Delegation: one implementation per task that hands the work to a forbidden function
# ---------------------------------------------------------------------------------------


class TorchBackedAttention(nn.Module):
    """Has the four projections the check loads, but lets nn.MultiheadAttention do the work."""

    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        for name in ex06_multi_head.PROJECTIONS:
            setattr(self, name, nn.Linear(embed_dim, embed_dim))

    def forward(self, query, key, value, attn_mask=None):
        E = query.shape[-1]
        inner = nn.MultiheadAttention(E, self.num_heads, batch_first=True, dtype=query.dtype)
        with torch.no_grad():
            inner.in_proj_weight.copy_(torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]))
            inner.in_proj_bias.copy_(torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]))
            inner.out_proj.weight.copy_(self.out_proj.weight)
            inner.out_proj.bias.copy_(self.out_proj.bias)
        mask = None if attn_mask is None else ~attn_mask
        return inner(query, key, value, attn_mask=mask, average_attn_weights=False)


def _library_capture(layer, x):
    with attncourse.hooks.capture_attention(layer) as maps:
        layer(x)
    return maps["self_attn"]


DELEGATIONS = {
    "additive_scores": lambda q, k, W_q, W_k, w_v: functional.additive_scores(q, k, W_q, W_k, w_v),
    "bilinear_scores": lambda q, k, W: attncourse.functional.general_scores(q, k, W),
    "additive_attention": lambda q, k, v, W_q, W_k, w_v: attncourse.additive_attention(
        q, k, v, W_q, W_k, w_v, return_weights=True
    ),
    "padding_mask": lambda lengths, n_k: masks.padding_mask(lengths, n_k, heads=False),
    "causal_mask": lambda n_q, n_k, alignment="top_left": masks.causal_mask(n_q, n_k, alignment=alignment),
    "masked_softmax": lambda scores, mask: functional.masked_softmax(scores, mask),
    "split_heads": lambda x, h: attncourse.MultiHeadAttention(x.shape[-1], h).split_heads(x, h),
    "merge_heads": lambda x: attncourse.MultiHeadAttention(x.shape[1] * x.shape[3], x.shape[1]).merge_heads(x),
    "multi_head_attention": TorchBackedAttention,
    "capture_self_attention": _library_capture,
    "plot_attention": lambda w, q_tokens, k_tokens: attncourse.plot.attention_heatmap(w, q_tokens, k_tokens),
}


@pytest.mark.parametrize("task", sorted(DELEGATIONS))
def test_delegation_scores_zero_with_a_message(task):
    message = _failure(task, DELEGATIONS[task])
    assert "delegation refused, 0 points" in message


def test_delegating_module_gives_the_right_numbers_otherwise():
    # The refusal is about delegation, not about wrong numbers: the same module is right.
    case = ex06_multi_head.MULTI_HEAD_ATTENTION.cases("visible")[0]
    got = ex06_multi_head.ModuleUnderTest(TorchBackedAttention)(*case.args, **case.kwargs)
    want = ex06_multi_head.reference_multi_head_attention(*case.args, **case.kwargs)
    for have, expected in zip(got, want):
        torch.testing.assert_close(have, expected, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------
# The adapters
# ---------------------------------------------------------------------------------------


def test_module_without_the_four_projections_is_told_what_to_name_them():
    class Unnamed(nn.Module):
        def __init__(self, embed_dim, num_heads):
            super().__init__()
            self.projections = nn.Linear(embed_dim, 4 * embed_dim)

        def forward(self, query, key, value, attn_mask=None):
            return query, None

    message = _failure("multi_head_attention", Unnamed)
    assert "q_proj, k_proj, v_proj and out_proj" in message


def test_capture_leaves_no_hooks_and_keeps_the_random_state():
    state = torch.random.get_rng_state()
    layer = ex07_attention_maps.build_encoder_layer(2, 5, 8, torch.float64, norm_first=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = ex07_attention_maps.build_encoder_layer(2, 5, 8, torch.float64, norm_first=False)
    for p, q in zip(layer.parameters(), again.parameters()):
        assert torch.equal(p, q)  # the same seed gives the same layer
    assert ex07_attention_maps._hooks_left(layer) == []


def test_plot_that_returns_a_figure_is_accepted():
    import matplotlib.pyplot as plt

    def plot_on_figure(weights, query_tokens, key_tokens):
        fig, ax = plt.subplots()
        ax.imshow(weights.numpy())
        ax.set_yticks(range(len(query_tokens)), labels=query_tokens)
        ax.set_xticks(range(len(key_tokens)), labels=key_tokens)
        ax.set_ylabel("queries")
        ax.set_xlabel("keys")
        return fig

    run_task_check("plot_attention", plot_on_figure, "hidden")


def test_plot_that_returns_nothing_is_explained():
    message = _failure("plot_attention", lambda w, q, k: None)
    assert "must return the matplotlib Axes" in message


# ---------------------------------------------------------------------------------------
# The self-check on the four notebooks
# ---------------------------------------------------------------------------------------

CLI = [sys.executable, "-c", "import sys; from attncourse.cli import main; sys.exit(main())"]


def _check(edition) -> tuple[int, dict]:
    paths = [str(notebook_path(edition, name)) for name in NAMES]
    result = subprocess.run(
        [*CLI, "check", *paths, "--json"], capture_output=True, text=True, env=venv_env(), timeout=840
    )
    return result.returncode, json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_self_check_gives_solutions_full_points_and_releases_zero():
    code, report = _check(SOLUTIONS)
    assert code == 0
    assert [nb["assignment"] for nb in report["notebooks"]] == NAMES
    assert all(nb["score"] == nb["max_score"] > 0 for nb in report["notebooks"])

    code, report = _check(EXERCISES)
    assert code == 1
    assert all(nb["score"] == 0 and nb["max_score"] > 0 for nb in report["notebooks"])
