"""attncourse: the companion library of an open course on attention mechanisms.

Modules:
    functional  score functions, the masked softmax and attention mechanisms as functions
    masks       causal and padding masks, converters to and from nn.MultiheadAttention
    modules     AdditiveAttention and MultiHeadAttention as nn.Module
    reference   NumPy float64 versions that read like the formulas (the test oracle)
    positions   sinusoidal encoding, rotary embedding (RoPE) and ALiBi's biases
    hooks       capture attention weights from any torch model
    plot        heatmaps of weights and masks (imports matplotlib when first used)
"""

__version__ = "0.1.0"

from . import functional, hooks, masks, modules, positions, reference  # noqa: F401
from .functional import (  # noqa: F401
    additive_attention,
    dot_product_attention,
    general_attention,
    masked_softmax,
    scaled_dot_product_attention,
)
from .hooks import capture_attention  # noqa: F401
from .masks import causal_mask, padding_mask  # noqa: F401
from .modules import AdditiveAttention, MultiHeadAttention  # noqa: F401
from .efficient import KVCache, blockwise_attention  # noqa: F401
