"""ex09_positions: the sinusoidal encoding, RoPE, ALiBi's bias, and attention with RoPE.

Tasks:
    sinusoidal_encoding(n, d, base=10000.0) -> float64 (n, d)
        row p: sin(p theta_i) at feature 2i, cos(p theta_i) at 2i + 1, theta_i = base^(-2i/d)
    rope(x, positions, base=10000.0, interleaved=False) -> x rotated, shape and dtype of x
        feature pair i turned by positions[p] * theta_i; pairs (i, i + E/2), or (2i, 2i + 1)
        when interleaved; ValueError for an odd E or a negative position
    alibi_bias(num_heads, n_q, n_k, alignment="top_left") -> float64 (h, n_q, n_k)
        -m_h * (i + offset - j) for keys at or before the query, -inf after it; slopes of
        Press et al. (with their rule for h not a power of two); ValueError for an unknown
        alignment
    rope_attention(query, key, value, interleaved=False) -> output (..., n_q, d_v)
        the n_q queries are the last n_q of n_k positions (decoding with a cache): rotate
        queries at n_k - n_q .. n_k - 1 and keys at 0 .. n_k - 1 (not the values), then
        causal (bottom-right) scaled dot-product attention

Cases use a base other than 10000 somewhere, n_q != n_k, positions that do not start at 0,
head counts that are and are not powers of two, and d_v != d_k as well as d_v = d_k (so
that rotated values show).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ... import functional, masks, positions
from .. import cases as mk
from ..core import Case, Task, register_task, run_task_check
from ..mistakes import define, variant
from ..tripwire import ATTENTION_FAMILY, LIBRARY_FAMILY

CHAPTER = "09_positions"
FORBIDDEN = LIBRARY_FAMILY + ("attncourse.positions.*", "attncourse.masks.*")
ATTENTION_FORBIDDEN = ATTENTION_FAMILY + FORBIDDEN


def _hidden(cases: list[Case]) -> list[Case]:
    return [dataclasses.replace(c, visible=False) for c in cases]


# ---------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------


def _sinusoidal_cases(seed: int) -> list[Case]:
    del seed  # no random inputs: every suite checks fixed sizes
    visible = [
        Case("hand-sized, n=3, d=4", (3, 4)),
        Case("n=8, d=6", (8, 6)),
        Case("n=5, d=8, base=100", (5, 8), {"base": 100.0}),
    ]
    hidden = [
        Case("one position, n=1, d=2", (1, 2)),
        Case("n=50, d=16 (slow frequencies)", (50, 16)),
        Case("n=12, d=10, base=30", (12, 10), {"base": 30.0}),
        Case("n=4, d=12, base=1e6", (4, 12), {"base": 1e6}),
    ]
    return visible + _hidden(hidden)


def _rope_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=91)

    def positions_from(start: int, n: int) -> torch.Tensor:
        return torch.arange(start, start + n)

    hand = mk.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, 0.0]])
    visible = [
        Case("hand-sized, 3 tokens at positions 0, 1, 2, E=4", (hand, positions_from(0, 3))),
        Case("n=5, E=6, positions 4..8", (mk.randn(gen, 5, 6), positions_from(4, 5))),
        Case(
            "interleaved, n=4, E=8, positions 2..5",
            (mk.randn(gen, 4, 8), positions_from(2, 4)),
            {"interleaved": True},
        ),
        Case(
            "batch and heads (2, 3, 4, 8), base=100",
            (mk.randn(gen, 2, 3, 4, 8), positions_from(1, 4)),
            {"base": 100.0},
        ),
        Case("float32, n=6, E=4", (mk.randn(gen, 6, 4, dtype=torch.float32), positions_from(0, 6))),
        Case("odd E = 5", (mk.randn(gen, 3, 5), positions_from(0, 3)), raises=ValueError),
    ]
    hidden = [
        Case(
            "positions out of order, interleaved, base=50",
            (mk.randn(gen, 2, 5, 6), torch.tensor([7, 0, 3, 12, 5])),
            {"base": 50.0, "interleaved": True},
        ),
        Case("E=2, one pair, positions 10..13", (mk.randn(gen, 4, 2), positions_from(10, 4))),
        Case(
            "batch and heads (2, 2, 5, 10), interleaved",
            (mk.randn(gen, 2, 2, 5, 10), positions_from(3, 5)),
            {"interleaved": True},
        ),
        Case("far positions 1000..1003, E=12", (mk.randn(gen, 4, 12), positions_from(1000, 4))),
        Case(
            "float32, interleaved, base=500",
            (mk.randn(gen, 3, 4, 6, dtype=torch.float32), positions_from(2, 4)),
            {"base": 500.0, "interleaved": True},
        ),
        Case("a negative position", (mk.randn(gen, 3, 4), torch.tensor([0, -1, 1])), raises=ValueError),
        Case("odd E = 3, interleaved", (mk.randn(gen, 2, 3), positions_from(0, 2)), {"interleaved": True}, raises=ValueError),
    ]
    return visible + _hidden(hidden)


def _alibi_cases(seed: int) -> list[Case]:
    del seed
    visible = [
        Case("hand-sized, 2 heads, n_q=n_k=3", (2, 3, 3)),
        Case("4 heads, n_q=3, n_k=5, bottom_right", (4, 3, 5), {"alignment": "bottom_right"}),
        Case("8 heads, n_q=4, n_k=6, top_left", (8, 4, 6), {"alignment": "top_left"}),
        Case("6 heads (not a power of two), n_q=n_k=4", (6, 4, 4)),
        Case("an unknown alignment, 'middle'", (2, 3, 4), {"alignment": "middle"}, raises=ValueError),
    ]
    hidden = [
        Case("12 heads, n_q=2, n_k=6, bottom_right", (12, 2, 6), {"alignment": "bottom_right"}),
        Case("3 heads, n_q=5, n_k=3, bottom_right (first rows see nothing)", (3, 5, 3), {"alignment": "bottom_right"}),
        Case("1 head, one new token, a cache of 6", (1, 1, 7), {"alignment": "bottom_right"}),
        Case("5 heads, n_q=6, n_k=4, top_left", (5, 6, 4)),
        Case("16 heads, n_q=n_k=2", (16, 2, 2)),
        Case("an unknown alignment, 'bottom'", (2, 3, 4), {"alignment": "bottom"}, raises=ValueError),
    ]
    return visible + _hidden(hidden)


def _rope_attention_cases(seed: int) -> list[Case]:
    gen = mk.generator(seed, salt=93)

    def qkv(*batch: int, L: int, S: int, E: int, Ev: int, dtype=torch.float64):
        return (
            mk.randn(gen, *batch, L, E, dtype=dtype),
            mk.randn(gen, *batch, S, E, dtype=dtype),
            mk.randn(gen, *batch, S, Ev, dtype=dtype),
        )

    hand_query = mk.tensor([[1.0, 0.0], [0.0, 1.0]])
    hand_key = mk.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    hand_value = mk.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    visible = [
        Case("hand-sized, n_q=2, n_k=3, d_k=d_v=2", (hand_query, hand_key, hand_value)),
        Case("self-attention, n_q=n_k=5, d_k=d_v=4", qkv(L=5, S=5, E=4, Ev=4)),
        Case("decoding, n_q=2 after 4 cached, d_k=6, d_v=6", qkv(L=2, S=6, E=6, Ev=6)),
        Case("interleaved, n_q=3, n_k=7, d_k=4, d_v=4", qkv(L=3, S=7, E=4, Ev=4), {"interleaved": True}),
        Case("batch and heads (2, 3), n_q=n_k=4, d_k=d_v=6", qkv(2, 3, L=4, S=4, E=6, Ev=6)),
    ]
    hidden = [
        Case("one new token after 7 cached, d_k=d_v=8", qkv(2, L=1, S=8, E=8, Ev=8)),
        Case("n_q=3, n_k=6, d_k=4, d_v=3 (values cannot be rotated)", qkv(L=3, S=6, E=4, Ev=3)),
        Case("interleaved, batch (2, 2), n_q=4, n_k=9, d_k=d_v=6", qkv(2, 2, L=4, S=9, E=6, Ev=6), {"interleaved": True}),
        Case("float32, n_q=n_k=6, d_k=d_v=4", qkv(L=6, S=6, E=4, Ev=4, dtype=torch.float32)),
    ]
    return visible + _hidden(hidden)


# ---------------------------------------------------------------------------------------
# References (the library) and tasks
# ---------------------------------------------------------------------------------------


def reference_sinusoidal_encoding(n, d, base=10000.0):
    return positions.sinusoidal_encoding(n, d, base, dtype=torch.float64)


def reference_rope(x, positions_, base=10000.0, interleaved=False):
    return positions.rope(x, positions_, base, interleaved)


def reference_alibi_bias(num_heads, n_q, n_k, alignment="top_left"):
    return positions.alibi_bias(num_heads, n_q, n_k, alignment=alignment, dtype=torch.float64)


def reference_rope_attention(query, key, value, interleaved=False):
    L, S = query.shape[-2], key.shape[-2]
    q = positions.rope(query, torch.arange(S - L, S), interleaved=interleaved)  # the last L positions
    k = positions.rope(key, interleaved=interleaved)  # positions 0 .. S - 1
    mask = masks.causal_mask(L, S, alignment="bottom_right")
    return functional.scaled_dot_product_attention(q, k, value, attn_mask=mask)


register_task(
    Task(
        name="sinusoidal_encoding",
        function_name="sinusoidal_encoding",
        reference=reference_sinusoidal_encoding,
        make_cases=_sinusoidal_cases,
        result_names=("encoding",),
        forbidden=FORBIDDEN,
        chapter=CHAPTER,
    )
)
register_task(
    Task(
        name="rope",
        function_name="rope",
        reference=reference_rope,
        make_cases=_rope_cases,
        result_names=("rotated",),
        forbidden=FORBIDDEN,
        chapter=CHAPTER,
    )
)
register_task(
    Task(
        name="alibi_bias",
        function_name="alibi_bias",
        reference=reference_alibi_bias,
        make_cases=_alibi_cases,
        result_names=("bias",),
        forbidden=FORBIDDEN,
        chapter=CHAPTER,
    )
)
register_task(
    Task(
        name="rope_attention",
        function_name="rope_attention",
        reference=reference_rope_attention,
        make_cases=_rope_attention_cases,
        result_names=("output",),
        forbidden=ATTENTION_FORBIDDEN,
        chapter=CHAPTER,
    )
)

# ---------------------------------------------------------------------------------------
# Mistakes and their variants
# ---------------------------------------------------------------------------------------

define(
    "table_not_float64",
    "the table must be float64: torch creates float32 tensors unless told otherwise, so "
    "pass dtype=torch.float64 to torch.arange (or convert before taking sin and cos).",
)
define(
    "sin_cos_swapped",
    "sine and cosine are swapped: feature 2i (even) holds sin(p theta_i) and feature 2i + 1 "
    "(odd) holds cos(p theta_i), so position 0 encodes as (0, 1, 0, 1, ...).",
)
define(
    "frequency_exponent_i_over_d",
    "the frequencies use the exponent i/d instead of 2i/d: pair i (features 2i and 2i + 1) "
    "turns at theta_i = base ** (-2 * i / d), so the last pair is close to 1/base.",
)
define(
    "frequency_per_feature",
    "every feature got its own frequency (exponent c/d for feature c): a sine and the cosine "
    "next to it share one frequency, theta_i = base ** (-2 * i / d) for features 2i and 2i + 1.",
)
define(
    "sin_cos_in_halves",
    "the sines fill the first half and the cosines the second half of each row; this "
    "exercise interleaves them: sin at the even features, cos at the odd ones.",
)
define(
    "positions_start_at_one",
    "the positions start at 1; they run 0 .. n - 1, so row 0 is (0, 1, 0, 1, ...).",
)
define(
    "base_ignored",
    "the base argument is ignored (10000 is used whatever is passed): compute theta_i from "
    "base ** (-2 * i / d).",
)
define(
    "rope_minus_angle",
    "the rotation goes the wrong way (by minus the angle): a pair (a, b) becomes "
    "(a cos phi - b sin phi, a sin phi + b cos phi).",
)
define(
    "rope_layouts_mixed",
    "the two layouts are mixed up: interleaved=False pairs feature i with i + E/2 (Llama), "
    "interleaved=True pairs 2i with 2i + 1 (the RoFormer paper, GPT-J).",
)
define(
    "rope_interleaved_ignored",
    "the interleaved argument is ignored: with interleaved=True pair features 2i and 2i + 1.",
)
define(
    "rope_positions_ignored",
    "the positions argument is ignored (0 .. n - 1 is used): turn row p by positions[p] * "
    "theta_i, so that queries decoded after a cache get their true positions.",
)
define(
    "rope_pair_halves_swapped",
    "the halves of each pair are swapped in the result: a pair (a, b) turned by phi is "
    "(a cos phi - b sin phi, a sin phi + b cos phi), written back to the features (a, b) "
    "came from.",
)
define(
    "alibi_sign_flipped",
    "the bias has the wrong sign: ALiBi subtracts m_h times the distance, so keys further "
    "in the past get lower scores (-m_h * (i + offset - j)).",
)
define(
    "alibi_future_not_hidden",
    "keys after the query are not hidden: ALiBi is causal here, so entries with j > i + "
    "offset must be -inf (the bias is also the causal mask).",
)
define(
    "alibi_distance_not_clamped",
    "for keys after the query the distance i + offset - j is negative, which turns the "
    "penalty into a bonus; those keys must be hidden with -inf.",
)
define(
    "alibi_slopes_linear",
    "the slopes grow linearly (k * 2^(-8/h)) instead of geometrically: head k has slope "
    "(2^(-8/h)) ** k, for 8 heads 1/2, 1/4, ..., 1/256.",
)
define(
    "alibi_power_of_two_rule_ignored",
    "for a number of heads h that is not a power of two, Press et al. take the slopes of "
    "the power of two p below h, then every other slope of 2p until there are h.",
)
define(
    "alibi_alignment_ignored",
    "the alignment is ignored: with 'bottom_right' query i sits at position i + n_k - n_q "
    "(the last query lines up with the last key).",
)
define(
    "alibi_slopes_reversed",
    "the slopes are in reverse order: head 1 has the largest slope 2^(-8/h), and they "
    "shrink from there.",
)
define(
    "rope_values_rotated",
    "the values were rotated too: RoPE turns only queries and keys, whose dot product then "
    "depends on the offset; the values are averaged as they are.",
)
define(
    "rope_query_offset_forgotten",
    "the queries were rotated as if they sat at positions 0 .. n_q - 1; they are the last "
    "n_q of n_k positions: n_k - n_q .. n_k - 1.",
)
define(
    "rope_keys_not_rotated",
    "only the queries were rotated: rotate the keys as well (at positions 0 .. n_k - 1), "
    "otherwise scores depend on the query's position alone.",
)
define(
    "rope_attention_top_left",
    "the causal mask is top-left aligned: the queries are the last n_q positions, so query "
    "i may see keys 0 .. i + n_k - n_q (bottom-right alignment).",
)
define(
    "rope_attention_not_causal",
    "there is no causal mask: a query may not see keys after its own position.",
)


# -- sinusoidal_encoding -------------------------------------------------------------------


def _table(n, d, base=10000.0, *, swap=False, exponent=2.0, per_feature=False, halves=False, start=0):
    pos = torch.arange(start, start + n, dtype=torch.float64)[:, None]  # (n, 1)
    pair = torch.arange(d // 2, dtype=torch.float64)  # (d/2,)
    theta = base ** (-exponent * pair / d)  # (d/2,)
    sin, cos = torch.sin(pos * theta), torch.cos(pos * theta)  # (n, d/2) each
    if per_feature:
        feature = torch.arange(d, dtype=torch.float64)
        angles = pos * base ** (-feature / d)  # (n, d)
        sin, cos = torch.sin(angles[:, 0::2]), torch.cos(angles[:, 1::2])
    if swap:
        sin, cos = cos, sin
    if halves:
        return torch.cat([sin, cos], dim=-1)
    return torch.stack([sin, cos], dim=-1).flatten(-2)  # (n, d)


@variant("sin_cos_swapped", "sinusoidal_encoding")
def _sin_cos_swapped(n, d, base=10000.0):
    return _table(n, d, base, swap=True)


@variant("frequency_exponent_i_over_d", "sinusoidal_encoding")
def _exponent_i_over_d(n, d, base=10000.0):
    return _table(n, d, base, exponent=1.0)


@variant("frequency_per_feature", "sinusoidal_encoding")
def _per_feature(n, d, base=10000.0):
    return _table(n, d, base, per_feature=True)


@variant("sin_cos_in_halves", "sinusoidal_encoding")
def _in_halves(n, d, base=10000.0):
    return _table(n, d, base, halves=True)


@variant("positions_start_at_one", "sinusoidal_encoding")
def _from_one(n, d, base=10000.0):
    return _table(n, d, base, start=1)


@variant("base_ignored", "sinusoidal_encoding")
def _base_ignored(n, d, base=10000.0):
    return _table(n, d, 10000.0)


@variant("table_not_float64", "sinusoidal_encoding")
def _table_float32(n, d, base=10000.0):
    return _table(n, d, base).float()


# -- rope ----------------------------------------------------------------------------------


def _rope(x, positions_, base=10000.0, interleaved=False, *, sign=1.0, exponent=2.0,
          ignore_positions=False, swap_halves=False):
    E = x.shape[-1]
    if E % 2:
        raise ValueError(f"E must be even, got {E}")
    if bool((torch.as_tensor(positions_) < 0).any()):
        raise ValueError("positions must be >= 0")
    n = x.shape[-2]
    pos = torch.arange(n) if ignore_positions else positions_
    theta = base ** (-exponent * torch.arange(E // 2, dtype=x.dtype) / E)  # (E/2,)
    phi = pos.to(x.dtype)[:, None] * theta * sign  # (n, E/2)
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        a, b = x[..., : E // 2], x[..., E // 2 :]
    new_a, new_b = a * phi.cos() - b * phi.sin(), a * phi.sin() + b * phi.cos()
    if swap_halves:
        new_a, new_b = new_b, new_a
    if interleaved:
        return torch.stack([new_a, new_b], dim=-1).flatten(-2)
    return torch.cat([new_a, new_b], dim=-1)


@variant("rope_minus_angle", "rope")
def _rope_minus(x, positions_, base=10000.0, interleaved=False):
    return _rope(x, positions_, base, interleaved, sign=-1.0)


@variant("rope_layouts_mixed", "rope")
def _rope_mixed(x, positions_, base=10000.0, interleaved=False):
    return _rope(x, positions_, base, not interleaved)


@variant("rope_interleaved_ignored", "rope")
def _rope_halves_always(x, positions_, base=10000.0, interleaved=False):
    return _rope(x, positions_, base, False)


@variant("rope_positions_ignored", "rope")
def _rope_arange(x, positions_, base=10000.0, interleaved=False):
    return _rope(x, positions_, base, interleaved, ignore_positions=True)


@variant("frequency_exponent_i_over_d", "rope")
def _rope_exponent(x, positions_, base=10000.0, interleaved=False):
    return _rope(x, positions_, base, interleaved, exponent=1.0)


@variant("base_ignored", "rope")
def _rope_base_ignored(x, positions_, base=10000.0, interleaved=False):
    return _rope(x, positions_, 10000.0, interleaved)


@variant("rope_pair_halves_swapped", "rope")
def _rope_swapped(x, positions_, base=10000.0, interleaved=False):
    return _rope(x, positions_, base, interleaved, swap_halves=True)


@variant("dtype_not_kept", "rope")
def _rope_float64(x, positions_, base=10000.0, interleaved=False):
    return _rope(x.to(mk.other_float_dtype(x.dtype)), positions_, base, interleaved)


# -- alibi_bias ------------------------------------------------------------------------------


def _geometric(n):
    return [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]


def _paper_slopes(h):
    power = 2 ** int(math.floor(math.log2(h)))
    if power == h:
        return _geometric(h)
    return _geometric(power) + _geometric(2 * power)[0::2][: h - power]


def _alibi(num_heads, n_q, n_k, alignment="top_left", *, slopes=None, sign=-1.0, future="hide",
           ignore_alignment=False):
    if alignment not in ("top_left", "bottom_right"):
        raise ValueError(f"alignment must be 'top_left' or 'bottom_right', got {alignment!r}")
    offset = n_k - n_q if alignment == "bottom_right" and not ignore_alignment else 0
    m = torch.tensor(slopes if slopes is not None else _paper_slopes(num_heads), dtype=torch.float64)
    distance = (torch.arange(n_q)[:, None] + offset - torch.arange(n_k)[None, :]).to(torch.float64)
    if future == "zero":
        bias = sign * m[:, None, None] * distance.clamp(min=0)
        return bias + 0.0  # no -inf: future keys get bias 0
    bias = sign * m[:, None, None] * distance  # (h, n_q, n_k)
    if future == "keep":
        return bias
    return bias.masked_fill(distance < 0, float("-inf"))


@variant("alibi_sign_flipped", "alibi_bias")
def _alibi_plus(num_heads, n_q, n_k, alignment="top_left"):
    return _alibi(num_heads, n_q, n_k, alignment, sign=1.0)


@variant("alibi_future_not_hidden", "alibi_bias")
def _alibi_future_zero(num_heads, n_q, n_k, alignment="top_left"):
    return _alibi(num_heads, n_q, n_k, alignment, future="zero")


@variant("alibi_distance_not_clamped", "alibi_bias")
def _alibi_future_bonus(num_heads, n_q, n_k, alignment="top_left"):
    return _alibi(num_heads, n_q, n_k, alignment, future="keep")


@variant("alibi_slopes_linear", "alibi_bias")
def _alibi_linear(num_heads, n_q, n_k, alignment="top_left"):
    ratio = 2.0 ** (-8.0 / num_heads)
    return _alibi(num_heads, n_q, n_k, alignment, slopes=[ratio * k for k in range(1, num_heads + 1)])


@variant("alibi_power_of_two_rule_ignored", "alibi_bias")
def _alibi_no_rule(num_heads, n_q, n_k, alignment="top_left"):
    return _alibi(num_heads, n_q, n_k, alignment, slopes=_geometric(num_heads))


@variant("alibi_alignment_ignored", "alibi_bias")
def _alibi_top_left(num_heads, n_q, n_k, alignment="top_left"):
    return _alibi(num_heads, n_q, n_k, alignment, ignore_alignment=True)


@variant("alibi_slopes_reversed", "alibi_bias")
def _alibi_reversed(num_heads, n_q, n_k, alignment="top_left"):
    return _alibi(num_heads, n_q, n_k, alignment, slopes=_paper_slopes(num_heads)[::-1])


# -- rope_attention --------------------------------------------------------------------------


def _attend(query, key, value, interleaved=False, *, rotate_values=False, query_offset=True,
            rotate_keys=True, alignment="bottom_right"):
    """Attention with RoPE from plain tensor operations (variants may not call the library,
    which the tripwire refuses)."""
    L, S = query.shape[-2], key.shape[-2]
    q_positions = torch.arange(S - L, S) if query_offset else torch.arange(L)
    q = _rope(query, q_positions, interleaved=interleaved)
    k = _rope(key, torch.arange(S), interleaved=interleaved) if rotate_keys else key
    v = _rope(value, torch.arange(S), interleaved=interleaved) if rotate_values else value
    scores = q @ k.transpose(-2, -1) / math.sqrt(query.shape[-1])  # (..., L, S)
    if alignment is not None:
        offset = S - L if alignment == "bottom_right" else 0
        visible = torch.arange(S)[None, :] <= torch.arange(L)[:, None] + offset  # (L, S)
        scores = scores.masked_fill(~visible, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


@variant("rope_values_rotated", "rope_attention")
def _attend_values_rotated(query, key, value, interleaved=False):
    return _attend(query, key, value, interleaved, rotate_values=True)


@variant("rope_query_offset_forgotten", "rope_attention")
def _attend_no_offset(query, key, value, interleaved=False):
    return _attend(query, key, value, interleaved, query_offset=False)


@variant("rope_keys_not_rotated", "rope_attention")
def _attend_keys_plain(query, key, value, interleaved=False):
    return _attend(query, key, value, interleaved, rotate_keys=False)


@variant("rope_attention_top_left", "rope_attention")
def _attend_top_left(query, key, value, interleaved=False):
    return _attend(query, key, value, interleaved, alignment="top_left")


@variant("rope_attention_not_causal", "rope_attention")
def _attend_everything(query, key, value, interleaved=False):
    return _attend(query, key, value, interleaved, alignment=None)


@variant("rope_layouts_mixed", "rope_attention")
def _attend_layouts_mixed(query, key, value, interleaved=False):
    return _attend(query, key, value, not interleaved)


# ---------------------------------------------------------------------------------------
# The checks the notebook's test cells call
# ---------------------------------------------------------------------------------------


def check_sinusoidal_encoding(sinusoidal_encoding, suite: str = "visible") -> None:
    """Grade ``sinusoidal_encoding(n, d, base=10000.0) -> float64 (n, d)``."""
    run_task_check("sinusoidal_encoding", sinusoidal_encoding, suite)


def check_rope(rope, suite: str = "visible") -> None:
    """Grade ``rope(x, positions, base=10000.0, interleaved=False) -> rotated x``."""
    run_task_check("rope", rope, suite)


def check_alibi_bias(alibi_bias, suite: str = "visible") -> None:
    """Grade ``alibi_bias(num_heads, n_q, n_k, alignment="top_left") -> float64 (h, n_q, n_k)``."""
    run_task_check("alibi_bias", alibi_bias, suite)


def check_rope_attention(rope_attention, suite: str = "visible") -> None:
    """Grade ``rope_attention(query, key, value, interleaved=False) -> output``."""
    run_task_check("rope_attention", rope_attention, suite)
