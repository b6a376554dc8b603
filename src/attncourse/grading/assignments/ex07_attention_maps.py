"""ex07_attention_maps: capturing attention maps with hooks, and drawing them.

Tasks:
    capture_self_attention(layer, x) -> weights (B, h, n, n): the per-head attention
        weights of an ``nn.TransformerEncoderLayer`` (batch first) on input ``x``
        (B, n, d_model), captured with forward hooks, which must be removed afterwards.
        The layer calls its ``self_attn`` with ``need_weights=False``: a plain forward
        hook sees ``None``.
    plot_attention(weights, query_tokens, key_tokens) -> matplotlib Axes: a heatmap of one
        (n_q, n_k) weight matrix, rows = queries (y axis labelled "query", ticks = query
        tokens), columns = keys (x axis "key", ticks = key tokens).

Both are graded through small adapters (the tasks' ``adapt``) that turn what the student returns into tensors
(and raise a readable error for what cannot be compared), so the framework compares them
with the library's ``hooks.capture_attention`` and ``plot.attention_heatmap``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ... import plot
from ...hooks import capture_attention
from .. import cases as mk
from ..core import Case, Task, register_task, run_task_check
from ..mistakes import CATALOGUE, define, variant
from ..tripwire import LIBRARY_FAMILY

CHAPTER = "07_attention_maps"
FORBIDDEN = LIBRARY_FAMILY + ("attncourse.hooks.*", "attncourse.plot.*")

# ---------------------------------------------------------------------------------------
# capture_self_attention
# ---------------------------------------------------------------------------------------


def build_encoder_layer(nhead: int, layer_seed: int, d_model: int, dtype, norm_first: bool):
    """A seeded ``nn.TransformerEncoderLayer`` (batch first, no dropout) in eval mode."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(layer_seed)  # nn.Linear initialises from the global generator
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True,
            norm_first=norm_first,
        )
    return layer.to(dtype).eval()


def _hooks_left(layer: nn.Module, keep: frozenset[int] = frozenset()) -> list[str]:
    """Names of modules of ``layer`` that still carry forward hooks or pre-hooks, other
    than the hooks whose ids are in ``keep``."""
    return [
        name or "layer"
        for name, module in layer.named_modules()
        if set(module._forward_hooks) - keep or set(module._forward_pre_hooks) - keep
    ]


def _observer_hook(module, args, output) -> None:
    """A hook of the layer's owner, registered before the student's function runs."""


def _patched_modules(layer: nn.Module) -> list[str]:
    """Modules of ``layer`` whose ``forward`` was replaced on the instance."""
    return [name or "layer" for name, module in layer.named_modules() if "forward" in vars(module)]


class CaptureUnderTest:
    """A capture function ``fn(layer, x)``, called like the task's reference.

    ``describe`` builds the seeded layer, calls ``fn`` and reports, as plain data, what
    came back and what state the layer and torch were left in (it runs in the sandbox);
    :func:`judge_capture` turns that report into the weights to compare, or into the error
    for a silent failure: no weights at all (``None``), a layer or torch left other than
    they were found, also when the call fails (it runs on the trusted side). Calling the
    object does both. Case options: ``fast_path_before`` (the fast-path setting before
    the call, to be restored), ``own_hook`` (the layer already carries a forward hook of
    its owner, which must survive), ``d_model`` (a layer width other than x's, so that the
    call fails; then the result is an empty tensor if the layer was left clean).
    """

    def __init__(self, capture_fn):
        self.capture_fn = capture_fn
        self.__name__ = getattr(capture_fn, "__name__", "capture_self_attention")
        self.__globals__ = getattr(capture_fn, "__globals__", None)

    def describe(self, nhead, layer_seed, x, norm_first=False, *, fast_path_before=True, own_hook=False, d_model=None) -> dict:
        layer = build_encoder_layer(nhead, layer_seed, d_model or x.shape[-1], x.dtype, norm_first)
        owner = layer.self_attn.register_forward_hook(_observer_hook) if own_hook else None
        saved = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(fast_path_before)
        failed, weights = False, None
        try:
            try:
                weights = self.capture_fn(layer, x)
            except Exception:  # noqa: BLE001 - expected only when the case makes it fail
                if d_model is None:
                    raise
                failed = True
            fast_path_after = torch.backends.mha.get_fastpath_enabled()
        finally:
            torch.backends.mha.set_fastpath_enabled(saved)
        keep = frozenset() if owner is None else frozenset({owner.id})
        return {
            "weights": weights,
            "failed": failed,
            "hooks_left": _hooks_left(layer, keep),
            "owner_hook_kept": owner is None or owner.id in layer.self_attn._forward_hooks,
            "patched": _patched_modules(layer),
            "fast_path_after": bool(fast_path_after),
        }

    def __call__(self, *args, **kwargs):
        return judge_capture(self.describe(*args, **kwargs), Case("a call", args, kwargs))


_CAPTURE_REPORT = frozenset({"weights", "failed", "hooks_left", "owner_hook_kept", "patched", "fast_path_after"})


def describe_capture(student_object):
    """The sandbox's probe: the student's capture function, reporting plain data."""
    return CaptureUnderTest(student_object).describe


def judge_capture(report, case: Case):
    """The weights to compare, from a ``CaptureUnderTest.describe`` report; raises
    AssertionError or TypeError, as the student's call would, for a silent failure."""
    if not isinstance(report, dict) or not _CAPTURE_REPORT <= set(report):
        raise TypeError("the capture could not be observed (the notebook's process sent a malformed report)")
    x = case.args[2]
    fast_path_before = case.kwargs.get("fast_path_before", True)
    when = "after the call failed" if report["failed"] else "after the function returned"
    if report["hooks_left"]:
        raise AssertionError(
            f"hooks are still registered on {list(report['hooks_left'])} {when}: keep the handle "
            "that register_forward_hook returns and call handle.remove() (in a finally: block, "
            "so that it also happens when the call fails)"
        )
    if not report["owner_hook_kept"]:
        raise AssertionError(
            f"a forward hook that was on layer.self_attn before your function ran is gone {when}: "
            "remove only your own hooks, through their handles, not by clearing the hook "
            "dictionaries"
        )
    if report["patched"]:
        raise AssertionError(
            f"forward is still replaced on {list(report['patched'])} {when}: capture with hooks, "
            "or put the original method back in a finally: block"
        )
    if report["fast_path_after"] != fast_path_before:
        raise AssertionError(
            f"the fast-path setting was {fast_path_before} before your function ran and "
            f"{report['fast_path_after']} {when}: save torch.backends.mha.get_fastpath_enabled() "
            "first and restore that value in a finally: block"
        )
    if report["failed"]:
        return torch.zeros(0, dtype=x.dtype)  # failed, and left everything as found
    if report["weights"] is None:
        raise TypeError(
            "the captured weights are None: the hook saw no weights, because the "
            "encoder layer calls self_attn with need_weights=False"
        )
    return report["weights"]


def adapt_capture(student_object):
    """The task's adapter; a ``CaptureUnderTest`` (reference, variants) passes unchanged."""
    return student_object if isinstance(student_object, CaptureUnderTest) else CaptureUnderTest(student_object)


def _capture_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=71)
    layer_seed = 100 + seed
    return [
        Case("2 heads, B=1, n=4, d_model=8", (2, layer_seed, mk.randn(gen, 1, 4, 8))),
        Case("4 heads, B=2, n=5, d_model=8", (4, layer_seed + 1, mk.randn(gen, 2, 5, 8))),
        Case(
            "pre-norm layer (norm_first=True), 2 heads, B=2, n=3",
            (2, layer_seed + 2, mk.randn(gen, 2, 3, 6, scale=3.0)),
            {"norm_first": True},
        ),
        Case("float32, 2 heads, B=2, n=6", (2, layer_seed + 3, mk.randn(gen, 2, 6, 8, dtype=torch.float32))),
        Case("one head, B=3, n=2", (1, layer_seed + 4, mk.randn(gen, 3, 2, 4)), visible=False),
        Case(
            "pre-norm, 4 heads, B=1, n=7",
            (4, layer_seed + 5, mk.randn(gen, 1, 7, 12, scale=2.0)),
            {"norm_first": True},
            visible=False,
        ),
        Case(
            "the fast path was off before the call (it must stay off)",
            (2, layer_seed + 6, mk.randn(gen, 2, 4, 8)),
            {"fast_path_before": False},
            visible=False,
        ),
        Case(
            "the layer already carries a forward hook of its own (it must stay)",
            (2, layer_seed + 7, mk.randn(gen, 1, 5, 8)),
            {"own_hook": True},
            visible=False,
        ),
        Case(
            "x of width 6 for a layer of width 8: the call fails, the layer must be left clean",
            (2, layer_seed + 8, mk.randn(gen, 1, 3, 6)),
            {"d_model": 8},
            visible=False,
        ),
    ]


def _reference_capture(layer, x):
    with capture_attention(layer) as maps:
        layer(x)
    return maps["self_attn"]  # (B, h, n, n)


CAPTURE_SELF_ATTENTION = register_task(
    Task(
        name="capture_self_attention",
        function_name="capture_self_attention",
        reference=CaptureUnderTest(_reference_capture),
        make_cases=_capture_cases,
        result_names=("weights",),
        forbidden=FORBIDDEN,
        chapter=CHAPTER,
        adapt=adapt_capture,
        probe=describe_capture,
        interpret=judge_capture,
    )
)

# ---------------------------------------------------------------------------------------
# plot_attention
# ---------------------------------------------------------------------------------------


def _tick_texts(labels) -> list[str]:
    return [label.get_text() for label in labels]


class PlotUnderTest:
    """A plotting function ``fn(weights, query_tokens, key_tokens)``, called like the
    task's reference.

    ``describe`` (in the sandbox) calls it while another figure is open and current, and
    reports as plain data what it drew: the type it returned, whether it drew on that
    other figure, the first image's array, the axis labels and the tick labels.
    :func:`judge_plot` (on the trusted side) checks them against the case and returns the
    image's array (float32, (n_q, n_k)) to compare. Calling the object does both.
    """

    def __init__(self, plot_fn):
        self.plot_fn = plot_fn
        self.__name__ = getattr(plot_fn, "__name__", "plot_attention")
        self.__globals__ = getattr(plot_fn, "__globals__", None)

    def describe(self, weights, query_tokens, key_tokens) -> dict:
        import matplotlib.pyplot as plt
        from matplotlib.axes import Axes
        from matplotlib.figure import Figure

        # Someone's figure is open and current: the heatmap must go on a new one.
        other_figure, other_axes = plt.subplots()
        other_axes.imshow(np.zeros((2, 2)))
        try:
            drawn = self.plot_fn(weights, list(query_tokens), list(key_tokens))
            if isinstance(drawn, Figure) and drawn.axes:
                drawn = drawn.axes[0]
            if not isinstance(drawn, Axes):
                return {"returned": type(drawn).__name__}
            try:
                images = drawn.get_images()
                image = np.asarray(images[0].get_array(), dtype=np.float32) if images else None
                return {
                    "returned": "Axes",
                    "same_figure": drawn.figure is other_figure,
                    "image": None if image is None else torch.from_numpy(image.copy()),
                    "ylabel": drawn.get_ylabel(),
                    "xlabel": drawn.get_xlabel(),
                    "yticks": _tick_texts(drawn.get_yticklabels()),
                    "xticks": _tick_texts(drawn.get_xticklabels()),
                }
            finally:
                plt.close(drawn.figure)
        finally:
            plt.close(other_figure)

    def __call__(self, weights, query_tokens, key_tokens):
        report = self.describe(weights, query_tokens, key_tokens)
        return judge_plot(report, Case("a call", (weights, query_tokens, key_tokens)))


def describe_plot(student_object):
    """The sandbox's probe: the student's plotting function, reporting plain data."""
    return PlotUnderTest(student_object).describe


def judge_plot(report, case: Case) -> torch.Tensor:
    """The image to compare, from a ``PlotUnderTest.describe`` report; raises as the
    student's call would when the plot breaks the task's rules."""
    if not isinstance(report, dict) or "returned" not in report:
        raise TypeError("the plot could not be observed (the notebook's process sent a malformed report)")
    if report["returned"] != "Axes":
        raise TypeError(f"the function must return the matplotlib Axes it drew on, got {report['returned']}")
    if report.get("same_figure"):
        raise AssertionError(
            "the heatmap went onto the figure that was current before the call, which "
            "already held another plot: draw on a new figure (fig, ax = plt.subplots())"
        )
    weights, query_tokens, key_tokens = case.args[:3]
    shape = tuple(weights.shape)
    image = report.get("image")
    if not isinstance(image, torch.Tensor):
        raise AssertionError("the Axes holds no image: draw the weights with ax.imshow(...)")
    if tuple(image.shape) != shape:
        raise AssertionError(
            f"the image has shape {tuple(image.shape)}, expected (n_q, n_k) = {shape}: rows must be "
            "queries and columns keys"
        )
    ylabel, xlabel = str(report.get("ylabel", "")), str(report.get("xlabel", ""))
    if "quer" not in ylabel.lower() or "key" not in xlabel.lower():
        raise AssertionError(
            f"the axes are labelled y={ylabel!r}, x={xlabel!r}: label the "
            "y axis (rows) 'query' and the x axis (columns) 'key'"
        )
    y_ticks, x_ticks = report.get("yticks"), report.get("xticks")
    if y_ticks != list(query_tokens) or x_ticks != list(key_tokens):
        raise AssertionError(
            f"the tick labels are y={y_ticks}, x={x_ticks}: the rows must be labelled with "
            f"the query tokens {list(query_tokens)} and the columns with the key tokens {list(key_tokens)}"
        )
    return image.to(torch.float32)


def adapt_plot(student_object):
    """The task's adapter; a ``PlotUnderTest`` (reference, variants) passes unchanged."""
    return student_object if isinstance(student_object, PlotUnderTest) else PlotUnderTest(student_object)


def _weights(gen, n_q: int, n_k: int) -> torch.Tensor:
    return torch.softmax(mk.randn(gen, n_q, n_k, scale=2.0), dim=-1)  # rows sum to 1


def _plot_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=72)
    return [
        Case("3 queries, 4 keys", (_weights(gen, 3, 4), ["le", "chat", "noir"], ["the", "black", "cat", "<eos>"])),
        Case("self-attention, 5 tokens", (_weights(gen, 5, 5), list("abcde"), list("abcde"))),
        Case("1 query, 6 keys", (_weights(gen, 1, 6), ["next"], [f"k{j}" for j in range(6)]), visible=False),
        Case("7 queries, 2 keys", (_weights(gen, 7, 2), [f"q{i}" for i in range(7)], ["yes", "no"]), visible=False),
    ]


def _reference_plot(weights, query_tokens, key_tokens):
    return plot.attention_heatmap(weights, query_tokens, key_tokens)


PLOT_ATTENTION = register_task(
    Task(
        name="plot_attention",
        function_name="plot_attention",
        reference=PlotUnderTest(_reference_plot),
        make_cases=_plot_cases,
        result_names=("image",),
        forbidden=FORBIDDEN,
        chapter=CHAPTER,
        adapt=adapt_plot,
        probe=describe_plot,
        interpret=judge_plot,
    )
)

# ---------------------------------------------------------------------------------------
# Mistakes
# ---------------------------------------------------------------------------------------


def define_once(name: str, hint: str):
    """Define a mistake unless another assignment already did (then keep its hint)."""
    return CATALOGUE[name] if name in CATALOGUE else define(name, hint)


define_once(
    "need_weights_false_trap",
    "nn.TransformerEncoderLayer calls self_attn with need_weights=False, so a plain "
    "forward hook receives None as the weights. Register a forward PRE-hook with "
    "with_kwargs=True that sets kwargs['need_weights'] = True and "
    "kwargs['average_attn_weights'] = False, and read the weights in a forward hook.",
)
define_once(
    "weights_averaged_over_heads",
    "the weights must be returned per head, shape (B, h, n_q, n_k), not averaged over the "
    "heads (B, n_q, n_k) as nn.MultiheadAttention does by default.",
)
define_once(
    "hook_left_registered",
    "the hooks stay on the model after your function returns, and will fire on every "
    "later call: keep the handles that register_forward_hook / register_forward_pre_hook "
    "return and call handle.remove() (in a finally: block, so it also happens on errors).",
)
define_once(
    "attention_recomputed_on_raw_input",
    "calling layer.self_attn(x, x, x) yourself gives the layer's maps only when self_attn "
    "sees x unchanged; with norm_first=True the layer normalises x first. Capture the call "
    "the layer really makes, with hooks on layer.self_attn.",
)
define_once(
    "heatmap_transposed",
    "the heatmap is transposed: rows (the y axis) must be queries and columns (the x axis) "
    "keys, so draw the (n_q, n_k) weights as they are, without .T.",
)
define_once(
    "axis_labels_swapped",
    "the axis labels are swapped: imshow puts the rows of the matrix (queries) on the y "
    "axis, so the y label is 'query' and the x label 'key'.",
)
define_once(
    "token_labels_missing",
    "label the ticks with the tokens: ax.set_yticks(range(n_q), labels=query_tokens) and "
    "ax.set_xticks(range(n_k), labels=key_tokens).",
)


def _capture_with_hooks(layer, x, *, pre_hook=True, per_head=True, remove=True):
    """Capture self_attn's weights with hooks, with knobs for the mistakes."""
    recorded = []

    def ask_for_weights(module, args, kwargs):
        kwargs["need_weights"] = True
        if per_head:
            kwargs["average_attn_weights"] = False
        return args, kwargs

    def keep_weights(module, args, output):
        recorded.append(output[1])

    handles = [layer.self_attn.register_forward_hook(keep_weights)]
    if pre_hook:
        handles.append(layer.self_attn.register_forward_pre_hook(ask_for_weights, with_kwargs=True))
    try:
        layer(x)
    finally:
        if remove:
            for handle in handles:
                handle.remove()
    return recorded[-1]


def _capture_variant(mistake: str, capture_fn) -> None:
    variant(mistake, "capture_self_attention")(CaptureUnderTest(capture_fn))


_capture_variant("need_weights_false_trap", lambda layer, x: _capture_with_hooks(layer, x, pre_hook=False))
_capture_variant("weights_averaged_over_heads", lambda layer, x: _capture_with_hooks(layer, x, per_head=False))
_capture_variant("hook_left_registered", lambda layer, x: _capture_with_hooks(layer, x, remove=False))
_capture_variant(
    "attention_recomputed_on_raw_input",
    lambda layer, x: layer.self_attn(x, x, x, need_weights=True, average_attn_weights=False)[1],
)


def _draw(weights, query_tokens, key_tokens, *, transpose=False, swap_labels=False, tick_labels=True):
    """A heatmap with knobs for the mistakes; returns the Axes."""
    import matplotlib.pyplot as plt

    matrix = weights.detach().cpu().numpy()  # (n_q, n_k)
    rows, columns = query_tokens, key_tokens
    row_name, column_name = ("key", "query") if swap_labels else ("query", "key")
    if transpose:
        matrix, rows, columns = matrix.T, key_tokens, query_tokens
        row_name, column_name = column_name, row_name
    fig, ax = plt.subplots()
    ax.imshow(matrix, vmin=0.0)
    if tick_labels:
        ax.set_yticks(range(len(rows)), labels=rows)
        ax.set_xticks(range(len(columns)), labels=columns)
    ax.set_ylabel(row_name)
    ax.set_xlabel(column_name)
    return ax


def _plot_variant(mistake: str, **knobs) -> None:
    def wrong(weights, query_tokens, key_tokens):
        return _draw(weights, query_tokens, key_tokens, **knobs)

    variant(mistake, "plot_attention")(PlotUnderTest(wrong))


_plot_variant("heatmap_transposed", transpose=True)
_plot_variant("axis_labels_swapped", swap_labels=True)
_plot_variant("token_labels_missing", tick_labels=False)

# ---------------------------------------------------------------------------------------
# The checks the notebook's test cells call
# ---------------------------------------------------------------------------------------


def check_capture_self_attention(capture_self_attention, suite: str = "visible") -> None:
    """Grade ``capture_self_attention(layer, x) -> (B, h, n, n)`` against
    ``attncourse.hooks.capture_attention``."""
    run_task_check("capture_self_attention", capture_self_attention, suite)


def check_plot_attention(plot_attention, suite: str = "visible") -> None:
    """Grade ``plot_attention(weights, query_tokens, key_tokens) -> Axes`` against
    ``attncourse.plot.attention_heatmap``."""
    run_task_check("plot_attention", plot_attention, suite)
