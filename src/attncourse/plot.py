"""Pictures of attention: weight heatmaps, grids of heads, and masks.

Rows are queries and columns are keys, as everywhere in the course. Every function returns
matplotlib objects and never calls ``show()``, so it works in notebooks, scripts and tests.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["attention_heatmap", "heads_grid", "mask_image"]


def _as_matrix(name: str, x, ndim: int) -> np.ndarray:
    """Tensor or array -> float NumPy array with exactly ``ndim`` dimensions."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = x.float() if x.dtype.is_floating_point else x
        x = x.numpy()
    x = np.asarray(x)
    if x.ndim != ndim:
        layout = "(n_q, n_k)" if ndim == 2 else "(h, n_q, n_k)"
        raise ValueError(f"{name} must have shape {layout}, got shape {x.shape}")
    return x


def _label_axes(ax, n_q: int, n_k: int, query_labels, key_labels) -> None:
    for labels, n, which in ((query_labels, n_q, "query_labels"), (key_labels, n_k, "key_labels")):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{which} must have {n} entries, got {len(labels)}")
    ax.set_xticks(range(n_k))
    ax.set_yticks(range(n_q))
    ax.set_xticklabels(key_labels if key_labels is not None else range(n_k), rotation=90 if n_k > 8 else 0)
    ax.set_yticklabels(query_labels if query_labels is not None else range(n_q))
    ax.set_xlabel("key")
    ax.set_ylabel("query")


def _new_axes(ax, size):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    return fig, ax


def attention_heatmap(
    weights,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    *,
    ax=None,
    title: str | None = None,
    annotate: bool | None = None,
    cmap: str = "viridis",
    vmin: float | None = 0.0,
    vmax: float | None = None,
    colorbar: bool = True,
):
    """Heatmap of one weight (or score) matrix, rows = queries, columns = keys.

    Args:
        weights: (n_q, n_k) tensor or array.
        query_labels, key_labels: tick labels (e.g. tokens), n_q and n_k of them.
        ax: draw into this Axes; a new figure is made if None.
        title: optional title.
        annotate: write each value in its cell; default when the matrix has at most
            12 x 12 entries.
        cmap, vmin, vmax: colour map and range (weights lie in [0, 1]; pass vmin=None for
            scores).
        colorbar: add a colour bar.

    Returns:
        The matplotlib Axes.
    """
    matrix = _as_matrix("weights", weights, 2)
    n_q, n_k = matrix.shape
    fig, ax = _new_axes(ax, (1.0 + 0.6 * n_k, 0.8 + 0.5 * n_q))
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    _label_axes(ax, n_q, n_k, query_labels, key_labels)
    if annotate is None:
        annotate = n_q <= 12 and n_k <= 12
    if annotate:
        threshold = (np.nanmax(matrix) + np.nanmin(matrix)) / 2
        for i in range(n_q):
            for j in range(n_k):
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if matrix[i, j] > threshold else "white",
                )
    if title:
        ax.set_title(title)
    if colorbar:
        fig.colorbar(image, ax=ax, shrink=0.8)
    return ax


def heads_grid(
    weights,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    title: str | None = None,
    cmap: str = "viridis",
):
    """One heatmap per head, side by side, sharing one colour scale from 0 to the maximum.

    Args:
        weights: (h, n_q, n_k) tensor or array, e.g. one batch element of captured weights.
        query_labels, key_labels: tick labels.
        ncols: heads per row (default: up to 4).
        title: optional title of the whole figure.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    stack = _as_matrix("weights", weights, 3)
    h, n_q, n_k = stack.shape
    ncols = min(h, 4) if ncols is None else ncols
    nrows = math.ceil(h / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(ncols * (0.8 + 0.35 * n_k), nrows * (0.8 + 0.35 * n_q)),
        squeeze=False,
        layout="constrained",
    )
    vmax = float(np.nanmax(stack)) if stack.size else 1.0
    for head, ax in enumerate(axes.flat):
        if head >= h:
            ax.axis("off")
            continue
        attention_heatmap(
            stack[head],
            query_labels,
            key_labels,
            ax=ax,
            title=f"head {head}",
            annotate=False,
            cmap=cmap,
            vmax=vmax,
            colorbar=False,
        )
    if title:
        fig.suptitle(title)
    return fig


def mask_image(
    mask,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    *,
    ax=None,
    title: str | None = None,
):
    """Picture of a boolean mask (True = may attend, drawn filled and marked 1), rows = queries.

    Floating masks are shown as kept where the added value is finite.

    Args:
        mask: (n_q, n_k) boolean or floating tensor or array.

    Returns:
        The matplotlib Axes.
    """
    matrix = _as_matrix("mask", mask, 2)
    keep = matrix if matrix.dtype == bool else np.isfinite(matrix)
    n_q, n_k = keep.shape
    fig, ax = _new_axes(ax, (1.0 + 0.45 * n_k, 0.8 + 0.45 * n_q))
    ax.imshow(keep, cmap="Blues", vmin=0, vmax=1.25, aspect="equal")
    _label_axes(ax, n_q, n_k, query_labels, key_labels)
    for i in range(n_q):
        for j in range(n_k):
            ax.text(j, i, "1" if keep[i, j] else "0", ha="center", va="center", fontsize=9)
    if title:
        ax.set_title(title)
    return ax
