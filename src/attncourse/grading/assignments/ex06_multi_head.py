"""ex06_multi_head: splitting and merging heads, and a multi-head attention module.

Tasks:
    split_heads(x, num_heads): (B, n, d_model) -> (B, h, n, d_head)
    merge_heads(x): (B, h, n, d_head) -> (B, n, h * d_head)
    MultiHeadAttention(embed_dim, num_heads), an nn.Module with nn.Linear layers q_proj,
        k_proj, v_proj, out_proj and forward(query, key, value, attn_mask=None) ->
        (output (B, L, d_model), weights per head (B, h, L, S)); attn_mask is boolean
        (L, S), True = may attend.

The module is graded (through ``ModuleUnderTest``, the task's adapter) against ``torch.nn.MultiheadAttention`` holding the same weights: a
case carries nn.MultiheadAttention's parameters (packed in_proj_weight (3E, E) and
in_proj_bias, out_proj weight and bias); the check builds the student's module, copies the
weights into its four projections and compares outputs and per-head weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...masks import mask_to_mha
from .. import cases as mk
from ..core import Case, Task, register_task, run_task_check
from ..mistakes import CATALOGUE, define, variant
from ..tripwire import ATTENTION_FAMILY, LIBRARY_FAMILY

CHAPTER = "06_multi_head"
FORBIDDEN = ATTENTION_FAMILY + LIBRARY_FAMILY
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")

# ---------------------------------------------------------------------------------------
# split_heads and merge_heads
# ---------------------------------------------------------------------------------------


def _split_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=61)
    hand = torch.arange(16, dtype=torch.float64).reshape(2, 2, 4)  # (B=2, n=2, d_model=4)
    return [
        Case("hand-sized, B=2, n=2, d_model=4, 2 heads", (hand, 2)),
        Case("random, B=2, n=3, d_model=6, 3 heads", (mk.randn(gen, 2, 3, 6), 3)),
        Case("float32, B=1, n=5, d_model=8, 2 heads", (mk.randn(gen, 1, 5, 8, dtype=torch.float32), 2)),
        Case("one head", (mk.randn(gen, 2, 4, 6), 1), visible=False),
        Case("B=3, n=5, d_model=12, 4 heads", (mk.randn(gen, 3, 5, 12), 4), visible=False),
    ]


def _merge_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=62)
    hand = torch.arange(16, dtype=torch.float64).reshape(2, 2, 2, 2)  # (B=2, h=2, n=2, d_head=2)
    return [
        Case("hand-sized, B=2, h=2, n=2, d_head=2", (hand,)),
        Case("random, B=2, h=3, n=4, d_head=2", (mk.randn(gen, 2, 3, 4, 2),)),
        Case("float32, B=1, h=2, n=5, d_head=3", (mk.randn(gen, 1, 2, 5, 3, dtype=torch.float32),)),
        Case("one head", (mk.randn(gen, 2, 1, 3, 4),), visible=False),
        Case("B=3, h=4, n=5, d_head=3", (mk.randn(gen, 3, 4, 5, 3),), visible=False),
    ]


def reference_split_heads(x, num_heads):
    B, n, d_model = x.shape
    return x.reshape(B, n, num_heads, d_model // num_heads).transpose(1, 2)  # (B, h, n, d_head)


def reference_merge_heads(x):
    B, h, n, d_head = x.shape
    return x.transpose(1, 2).reshape(B, n, h * d_head)  # (B, n, d_model)


SPLIT_HEADS = register_task(
    Task(
        name="split_heads",
        function_name="split_heads",
        reference=reference_split_heads,
        make_cases=_split_cases,
        result_names=("heads",),
        forbidden=FORBIDDEN,
        chapter=CHAPTER,
    )
)
MERGE_HEADS = register_task(
    Task(
        name="merge_heads",
        function_name="merge_heads",
        reference=reference_merge_heads,
        make_cases=_merge_cases,
        result_names=("merged",),
        forbidden=FORBIDDEN,
        chapter=CHAPTER,
    )
)

# ---------------------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------------------


def _torch_parameters(gen, E: int, dtype=torch.float64) -> tuple[torch.Tensor, ...]:
    """Random parameters of nn.MultiheadAttention(E, h): in_proj_weight (3E, E),
    in_proj_bias (3E,), out_proj.weight (E, E), out_proj.bias (E,)."""
    bound = 2 * math.sqrt(6.0 / (4 * E))  # twice xavier_uniform's bound: weights far from uniform
    return (
        (torch.rand(3 * E, E, generator=gen, dtype=torch.float64) * 2 - 1).mul(bound).to(dtype),
        mk.randn(gen, 3 * E, dtype=dtype, scale=0.1),
        (torch.rand(E, E, generator=gen, dtype=torch.float64) * 2 - 1).mul(bound).to(dtype),
        mk.randn(gen, E, dtype=dtype, scale=0.1),
    )


def _partial_mask(gen, L: int, S: int) -> torch.Tensor:
    """Boolean (L, S), True = may attend; every row keeps a key and drops a key, so that
    neither the mask nor its inverse leaves a row with nothing to attend to."""
    keep = torch.rand(L, S, generator=gen) < 0.5
    keep[:, 0], keep[:, -1] = True, False
    return keep


def _module_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=63)

    def inputs(h, B, L, S, E, dtype=torch.float64, scale=1.0):
        params = _torch_parameters(gen, E, dtype)
        query = mk.randn(gen, B, L, E, dtype=dtype, scale=scale)
        key = mk.randn(gen, B, S, E, dtype=dtype, scale=scale)
        value = mk.randn(gen, B, S, E, dtype=dtype, scale=scale)
        return (h,) + params + (query, key, value)

    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    return [
        Case("small, 2 heads, B=2, n_q=2, n_k=3, d_model=4", inputs(2, 2, 2, 3, 4)),
        Case("random, 3 heads, B=2, n_q=4, n_k=5, d_model=6, large inputs", inputs(3, 2, 4, 5, 6, scale=3.0)),
        Case(
            "a boolean attn_mask (n_q, n_k)",
            inputs(2, 2, 3, 5, 8),
            {"attn_mask": _partial_mask(gen, 3, 5)},
        ),
        Case("float32", inputs(2, 2, 3, 4, 8, dtype=torch.float32)),
        Case("one head", inputs(1, 2, 3, 4, 6), visible=False),
        Case("causal self-attention mask, 4 heads", inputs(4, 3, 4, 4, 8), {"attn_mask": causal}, visible=False),
        Case("one query, 8 heads", inputs(8, 2, 1, 6, 16), visible=False),
        Case(
            "huge inputs (scale 30): scores beyond the range of exp",
            inputs(2, 2, 3, 4, 4, scale=30.0),
            visible=False,
        ),
    ]


def _torch_mha(num_heads, in_w, in_b, out_w, out_b) -> nn.MultiheadAttention:
    """nn.MultiheadAttention (batch first) holding the given parameters."""
    E = out_w.shape[0]
    mha = nn.MultiheadAttention(E, num_heads, batch_first=True, dtype=out_w.dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(in_w)
        mha.in_proj_bias.copy_(in_b)
        mha.out_proj.weight.copy_(out_w)
        mha.out_proj.bias.copy_(out_b)
    return mha.eval()


def reference_multi_head_attention(num_heads, in_w, in_b, out_w, out_b, query, key, value, attn_mask=None):
    """nn.MultiheadAttention's output and per-head weights for these parameters."""
    mha = _torch_mha(num_heads, in_w, in_b, out_w, out_b)
    torch_mask = None if attn_mask is None else mask_to_mha(attn_mask)  # True = ignore
    return mha(query, key, value, attn_mask=torch_mask, need_weights=True, average_attn_weights=False)


class ModuleUnderTest:
    """The student's module class, called like the task's reference.

    It builds ``module_class(embed_dim, num_heads)``, moves it to the inputs' dtype, copies
    nn.MultiheadAttention's parameters into its ``q_proj``, ``k_proj``, ``v_proj`` and
    ``out_proj`` and runs ``forward(query, key, value[, attn_mask=...])``. ``__globals__``
    points at the student's code, so the delegation tripwire also patches names the
    student imported directly.
    """

    def __init__(self, module_class):
        self.module_class = module_class
        self.__name__ = getattr(module_class, "__name__", "MultiHeadAttention")
        forward = getattr(module_class, "forward", None)
        self.__globals__ = getattr(forward, "__globals__", None)

    def __call__(self, num_heads, in_w, in_b, out_w, out_b, query, key, value, attn_mask=None):
        E = out_w.shape[0]
        module = self.module_class(E, num_heads)
        if not isinstance(module, nn.Module):
            raise TypeError(f"{self.__name__} must be an nn.Module subclass, got {type(module).__name__}")
        module.to(dtype=query.dtype)
        load_torch_parameters(module, in_w, in_b, out_w, out_b)
        module.eval()
        if attn_mask is None:
            return module(query, key, value)
        return module(query, key, value, attn_mask=attn_mask)


def adapt_module_class(student_object):
    """The task's adapter: the student's class becomes a ``ModuleUnderTest``; callables
    that already take the case's arguments (the reference, the mistakes' variants) pass
    unchanged."""
    if isinstance(student_object, ModuleUnderTest) or getattr(student_object, "takes_case_arguments", False):
        return student_object
    return ModuleUnderTest(student_object)


def load_torch_parameters(module: nn.Module, in_w, in_b, out_w, out_b) -> None:
    """Copy nn.MultiheadAttention's packed parameters into the four projections."""
    missing = [
        name for name in PROJECTIONS if not isinstance(getattr(module, name, None), nn.Linear)
    ]
    if missing:
        raise AttributeError(
            "the module must have four nn.Linear(embed_dim, embed_dim) layers named "
            f"q_proj, k_proj, v_proj and out_proj (with bias); missing or not nn.Linear: {missing}"
        )
    E = out_w.shape[0]
    weights = list(in_w.split(E)) + [out_w]  # W_q, W_k, W_v (E, E) each, then W_o
    biases = list(in_b.split(E)) + [out_b]
    with torch.no_grad():
        for name, weight, bias in zip(PROJECTIONS, weights, biases):
            layer = getattr(module, name)
            if tuple(layer.weight.shape) != (E, E) or layer.bias is None:
                raise ValueError(
                    f"{name} must be nn.Linear({E}, {E}) with a bias, got weight "
                    f"{tuple(layer.weight.shape)} and bias {layer.bias is not None}"
                )
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)


MULTI_HEAD_ATTENTION = register_task(
    Task(
        name="multi_head_attention",
        function_name="MultiHeadAttention",
        reference=reference_multi_head_attention,
        make_cases=_module_cases,
        result_names=("output", "weights"),
        forbidden=FORBIDDEN,
        chapter=CHAPTER,
        adapt=adapt_module_class,
    )
)

# ---------------------------------------------------------------------------------------
# Mistakes of this assignment, and its variants of the generic ones
# ---------------------------------------------------------------------------------------


def define_once(name: str, hint: str):
    """Define a mistake unless another assignment already did (then keep its hint)."""
    return CATALOGUE[name] if name in CATALOGUE else define(name, hint)


define_once(
    "heads_reshape_without_transpose",
    "the heads were made with a reshape (view) alone: (B, n, d_model) -> (B, h, n, d_head) "
    "mixes positions and features. Reshape to (B, n, h, d_head) first, then "
    "transpose(1, 2); merging does the reverse: transpose(1, 2), then reshape.",
)
define_once(
    "heads_interleaved",
    "head m must own the block of columns m*d_head .. (m+1)*d_head - 1: reshape the last "
    "axis as (h, d_head), not (d_head, h), which deals the columns out to the heads in turn.",
)
define_once(
    "forgotten_output_projection",
    "the output projection is missing: after concatenating the heads, apply out_proj "
    "(W_o) to get the layer's output.",
)
define_once(
    "x_at_W_instead_of_W_T",
    "the weights follow nn.Linear, shape (out_features, in_features): W x is computed as "
    "x @ W.T, not x @ W (which only runs by chance when W is square, and gives the wrong "
    "numbers). Calling the nn.Linear layer does it for you.",
)
define_once(
    "weights_averaged_over_heads",
    "the weights must be returned per head, shape (B, h, n_q, n_k), not averaged over the "
    "heads (B, n_q, n_k) as nn.MultiheadAttention does by default.",
)
define_once(
    "missing_scale",
    "the scores are not scaled: divide each head's Q K^T by sqrt(d_head).",
)
define_once(
    "mask_ignored",
    "attn_mask is not used: positions where it is False must get no weight.",
)
define_once(
    "scale_by_model_width",
    "the scores of each head are divided by sqrt(d_model); they must be divided by "
    "sqrt(d_head) = sqrt(d_model / h), the size of the vectors each head compares.",
)


def _split(x, h, *, transpose=True, interleave=False):
    B, n, d_model = x.shape
    if not transpose:
        return x.reshape(B, h, n, d_model // h)  # the mistake: positions and features mixed
    if interleave:
        return x.reshape(B, n, d_model // h, h).permute(0, 3, 1, 2)  # (B, h, n, d_head)
    return x.reshape(B, n, h, d_model // h).transpose(1, 2)  # (B, h, n, d_head)


def _merge(x, *, transpose=True, interleave=False):
    B, h, n, d_head = x.shape
    if not transpose:
        return x.reshape(B, n, h * d_head)
    if interleave:
        return x.permute(0, 2, 3, 1).reshape(B, n, h * d_head)  # columns dealt out in turn
    return x.transpose(1, 2).reshape(B, n, h * d_head)  # (B, n, d_model)


@variant("heads_reshape_without_transpose", "split_heads")
def _split_no_transpose(x, num_heads):
    return _split(x, num_heads, transpose=False)


@variant("heads_interleaved", "split_heads")
def _split_interleaved(x, num_heads):
    return _split(x, num_heads, interleave=True)


@variant("dtype_not_kept", "split_heads")
def _split_other_dtype(x, num_heads):
    return _split(x, num_heads).to(mk.other_float_dtype(x.dtype))


@variant("heads_reshape_without_transpose", "merge_heads")
def _merge_no_transpose(x):
    return _merge(x, transpose=False)


@variant("heads_interleaved", "merge_heads")
def _merge_interleaved(x):
    return _merge(x, interleave=True)


@variant("dtype_not_kept", "merge_heads")
def _merge_other_dtype(x):
    return _merge(x).to(mk.other_float_dtype(x.dtype))


def _manual_mha(
    num_heads, in_w, in_b, out_w, out_b, query, key, value, attn_mask=None, *,
    transpose_heads=True, out_projection=True, weight_layout="nn.Linear",
    scale_size="d_head", softmax_dim=-1, use_mask=True, invert_mask=False,
    weights_form="per_head",
):
    """Multi-head attention from the parameters, with knobs for the mistakes."""
    E = out_w.shape[0]
    W_q, W_k, W_v = in_w.split(E)  # (E, E) each
    b_q, b_k, b_v = in_b.split(E)

    def linear(x, W, b):
        return (x @ W.T if weight_layout == "nn.Linear" else x @ W) + b

    q = _split(linear(query, W_q, b_q), num_heads, transpose=transpose_heads)  # (B, h, L, d_head)
    k = _split(linear(key, W_k, b_k), num_heads, transpose=transpose_heads)  # (B, h, S, d_head)
    v = _split(linear(value, W_v, b_v), num_heads, transpose=transpose_heads)  # (B, h, S, d_head)
    size = {"d_head": q.shape[-1], "d_model": E, "none": 1}[scale_size]
    scores = q @ k.transpose(-2, -1) / math.sqrt(size)  # (B, h, L, S)
    if attn_mask is not None and use_mask:
        remove = attn_mask if invert_mask else ~attn_mask
        scores = scores.masked_fill(remove, float("-inf"))
    weights = torch.softmax(scores, dim=softmax_dim)  # (B, h, L, S)
    merged = _merge(weights @ v, transpose=transpose_heads)  # (B, L, E)
    output = linear(merged, out_w, out_b) if out_projection else merged
    if weights_form == "averaged":
        weights = weights.mean(dim=1)  # (B, L, S)
    elif weights_form == "transposed":
        weights = weights.transpose(-2, -1)  # (B, h, S, L)
    return output, weights


def _module_variant(mistake: str, **knobs):
    """Register a wrong module (as a function of the case's arguments) for ``mistake``."""

    def wrong(num_heads, in_w, in_b, out_w, out_b, query, key, value, attn_mask=None):
        return _manual_mha(num_heads, in_w, in_b, out_w, out_b, query, key, value, attn_mask, **knobs)

    wrong.__name__ = f"_mha_{mistake}"
    wrong.takes_case_arguments = True
    variant(mistake, "multi_head_attention")(wrong)


_module_variant("heads_reshape_without_transpose", transpose_heads=False)
_module_variant("forgotten_output_projection", out_projection=False)
_module_variant("x_at_W_instead_of_W_T", weight_layout="x @ W")
_module_variant("weights_averaged_over_heads", weights_form="averaged")
_module_variant("weights_wrong_shape", weights_form="transposed")
_module_variant("softmax_over_batch", softmax_dim=0)
_module_variant("softmax_over_query_axis", softmax_dim=-2)
_module_variant("missing_scale", scale_size="none")
_module_variant("scale_by_model_width", scale_size="d_model")
_module_variant("inverted_mask", invert_mask=True)
_module_variant("mask_ignored", use_mask=False)


@variant("dtype_not_kept", "multi_head_attention")
def _mha_other_dtype(num_heads, in_w, in_b, out_w, out_b, query, key, value, attn_mask=None):
    output, weights = _manual_mha(num_heads, in_w, in_b, out_w, out_b, query, key, value, attn_mask)
    other = mk.other_float_dtype(query.dtype)
    return output.to(other), weights.to(other)


_mha_other_dtype.takes_case_arguments = True


# ---------------------------------------------------------------------------------------
# The checks the notebook's test cells call
# ---------------------------------------------------------------------------------------


def check_split_heads(split_heads, suite: str = "visible") -> None:
    """Grade ``split_heads(x, num_heads) -> (B, h, n, d_head)``."""
    run_task_check("split_heads", split_heads, suite)


def check_merge_heads(merge_heads, suite: str = "visible") -> None:
    """Grade ``merge_heads(x) -> (B, n, h * d_head)``."""
    run_task_check("merge_heads", merge_heads, suite)


def check_multi_head_attention(MultiHeadAttention, suite: str = "visible") -> None:
    """Grade the class ``MultiHeadAttention(embed_dim, num_heads)`` against
    ``nn.MultiheadAttention`` holding the same weights."""
    run_task_check("multi_head_attention", MultiHeadAttention, suite)
