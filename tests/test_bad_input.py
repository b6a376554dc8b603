"""The catalogue of bad inputs: each raises TypeError or ValueError whose message names the
argument, says what was expected and shows what arrived."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch

from attncourse import functional as AF
from attncourse import masks as M
from attncourse import positions as P
from attncourse.hooks import capture_attention
from attncourse.modules import AdditiveAttention, MultiHeadAttention


def t(*shape: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """A tensor of the given shape; only shapes, dtypes and devices matter here."""
    return torch.zeros(*shape, dtype=dtype, device=device)


def keep(*shape: int, device="cpu") -> torch.Tensor:
    return torch.ones(*shape, dtype=torch.bool, device=device)


def sdpa(**changes):
    """Call scaled_dot_product_attention on good inputs (2, 3, 4) / (2, 5, 4) / (2, 5, 6),
    with some arguments replaced."""
    arguments = {"query": t(2, 3, 4), "key": t(2, 5, 4), "value": t(2, 5, 6), **changes}
    return lambda: AF.scaled_dot_product_attention(**arguments)


def mha_call(layer_kwargs=None, **changes):
    """Call a MultiHeadAttention(8, 2) on good inputs (2, 3, 8), with some replaced."""
    layer = MultiHeadAttention(8, 2, **(layer_kwargs or {}))
    arguments = {"query": t(2, 3, 8), "key": t(2, 5, 8), "value": t(2, 5, 8), **changes}
    return lambda: layer(**arguments)


@dataclass
class Bad:
    """One bad input: what to call, the exception, and words the message must contain."""

    name: str
    call: Callable[[], object]
    error: type[Exception]
    argument: str  # the argument the message must name
    arrived: str  # how the message shows what arrived


CATALOGUE = [
    # -- not tensors, not floating ---------------------------------------------------------
    Bad("query-is-a-list", sdpa(query=[[1.0]]), TypeError, "query", "list"),
    Bad("key-is-an-int-tensor", sdpa(key=t(2, 5, 4, dtype=torch.int64)), TypeError, "key", "torch.int64"),
    Bad("value-is-bool", sdpa(value=keep(2, 5, 6)), TypeError, "value", "torch.bool"),
    Bad("scores-int", lambda: AF.masked_softmax(t(3, 3, dtype=torch.int32)), TypeError, "scores", "torch.int32"),
    Bad("q-is-numpy", lambda: AF.dot_scores(t(3, 4).numpy(), t(5, 4)), TypeError, "q", "ndarray"),
    Bad("query-1d", sdpa(query=t(4)), ValueError, "query", "(4,)"),
    # -- shapes that do not fit together ---------------------------------------------------
    Bad("query-key-d_k", sdpa(key=t(2, 5, 3)), ValueError, "query and key", "(2, 5, 3)"),
    Bad("q-k-d_k-scores", lambda: AF.scaled_dot_scores(t(3, 4), t(5, 2)), ValueError, "q and k", "(5, 2)"),
    Bad("key-value-length", sdpa(value=t(2, 6, 6)), ValueError, "key and value", "(2, 6, 6)"),
    Bad("batch-not-broadcasting", sdpa(key=t(3, 5, 4), value=t(3, 5, 6)), ValueError, "query", "(3,)"),
    Bad("general-W-shape", lambda: AF.general_scores(t(3, 4), t(5, 2), t(2, 4)), ValueError, "W", "(2, 4)"),
    Bad("additive-w_v-shape", lambda: AF.additive_scores(t(3, 4), t(5, 2), t(7, 4), t(7, 2), t(6)), ValueError, "w_v", "(6,)"),
    Bad("additive-W_q-1d", lambda: AF.additive_scores(t(3, 4), t(5, 2), t(7), t(7, 2), t(7)), ValueError, "W_q", "(7,)"),
    # -- masks -----------------------------------------------------------------------------
    Bad("mask-wrong-shape", sdpa(attn_mask=keep(3, 4)), ValueError, "attn_mask", "(3, 4)"),
    Bad("mask-would-enlarge-batch", sdpa(attn_mask=keep(4, 2, 3, 5)), ValueError, "attn_mask", "(4, 2, 3, 5)"),
    Bad("mask-would-enlarge-size-1-batch", lambda: AF.scaled_dot_product_attention(t(1, 3, 4), t(1, 5, 4), t(1, 5, 6), keep(2, 3, 5)), ValueError, "attn_mask", "(2, 3, 5)"),
    Bad("mask-integer", sdpa(attn_mask=t(3, 5, dtype=torch.int64)), TypeError, "attn_mask", "torch.int64"),
    Bad("mask-other-float-dtype", sdpa(attn_mask=t(3, 5, dtype=torch.float64)), TypeError, "attn_mask", "torch.float64"),
    Bad("mask-other-device", sdpa(attn_mask=keep(3, 5, device="meta")), ValueError, "attn_mask", "meta"),
    Bad("softmax-mask-shape", lambda: AF.masked_softmax(t(3, 5), keep(5, 3)), ValueError, "mask", "(5, 3)"),
    Bad("general-mask-shape", lambda: AF.general_attention(t(3, 4), t(5, 4), t(5, 2), t(4, 4), keep(5, 5)), ValueError, "attn_mask", "(5, 5)"),
    Bad("causal-and-mask", sdpa(attn_mask=keep(3, 5), is_causal=True), ValueError, "is_causal", "attn_mask"),
    Bad("causal-not-bool", sdpa(is_causal="yes"), TypeError, "is_causal", "str"),
    Bad("gqa-not-bool", sdpa(enable_gqa="no"), TypeError, "enable_gqa", "str"),
    Bad("return-weights-not-bool", sdpa(return_weights=1), TypeError, "return_weights", "int"),
    # -- scalars -----------------------------------------------------------------------------
    Bad("dropout-negative", sdpa(dropout_p=-0.1), ValueError, "dropout_p", "-0.1"),
    Bad("dropout-one", sdpa(dropout_p=1.0), ValueError, "dropout_p", "1.0"),
    Bad("dropout-string", sdpa(dropout_p="0.1"), TypeError, "dropout_p", "str"),
    Bad("scale-zero", sdpa(scale=0.0), ValueError, "scale", "0.0"),
    Bad("softmax-dim", lambda: AF.masked_softmax(t(3, 5), dim=2), ValueError, "dim", "2"),
    # -- grouped-query attention -----------------------------------------------------------
    Bad("gqa-heads-not-dividing", lambda: AF.scaled_dot_product_attention(t(1, 3, 2, 4), t(1, 2, 5, 4), t(1, 2, 5, 4), enable_gqa=True), ValueError, "query", "3"),
    Bad("gqa-zero-kv-heads", lambda: AF.scaled_dot_product_attention(t(2, 3, 4), t(0, 5, 4), t(0, 5, 4), enable_gqa=True), ValueError, "key", "(0, 5, 4)"),
    Bad("causal-numpy-bool", sdpa(is_causal=np.bool_(True)), TypeError, "is_causal", "numpy.bool"),
    Bad("gqa-without-head-dim", lambda: AF.scaled_dot_product_attention(t(3, 4), t(5, 4), t(5, 4), enable_gqa=True), ValueError, "query", "(3, 4)"),
    Bad("module-kv-heads-not-dividing", lambda: MultiHeadAttention(12, 4, num_kv_heads=3), ValueError, "num_kv_heads", "num_kv_heads=3"),
    # -- dtypes and devices that do not match ------------------------------------------------
    Bad("dtype-mismatch", sdpa(key=t(2, 5, 4, dtype=torch.float64)), TypeError, "key", "torch.float64"),
    Bad("device-mismatch", sdpa(value=t(2, 5, 6, device="meta")), ValueError, "value", "meta"),
    Bad("module-params-dtype", mha_call(query=t(2, 3, 8, dtype=torch.float64), key=None, value=None), TypeError, "query", "torch.float64"),
    Bad("module-params-device", mha_call(query=t(2, 3, 8, device="meta"), key=None, value=None), ValueError, "query", "meta"),
    # -- masks: causal, padding, converters ------------------------------------------------
    Bad("lengths-negative", lambda: M.padding_mask([2, -1], 4), ValueError, "lengths", "-1"),
    Bad("lengths-too-long", lambda: M.key_padding_from_lengths(torch.tensor([5, 2]), 4), ValueError, "lengths", "5"),
    Bad("lengths-float", lambda: M.padding_mask(torch.tensor([1.5]), 4), TypeError, "lengths", "torch.float32"),
    Bad("lengths-2d", lambda: M.padding_mask(torch.tensor([[1, 2]]), 4), ValueError, "lengths", "(1, 2)"),
    Bad("causal-L-zero", lambda: M.causal_mask(0), ValueError, "L", "0"),
    Bad("causal-S-float", lambda: M.causal_mask(3, 2.0), TypeError, "S", "float"),
    Bad("causal-alignment", lambda: M.causal_mask(3, alignment="bottom"), ValueError, "alignment", "'bottom'"),
    Bad("to-mha-int-mask", lambda: M.mask_to_mha(t(3, 3, dtype=torch.int8)), TypeError, "attn_mask", "torch.int8"),
    Bad("bool-to-additive-float", lambda: M.bool_to_additive(t(3, 3)), TypeError, "mask", "torch.float32"),
    # -- layers ------------------------------------------------------------------------------
    Bad("heads-not-dividing", lambda: MultiHeadAttention(10, 4), ValueError, "num_heads", "num_heads=4"),
    Bad("embed-dim-zero", lambda: MultiHeadAttention(0, 1), ValueError, "embed_dim", "0"),
    Bad("module-dropout", lambda: MultiHeadAttention(8, 2, dropout=1.5), ValueError, "dropout", "1.5"),
    Bad("layer-query-features", mha_call(query=t(2, 3, 7)), ValueError, "query", "(2, 3, 7)"),
    Bad("layer-key-features", mha_call(layer_kwargs={"kdim": 6}), ValueError, "key", "(2, 5, 8)"),
    Bad("layer-query-2d", mha_call(query=t(3, 8)), ValueError, "query", "(3, 8)"),
    Bad("layer-batch-sizes", mha_call(key=t(4, 5, 8), value=t(4, 5, 8)), ValueError, "batch size", "4"),
    Bad("layer-key-value-lengths", mha_call(value=t(2, 6, 8)), ValueError, "key and value", "(2, 6, 8)"),
    Bad("layer-key-padding-shape", mha_call(key_padding=keep(2, 3)), ValueError, "key_padding", "(2, 3)"),
    Bad("layer-key-padding-int", mha_call(key_padding=t(2, 5, dtype=torch.int64)), TypeError, "key_padding", "torch.int64"),
    Bad("layer-attn-mask-shape", mha_call(attn_mask=keep(5, 3)), ValueError, "attn_mask", "(5, 3)"),
    Bad("layer-causal-and-mask", mha_call(attn_mask=keep(3, 5), is_causal=True), ValueError, "is_causal", "attn_mask"),
    Bad("layer-need-weights-not-bool", mha_call(need_weights="yes"), TypeError, "need_weights", "str"),
    Bad("additive-layer-value-int", lambda: AdditiveAttention(4, 4, 3)(t(2, 3, 4), t(2, 5, 4), t(2, 5, 2, dtype=torch.int64)), TypeError, "value", "torch.int64"),
    Bad("additive-layer-key-features", lambda: AdditiveAttention(4, 4, 3)(t(2, 3, 4), t(2, 5, 3)), ValueError, "key", "(2, 5, 3)"),
    # -- positions (chapter 9) ---------------------------------------------------------------
    Bad("rope-odd-E", lambda: P.rope(t(2, 3, 5)), ValueError, "x", "(2, 3, 5)"),
    Bad("rope-int-x", lambda: P.rope(t(3, 4, dtype=torch.int64)), TypeError, "x", "torch.int64"),
    Bad("rope-x-1d", lambda: P.rope(t(4)), ValueError, "x", "(4,)"),
    Bad("rope-negative-position", lambda: P.rope(t(3, 4), [0, -2, 1]), ValueError, "positions", "-2"),
    Bad("rope-float-positions", lambda: P.rope(t(3, 4), torch.tensor([0.0, 1.5, 2.0])), TypeError, "positions", "torch.float32"),
    Bad("rope-bool-positions", lambda: P.rope(t(3, 4), torch.tensor([True, False, True])), TypeError, "positions", "torch.bool"),
    Bad("rope-positions-scalar", lambda: P.rope(t(3, 4), 2), TypeError, "positions", "int"),
    Bad("rope-positions-length", lambda: P.rope(t(3, 4), [0, 1]), ValueError, "positions", "(2,)"),
    Bad("rope-base-one", lambda: P.rope(t(3, 4), base=1.0), ValueError, "base", "1.0"),
    Bad("rope-base-string", lambda: P.rope(t(3, 4), base="1e4"), TypeError, "base", "str"),
    Bad("rope-interleaved-int", lambda: P.rope(t(3, 4), interleaved=1), TypeError, "interleaved", "int"),
    Bad("sinusoidal-L-zero", lambda: P.sinusoidal_encoding(0, 4), ValueError, "L", "0"),
    Bad("sinusoidal-d-float", lambda: P.sinusoidal_encoding(3, 4.0), TypeError, "d", "float"),
    Bad("sinusoidal-int-dtype", lambda: P.sinusoidal_encoding(3, 4, dtype=torch.int32), TypeError, "dtype", "torch.int32"),
    Bad("alibi-heads-zero", lambda: P.alibi_slopes(0), ValueError, "h", "0"),
    Bad("alibi-S-zero", lambda: P.alibi_bias(2, 3, 0), ValueError, "S", "0"),
    Bad("alibi-L-zero", lambda: P.alibi_bias(2, 0, 3), ValueError, "L", "0"),
    Bad("alibi-alignment", lambda: P.alibi_bias(2, 3, 4, alignment="bottom"), ValueError, "alignment", "'bottom'"),
    Bad("alibi-causal-string", lambda: P.alibi_bias(2, 3, 4, causal="yes"), TypeError, "causal", "str"),
    Bad("layer-rope-odd-head", lambda: MultiHeadAttention(6, 2, rope=True), ValueError, "rope", "3"),
    Bad("layer-rope-and-alibi", lambda: MultiHeadAttention(8, 2, rope=True, alibi=True), ValueError, "alibi", "rope"),
    Bad("layer-alibi-not-bool", lambda: MultiHeadAttention(8, 2, alibi=1), TypeError, "alibi", "int"),
    Bad("layer-rope-to-torch", lambda: MultiHeadAttention(8, 2, rope=True).to_torch(), ValueError, "rope", "rope=True"),
    # -- tools -------------------------------------------------------------------------------
    Bad("from-torch-not-mha", lambda: MultiHeadAttention.from_torch(torch.nn.Linear(2, 2)), TypeError, "mha", "Linear"),
]


def _enter(context_manager):
    with context_manager:
        pass


CATALOGUE.append(
    Bad("capture-not-a-module", lambda: _enter(capture_attention(object())), TypeError, "model", "object")
)


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda case: case.name)
def test_bad_input_is_refused_with_a_clear_message(case):
    with pytest.raises(case.error) as raised:
        case.call()
    assert type(raised.value) is case.error  # not a subclass standing in for it
    message = str(raised.value)
    names_argument = re.search(rf"\b{re.escape(case.argument)}\b", message)
    assert names_argument, f"message does not name {case.argument!r}: {message}"
    assert case.arrived in message, f"message does not show {case.arrived!r}: {message}"


def test_catalogue_names_are_unique():
    names = [case.name for case in CATALOGUE]
    assert len(names) == len(set(names))
