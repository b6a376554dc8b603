"""Capture attention weights from any torch model with forward hooks.

``nn.TransformerEncoderLayer`` and ``nn.TransformerDecoderLayer`` call their
``nn.MultiheadAttention`` with ``need_weights=False``, so a plain forward hook sees no
weights. ``capture_attention`` adds a forward *pre*-hook that rewrites the call's keyword
arguments to ask for per-head weights, and a forward hook that records them and hands the
caller what it asked for. It also switches off torch's fused "fast path" for the duration,
which would otherwise skip the attention module's ``forward`` in inference mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from .modules import AdditiveAttention, MultiHeadAttention

__all__ = ["AttentionCapture", "capture_attention"]

# Positional order of nn.MultiheadAttention.forward after (query, key, value).
_MHA_LATER_ARGS = ("key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")


class AttentionCapture(Mapping):
    """Weights recorded during ``capture_attention``, keyed by module qualified name.

    ``capture[name]`` is the weights of the module's most recent call: (B, h, L, S) for
    multi-head modules ((h, L, S) for unbatched input), (B, L, S) for ``AdditiveAttention``.
    ``capture.calls[name]`` lists every call in order (a decoder called step by step
    records one entry per step).
    """

    def __init__(self) -> None:
        self.calls: dict[str, list[torch.Tensor]] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.calls[name][-1]

    def __iter__(self) -> Iterator[str]:
        return iter(self.calls)

    def __len__(self) -> int:
        return len(self.calls)

    def _record(self, name: str, weights: torch.Tensor) -> None:
        self.calls.setdefault(name, []).append(weights.detach())

    def __repr__(self) -> str:
        shapes = {name: tuple(self[name].shape) for name in self}
        return f"AttentionCapture({shapes})"


def _torch_mha_hooks(name: str, capture: AttentionCapture):
    requested: list[tuple[bool, bool]] = []  # what each pending call asked for

    def pre_hook(module, args, kwargs):
        args, kwargs = list(args), dict(kwargs)
        for arg_name, arg in zip(_MHA_LATER_ARGS, args[3:]):
            kwargs[arg_name] = arg
        args = args[:3]
        requested.append(
            (kwargs.get("need_weights", True), kwargs.get("average_attn_weights", True))
        )
        kwargs["need_weights"], kwargs["average_attn_weights"] = True, False
        return tuple(args), kwargs

    def hook(module, args, kwargs, output):
        need_weights, average = requested.pop()
        attn_output, weights = output  # weights: (B, h, L, S) or (h, L, S)
        capture._record(name, weights)
        if not need_weights:
            return attn_output, None
        return attn_output, weights.mean(dim=-3) if average else weights

    return pre_hook, hook


def _our_module_hooks(name: str, capture: AttentionCapture, has_heads: bool):
    requested: list[tuple[bool, bool]] = []

    def pre_hook(module, args, kwargs):
        kwargs = dict(kwargs)
        requested.append(
            (kwargs.get("need_weights", False), kwargs.get("average_attn_weights", True))
        )
        kwargs["need_weights"] = True
        if has_heads:
            kwargs["average_attn_weights"] = False
        return args, kwargs

    def hook(module, args, kwargs, output):
        need_weights, average = requested.pop()
        attn_output, weights = output
        capture._record(name, weights)
        if not need_weights:
            return attn_output, None
        if has_heads and average:
            weights = weights.mean(dim=1)
        return attn_output, weights

    return pre_hook, hook


@contextlib.contextmanager
def capture_attention(model: nn.Module) -> Iterator[AttentionCapture]:
    """Record the attention weights of every attention module inside ``model``.

    Covers ``torch.nn.MultiheadAttention`` (also inside ``nn.Transformer*`` layers, which
    call it with ``need_weights=False``) and the library's ``MultiHeadAttention`` and
    ``AdditiveAttention``. The model's outputs are unchanged: each call still returns
    what its caller asked for.

    Example::

        with capture_attention(model) as maps:
            model(x)
        maps["layers.0.self_attn"]  # (B, h, L, S)

    Yields:
        An ``AttentionCapture`` that fills during the forward passes inside the block.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    capture = AttentionCapture()
    handles = []
    for name, module in model.named_modules():
        name = name or type(module).__name__
        if isinstance(module, nn.MultiheadAttention):
            pre_hook, hook = _torch_mha_hooks(name, capture)
        elif isinstance(module, (MultiHeadAttention, AdditiveAttention)):
            pre_hook, hook = _our_module_hooks(
                name, capture, has_heads=isinstance(module, MultiHeadAttention)
            )
        else:
            continue
        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    fastpath_was_enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield capture
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath_was_enabled)
        for handle in handles:
            handle.remove()
