"""attncourse._checks (the input checks): the pure-Python broadcasting rule agrees with torch's.

Named test_input_checks.py, not test_checks.py, which tests/grading/ already uses.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attncourse import _checks

shapes = st.lists(st.integers(0, 3), max_size=4).map(tuple)


def _torch_broadcast(*shape_list):
    try:
        return tuple(torch.broadcast_shapes(*shape_list))
    except RuntimeError:
        return None


@settings(max_examples=200, deadline=None)
@given(shape_list=st.lists(shapes, min_size=1, max_size=3))
def test_broadcast_shapes_agrees_with_torch(shape_list):
    assert _checks.broadcast_shapes(*shape_list) == _torch_broadcast(*shape_list)


def test_broadcast_shapes_examples():
    assert _checks.broadcast_shapes((2, 1, 3), (4, 3)) == (2, 4, 3)
    assert _checks.broadcast_shapes((2, 3), (3, 2)) is None
    assert _checks.broadcast_shapes((0,), (1,)) == (0,)
    assert _checks.broadcast_shapes((0,), (5,)) is None
    assert _checks.broadcast_shapes() == ()
