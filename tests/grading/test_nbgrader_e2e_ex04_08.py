"""ex04-ex09 end to end with the real nbgrader and its gradebook.

One submission per assignment, mixing right and wrong answers written the way a student
would write them: the reference solution of some tasks, and for the others the reference
with one mistake edited in (an answer cell of the source notebook with a line changed), or
a catalogued wrong variant. The score of every test cell is read from the gradebook and
must be what the checks give the same code in this process. The full fault matrix (loops,
exits, edited and deleted test cells) runs on ex02 in test_nbgrader_e2e.py.
"""

from __future__ import annotations

import contextlib
import io

import pytest

from attncourse.grading.core import TASKS, run_task_check
from grading_helpers import SOLUTIONS, grade_id, notebook_path, read_notebook
from nbgrader_course import Course, mistake_answer, reference_answers, submission

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

CELL_TIMEOUT = 60  # generous: the module and hook tasks build torch layers in every case


def _edited(name: str, task: str, old: str, new: str) -> str:
    """The reference answer of ``task`` with ``old`` replaced by ``new`` (a student's slip)."""
    source = reference_answers(name)[f"{task}_answer"]
    assert old in source, f"{old!r} is not in the reference answer of {task}"
    return source.replace(old, new)


# Right numbers by the wrong method: the method audit must score it 0 inside nbgrader too.
PLAIN_ATTENTION_AS_BLOCKWISE = """
def blockwise_attention(query, key, value, block_size):
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])
    weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return weights / weights.sum(dim=-1, keepdim=True) @ value
"""

# assignment -> task -> answer source (None: the reference)
ANSWERS = {
    "ex04_additive_bilinear": {
        "additive_scores": None,
        "bilinear_scores": _edited(
            "ex04_additive_bilinear", "bilinear_scores", "query @ W @ key", "query @ W.T @ key"
        ),
        "additive_attention": mistake_answer("additive_attention", "additive_without_tanh", "additive_attention"),
    },
    "ex05_masking": {
        "padding_mask": _edited("ex05_masking", "padding_mask", "positions < lengths", "positions <= lengths"),
        "causal_mask": None,
        "masked_softmax": _edited(
            "ex05_masking", "masked_softmax", 'masked_fill(~mask, float("-inf"))', "masked_fill(~mask, -1e9)"
        ),
    },
    "ex06_multi_head": {
        "split_heads": None,
        "merge_heads": mistake_answer("merge_heads", "heads_reshape_without_transpose", "merge_heads"),
        "multi_head_attention": _edited(
            "ex06_multi_head", "multi_head_attention", "return self.out_proj(merged), weights", "return merged, weights"
        ),
    },
    "ex07_attention_maps": {
        "capture_self_attention": _edited(
            "ex07_attention_maps",
            "capture_self_attention",
            "layer.self_attn.register_forward_pre_hook(ask_for_weights, with_kwargs=True),",
            "",
        ),
        "plot_attention": None,
    },
    "ex08_efficient_attention": {
        "online_softmax": _edited(
            "ex08_efficient_attention", "online_softmax", "running_sum * torch.exp(running_max - new_max)", "running_sum"
        ),
        "blockwise_attention": PLAIN_ATTENTION_AS_BLOCKWISE,
    },
    "ex09_positions": {
        "sinusoidal_encoding": None,
        "rope": _edited("ex09_positions", "rope", "turned_a = a * cos - b * sin", "turned_a = a * cos + b * sin"),
        "alibi_bias": mistake_answer("alibi_bias", "alibi_power_of_two_rule_ignored", "alibi_bias"),
        "rope_attention": _edited(
            "ex09_positions",
            "rope_attention",
            "torch.softmax(scores, dim=-1) @ value",
            "torch.softmax(scores, dim=-1) @ turn(value, torch.arange(n_k))",  # values rotated
        ),
    },
}


def _setup_source(name: str) -> str:
    nb = read_notebook(notebook_path(SOLUTIONS, name))
    return next(c.source for c in nb.cells if grade_id(c) == "setup")


def expected_points(name: str, task: str, source: str | None) -> dict[str, float]:
    """What the checks give this answer in this process, per test cell of the task."""
    points = {
        grade_id(c): c.metadata["nbgrader"]["points"]
        for c in read_notebook(notebook_path(SOLUTIONS, name)).cells
        if c.metadata.get("nbgrader", {}).get("grade")
    }
    namespace: dict = {"__name__": "__student__"}
    exec(_setup_source(name), namespace)
    exec(source if source is not None else reference_answers(name)[f"{task}_answer"], namespace)
    student = namespace[TASKS[task].function_name]
    result = {}
    for suite in ("visible", "hidden"):
        cell = f"{task}_{suite}"
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                run_task_check(task, student, suite)
            result[cell] = points[cell]
        except AssertionError:
            result[cell] = 0
    return result


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory):
    course = Course(tmp_path_factory.mktemp("course"), sorted(ANSWERS), CELL_TIMEOUT)
    course.generate()
    reference = {name: reference_answers(name) for name in ANSWERS}
    for name, answers in ANSWERS.items():
        cells = {
            f"{task}_answer": (source if source is not None else reference[name][f"{task}_answer"])
            for task, source in answers.items()
        }
        course.submit("mixed", name, submission(course.release_notebook(name), cells))
    outcomes = {name: course.autograde(name) for name in ANSWERS}
    return course, outcomes


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_every_cell_scores_what_the_checks_give_in_process(graded_course, name):
    course, outcomes = graded_course
    assert outcomes[name].returncode == 0, outcomes[name].stderr[-3000:]
    points = {
        grade_id(c): c.metadata["nbgrader"]["points"]
        for c in read_notebook(notebook_path(SOLUTIONS, name)).cells
        if c.metadata.get("nbgrader", {}).get("grade")
    }
    want = {}
    for task, source in ANSWERS[name].items():
        right = source is None  # the reference keeps every point, a mistake loses them all
        cells = {f"{task}_{suite}": points[f"{task}_{suite}"] if right else 0 for suite in ("visible", "hidden")}
        assert expected_points(name, task, source) == cells  # the checks agree in process
        want.update(cells)
    assert course.cell_scores(name, "mixed") == want
    assert course.total_score(name, "mixed") == sum(want.values())
    print(f"{name}: autograde of one submission took {course.autograde_seconds[name]:.1f} s")
