"""The checks that notebook test cells call, one per task.

Each ``check_<task>(student_function, suite="visible")`` runs the student's function and
the library's on the same seeded cases, prints a short line when everything agrees, and
raises ``AssertionError`` naming the failing case and the likely mistake otherwise.
``suite="hidden"`` runs the larger hidden suite (other seeds, more cases).
"""

from __future__ import annotations

from .assignments.ex01_stable_softmax import check_log_sum_exp, check_stable_softmax
from .assignments.ex02_dot_product import check_dot_product_attention, check_dot_scores
from .assignments.ex03_scaled_dot_product import (
    check_scaled_dot_product_attention,
    check_scaled_dot_scores,
)
from .assignments.ex04_additive_bilinear import (
    check_additive_attention,
    check_additive_scores,
    check_bilinear_scores,
)
from .assignments.ex05_masking import check_causal_mask, check_masked_softmax, check_padding_mask
from .assignments.ex06_multi_head import (
    check_merge_heads,
    check_multi_head_attention,
    check_split_heads,
)
from .assignments.ex07_attention_maps import check_capture_self_attention, check_plot_attention
from .assignments.ex08_efficient_attention import (
    check_blockwise_attention,
    check_online_softmax,
)
from .assignments.ex09_positions import (
    check_alibi_bias,
    check_rope,
    check_rope_attention,
    check_sinusoidal_encoding,
)

__all__ = [
    "check_stable_softmax",
    "check_log_sum_exp",
    "check_dot_scores",
    "check_dot_product_attention",
    "check_scaled_dot_scores",
    "check_scaled_dot_product_attention",
    "check_additive_scores",
    "check_bilinear_scores",
    "check_additive_attention",
    "check_padding_mask",
    "check_causal_mask",
    "check_masked_softmax",
    "check_split_heads",
    "check_merge_heads",
    "check_multi_head_attention",
    "check_capture_self_attention",
    "check_plot_attention",
    "check_online_softmax",
    "check_blockwise_attention",
    "check_sinusoidal_encoding",
    "check_rope",
    "check_alibi_bias",
    "check_rope_attention",
]
