"""Input checks shared by the public entry points.

Every public function of the library validates its arguments once, here, and raises
``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape, value or
device) with a message that names the argument, says what was expected and shows what
arrived. Inner helpers assume their inputs were checked.
"""

from __future__ import annotations

from typing import Sequence

import torch


def describe(x: torch.Tensor) -> str:
    """A short description of a tensor for error messages: shape, dtype, device."""
    return f"shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device}"


def require_tensor(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def require_floating(name: str, x: object) -> torch.Tensor:
    require_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or "
            f"float64), got dtype {x.dtype}"
        )
    return x


def require_min_dims(name: str, x: torch.Tensor, ndim: int, layout: str) -> None:
    if x.dim() < ndim:
        raise ValueError(
            f"{name} must have at least {ndim} dimensions {layout}, got shape {tuple(x.shape)}"
        )


def require_same_dtype_device(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
    first_name, first = names[0], tensors[0]
    for name, t in zip(names[1:], tensors[1:]):
        if t.dtype != first.dtype:
            raise TypeError(
                f"{name} must have the same dtype as {first_name} ({first.dtype}), got {t.dtype}"
            )
        if t.device != first.device:
            raise ValueError(
                f"{name} must be on the same device as {first_name} ({first.device}), "
                f"got {t.device}"
            )


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...] | None:
    """The shape that ``shapes`` broadcast to under torch's rules, or None if they do not.

    Plain Python on tuples: ``torch.broadcast_shapes`` costs about a hundred microseconds a
    call, more than a small fused attention kernel, and these checks run on every call.
    """
    if all(shape == shapes[0] for shape in shapes[1:]):  # the common case
        return tuple(shapes[0]) if shapes else ()
    ndim = max(len(shape) for shape in shapes)
    result = [1] * ndim
    for shape in shapes:
        for axis, size in enumerate(shape, start=ndim - len(shape)):  # right-aligned
            if size != 1 and result[axis] not in (1, size):
                return None
            if size != 1:
                result[axis] = size
    return tuple(result)


def broadcast_batch(names: Sequence[str], shapes: Sequence[torch.Size]) -> torch.Size:
    """Broadcast the leading (batch) dimensions of several tensors or explain why not."""
    batch = broadcast_shapes(*shapes)
    if batch is None:
        listed = ", ".join(f"{n} {tuple(s)}" for n, s in zip(names, shapes))
        raise ValueError(f"the batch dimensions (all but the last two) must broadcast, got {listed}")
    return torch.Size(batch)


def check_mask(
    mask: object, target_shape: Sequence[int], like: torch.Tensor, name: str = "attn_mask"
) -> torch.Tensor:
    """Check a mask in the library's convention against scores of ``target_shape``.

    A boolean mask is True where a query may attend to a key; a floating mask is added
    to the scores. Either must broadcast to ``target_shape`` without enlarging it, live on
    the device of ``like`` and, if floating, have its dtype.
    """
    require_tensor(name, mask)
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(
            f"{name} must be a boolean mask (True = may attend) or a floating mask added "
            f"to the scores, got dtype {mask.dtype}"
        )
    if mask.device != like.device:
        raise ValueError(
            f"{name} must be on the device of the inputs ({like.device}), got {mask.device}"
        )
    if mask.is_floating_point() and mask.dtype != like.dtype:
        raise TypeError(
            f"a floating {name} must have the dtype of the inputs ({like.dtype}), got {mask.dtype}"
        )
    target = tuple(target_shape)
    if mask.dim() > len(target) or broadcast_shapes(mask.shape, target) != target:
        raise ValueError(
            f"{name} must broadcast to the shape of the scores {target} "
            f"(batch..., n_q, n_k), got shape {tuple(mask.shape)}"
        )
    return mask


def type_name(value: object) -> str:
    """The type of ``value`` for messages: ``int``, or ``numpy.bool`` for other modules."""
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def require_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a Python bool, got {type_name(value)}")
    return value


def check_dropout(dropout_p: object, name: str = "dropout_p") -> float:
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(dropout_p).__name__}")
    if not 0.0 <= float(dropout_p) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {dropout_p}")
    return float(dropout_p)


def check_scale(scale: object) -> float | None:
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a positive float or None, got {type(scale).__name__}")
    if not float(scale) > 0.0 or float(scale) == float("inf"):
        raise ValueError(f"scale must be a positive finite float or None, got {scale}")
    return float(scale)


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value
