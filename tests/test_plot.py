"""attncourse.plot: matplotlib objects come back, labels show, wrong shapes raise."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from attncourse import masks as M  # noqa: E402
from attncourse import plot  # noqa: E402

TOKENS_Q = ["the", "cat", "sat"]
TOKENS_K = ["le", "chat", "est", "assis"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def no_show(monkeypatch):
    """Fail if a plotting function tries to show a window."""

    def refuse(*args, **kwargs):
        raise AssertionError("plot functions must not call show()")

    monkeypatch.setattr(plt, "show", refuse)
    monkeypatch.setattr(Figure, "show", refuse)


def _tick_texts(labels) -> list[str]:
    return [label.get_text() for label in labels]


def test_heatmap_returns_axes_with_labels(no_show):
    weights = torch.softmax(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), -1)
    ax = plot.attention_heatmap(weights, TOKENS_Q, TOKENS_K, title="cross-attention")
    assert isinstance(ax, Axes)
    assert _tick_texts(ax.get_xticklabels()) == TOKENS_K  # columns are keys
    assert _tick_texts(ax.get_yticklabels()) == TOKENS_Q  # rows are queries
    assert ax.get_xlabel() == "key" and ax.get_ylabel() == "query"
    assert ax.get_title() == "cross-attention"
    image = ax.get_images()[0].get_array()
    np.testing.assert_allclose(image, weights.numpy(), rtol=1e-6)
    annotations = [text.get_text() for text in ax.texts]
    assert f"{weights[0, 0].item():.2f}" in annotations and len(annotations) == 12


def test_heatmap_draws_into_given_axes_and_accepts_low_precision():
    fig, ax = plt.subplots()
    weights = torch.full((2, 2), 0.5, dtype=torch.bfloat16, requires_grad=True)
    assert plot.attention_heatmap(weights, ax=ax, colorbar=False) is ax
    assert len(fig.axes) == 1
    assert _tick_texts(ax.get_xticklabels()) == ["0", "1"]


def test_heads_grid_returns_figure_with_one_panel_per_head(no_show):
    weights = np.full((5, 3, 4), 0.25)
    fig = plot.heads_grid(weights, TOKENS_Q, TOKENS_K, ncols=2, title="layer 0")
    assert isinstance(fig, Figure)
    visible = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in visible] == [f"head {h}" for h in range(5)]
    assert len(fig.axes) == 6  # a 3 x 2 grid, the last panel switched off
    assert fig._suptitle.get_text() == "layer 0"
    assert _tick_texts(visible[0].get_yticklabels()) == TOKENS_Q


def test_mask_image_marks_kept_entries(no_show):
    ax = plot.mask_image(M.causal_mask(3), TOKENS_Q, TOKENS_Q, title="causal")
    assert isinstance(ax, Axes)
    marks = [text.get_text() for text in ax.texts]
    assert marks == ["1", "0", "0", "1", "1", "0", "1", "1", "1"]
    assert ax.get_title() == "causal"
    additive = M.bool_to_additive(M.causal_mask(3))
    marks_from_float = [t.get_text() for t in plot.mask_image(additive).texts]
    assert marks_from_float == marks


@pytest.mark.parametrize(
    "call, shape",
    [
        (plot.attention_heatmap, (2, 3, 4)),
        (plot.attention_heatmap, (4,)),
        (plot.heads_grid, (3, 4)),
        (plot.mask_image, (1, 3, 3)),
    ],
)
def test_wrong_shapes_raise(call, shape):
    with pytest.raises(ValueError, match=r"weights|mask"):
        call(np.zeros(shape))


def test_wrong_number_of_labels_raises():
    with pytest.raises(ValueError, match="key_labels must have 4 entries, got 3"):
        plot.attention_heatmap(np.zeros((3, 4)), TOKENS_Q, TOKENS_Q)
    with pytest.raises(ValueError, match="query_labels"):
        plot.mask_image(np.ones((2, 4), dtype=bool), TOKENS_Q, TOKENS_K)
