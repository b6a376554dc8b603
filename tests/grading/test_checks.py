"""The checks graded like code: references pass, stubs fail, every mistake is named,
delegation is refused, and the checks keep stderr clean and the process alive."""

from __future__ import annotations

import os
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import attncourse
from attncourse import functional
from attncourse.grading import checks
from attncourse.grading.core import TASKS, run_task_check
from attncourse.grading.mistakes import CATALOGUE, applicable
from attncourse.grading.tripwire import SOFTMAX_FAMILY, Tripwire, resolve

from grading_helpers import EXERCISES, SOLUTIONS, answer_cells, function_from_notebook, notebook_path

pytestmark = pytest.mark.timeout(120)

ANSWERS = answer_cells()
NOTEBOOK_TASKS = sorted(t for t in ANSWERS if t in TASKS)
MISTAKE_CASES = sorted((m.name, task) for m in CATALOGUE.values() for task in m.tasks)


def _notebook_function(edition, task: str):
    assignment, answer_id = ANSWERS[task]
    return function_from_notebook(notebook_path(edition, assignment), answer_id, TASKS[task].function_name)


def _failure(task: str, fn, suite: str = "hidden") -> str:
    with pytest.raises(AssertionError) as info:
        run_task_check(task, fn, suite)
    return str(info.value)


# ---------------------------------------------------------------------------------------
# Every task: the reference passes, the stub fails, the mistakes are named
# ---------------------------------------------------------------------------------------


def test_every_task_of_a_notebook_is_registered():
    assert NOTEBOOK_TASKS, "no answer cells found in solutions/"
    missing = sorted(set(ANSWERS) - set(TASKS))
    assert missing == [], f"answer cells without a registered task: {missing}"


@pytest.mark.parametrize("suite", ["visible", "hidden"])
@pytest.mark.parametrize("task", NOTEBOOK_TASKS)
def test_reference_solution_passes(task, suite, capsys):
    run_task_check(task, _notebook_function(SOLUTIONS, task), suite)
    out, err = capsys.readouterr()
    assert out.startswith("passed: ")
    assert err == ""


@pytest.mark.parametrize("task", NOTEBOOK_TASKS)
def test_release_stub_fails_without_crashing(task, capsys):
    stub = _notebook_function(EXERCISES, task)
    for suite in ("visible", "hidden"):
        message = _failure(task, stub, suite)
        assert "NotImplementedError" in message
        assert "replace that line with your implementation" in message
    assert capsys.readouterr().err == ""


def test_catalogue_has_at_least_fifteen_mistakes_with_variants():
    with_variants = [m for m in CATALOGUE.values() if m.variants]
    assert len(with_variants) >= 15
    assert all(m.hint.strip() for m in CATALOGUE.values())


@pytest.mark.parametrize("mistake, task", MISTAKE_CASES)
def test_mistake_fails_and_is_named_alone(mistake, task, capsys):
    entry = CATALOGUE[mistake]
    message = _failure(task, entry.variants[task], "hidden")
    named = [line for line in message.splitlines() if line.startswith("Likely mistake")]
    assert named == [f"Likely mistake [{mistake}]: {entry.hint}"], message
    assert capsys.readouterr().err == ""


def test_every_task_has_applicable_mistakes():
    for task in NOTEBOOK_TASKS:
        assert len(applicable(task)) >= 3, task


def test_unknown_mistake_gets_the_fallback_hint():
    def off_by_two(x, dim=-1):
        exps = torch.exp(x - x.amax(dim=dim, keepdim=True))
        return exps / exps.sum(dim=dim, keepdim=True) + 2.0

    message = _failure("stable_softmax", off_by_two, "visible")
    assert "does not match any mistake in the catalogue" in message


def test_small_case_is_printed_with_expected_and_got(capsys):
    def doubled(query, key):
        return 2 * (query @ key.transpose(-2, -1))

    _failure("dot_scores", doubled, "visible")
    out = capsys.readouterr().out
    assert "The small case that failed: hand-sized: 3 tokens of size 2" in out
    assert "expected scores:" in out and "got scores:" in out


def test_wrong_return_type_is_explained():
    def only_output(query, key, value):
        weights = torch.softmax(query @ key.transpose(-2, -1), dim=-1)
        return weights @ value

    message = _failure("dot_product_attention", only_output, "visible")
    assert "must return a tuple (output, weights)" in message


# ---------------------------------------------------------------------------------------
# Delegation is refused
# ---------------------------------------------------------------------------------------


def _sdpa_with_weights(query, key, value, attn_mask=None, scale=None):
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, scale=scale)
    scores = query @ key.transpose(-2, -1) * (scale if scale else query.shape[-1] ** -0.5)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return output, torch.softmax(scores, dim=-1).nan_to_num(0.0)


# One implementation per task that hands the work to a forbidden function.
DELEGATIONS = {
    "stable_softmax": lambda x, dim=-1: torch.softmax(x, dim=dim),
    "log_sum_exp": lambda x, dim=-1: x.logsumexp(dim),
    "dot_scores": lambda query, key: functional.dot_scores(query, key),
    "dot_product_attention": lambda q, k, v: _sdpa_with_weights(q, k, v, scale=1.0),
    "scaled_dot_scores": lambda query, key: attncourse.functional.scaled_dot_scores(query, key),
    "scaled_dot_product_attention": lambda q, k, v, attn_mask=None: _sdpa_with_weights(q, k, v, attn_mask),
    "online_softmax": lambda scores, block_size: torch.softmax(scores, dim=-1),
    "blockwise_attention": lambda q, k, v, block_size: attncourse.efficient.blockwise_attention(
        q, k, v, block_size=block_size
    ),
    "sinusoidal_encoding": lambda n, d, base=10000.0: attncourse.positions.sinusoidal_encoding(
        n, d, base, dtype=torch.float64
    ),
    "rope": lambda x, positions, base=10000.0, interleaved=False: attncourse.positions.rope(
        x, positions, base, interleaved
    ),
    "alibi_bias": lambda h, n_q, n_k, alignment="top_left": attncourse.positions.alibi_bias(
        h, n_q, n_k, alignment=alignment, dtype=torch.float64
    ),
    "rope_attention": lambda q, k, v, interleaved=False: F.scaled_dot_product_attention(
        attncourse.positions.rope(q, torch.arange(k.shape[-2] - q.shape[-2], k.shape[-2])),
        attncourse.positions.rope(k),
        v,
        attn_mask=attncourse.masks.causal_mask(q.shape[-2], k.shape[-2], alignment="bottom_right"),
    ),
}


@pytest.mark.parametrize("task", sorted(DELEGATIONS))
def test_delegation_scores_zero_with_a_message(task):
    message = _failure(task, DELEGATIONS[task], "visible")
    assert "delegation refused, 0 points" in message


def test_delegation_through_a_name_imported_from_torch_is_caught():
    namespace: dict = {}
    exec(
        "from torch.nn.functional import softmax as my_softmax\n"
        "def softmax(x, dim=-1):\n"
        "    return my_softmax(x, dim=dim)\n",
        namespace,
    )
    message = _failure("stable_softmax", namespace["softmax"], "visible")
    assert "torch.nn.functional.softmax" in message
    assert namespace["my_softmax"] is F.softmax  # the student's namespace is restored


def test_attention_task_may_use_torch_softmax():
    # The dot-product exercise allows torch.softmax; only attention shortcuts are refused.
    reference = _notebook_function(SOLUTIONS, "dot_product_attention")
    run_task_check("dot_product_attention", reference, "visible")


def test_tripwire_restores_everything_even_when_the_code_raises():
    originals = {name: [getattr(o, a) for o, a in resolve(name)] for name in SOFTMAX_FAMILY}
    exit_before = os._exit
    with pytest.raises(ZeroDivisionError):
        with Tripwire(SOFTMAX_FAMILY) as wire:
            torch.randn(3).softmax(0)
            1 / 0
    assert wire.calls == ["torch.Tensor.softmax"]
    for name, before in originals.items():
        assert [getattr(o, a) for o, a in resolve(name)] == before
    assert "softmax" not in torch.Tensor.__dict__
    assert os._exit is exit_before


def test_keyboard_interrupt_goes_through_and_restores():
    def interrupted(x, dim=-1):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checks.check_stable_softmax(interrupted)
    assert torch.softmax.__name__ == "softmax" and not hasattr(torch.softmax, "__wrapped__")
    assert "softmax" not in torch.Tensor.__dict__


# ---------------------------------------------------------------------------------------
# Output hygiene and faults inside the student's function
# ---------------------------------------------------------------------------------------


def test_torch_warning_of_a_correct_answer_stays_off_stderr(capsys):
    def warns_but_right(query, key):
        copied = torch.tensor(key)  # UserWarning: copy construct from a tensor
        return query @ copied.transpose(-2, -1)

    run_task_check("dot_scores", warns_but_right, "visible")
    out, err = capsys.readouterr()
    assert err == ""
    assert "passed: dot_scores" in out
    assert "UserWarning" in out


def test_writes_to_stderr_inside_the_function_go_to_stdout(capsys):
    def chatty(query, key):
        print("debugging", file=sys.stderr)
        warnings.warn("a warning of the student's own")
        return query @ key.transpose(-2, -1)

    run_task_check("dot_scores", chatty, "visible")
    out, err = capsys.readouterr()
    assert err == ""
    assert "debugging" in out


@pytest.mark.parametrize("exit_call", ["sys.exit()", "os._exit(1)", "os.abort()"])
def test_exiting_inside_the_function_fails_the_check_only(exit_call):
    before = (os._exit, os.abort, sys.exit)
    namespace = {"sys": sys, "os": os}
    exec(f"def dot_scores(query, key):\n    {exit_call}\n", namespace)
    message = _failure("dot_scores", namespace["dot_scores"], "visible")
    assert "SystemExit" in message
    assert (os._exit, os.abort, sys.exit) == before


def test_protect_kernel_only_guards_notebook_code():
    from attncourse.grading import tripwire

    tripwire.protect_kernel()
    assert not tripwire._called_from_notebook_cell(depth=1)  # a test module is no cell
    namespace: dict = {"os": os}
    code = compile("def leave():\n    os._exit(3)\n", "/tmp/ipykernel_123/456.py", "exec")
    exec(code, namespace)
    with pytest.raises(SystemExit, match="disabled in graded notebooks"):
        namespace["leave"]()


def test_suite_name_is_validated():
    with pytest.raises(ValueError, match="suite must be one of"):
        run_task_check("dot_scores", lambda q, k: q, "secret")


# ---------------------------------------------------------------------------------------
# Cases of bad input: the task asks for an exception
# ---------------------------------------------------------------------------------------


def _causal_mask_without_check(n_q, n_k, alignment="top_left"):
    offset = 0 if alignment == "top_left" else n_k - n_q
    return torch.arange(n_k)[None, :] <= torch.arange(n_q)[:, None] + offset


def _causal_mask_with_assert(n_q, n_k, alignment="top_left"):
    assert alignment in ("top_left", "bottom_right")
    return _causal_mask_without_check(n_q, n_k, alignment)


@pytest.mark.parametrize("fn", [_causal_mask_without_check, _causal_mask_with_assert])
@pytest.mark.parametrize("suite", ["visible", "hidden"])
def test_a_missing_value_error_fails_with_its_own_hint(fn, suite):
    message = _failure("causal_mask", fn, suite)
    assert "an unknown alignment, 'middle'" in message
    assert "this input must raise ValueError, but your function" in message
    assert "Hint: the task asks for a ValueError on this input" in message


def test_any_value_error_message_is_accepted():
    def causal_mask(n_q, n_k, alignment="top_left"):
        if alignment not in ("top_left", "bottom_right"):
            raise ValueError("no")
        return _causal_mask_without_check(n_q, n_k, alignment)

    for suite in ("visible", "hidden"):
        run_task_check("causal_mask", causal_mask, suite)
