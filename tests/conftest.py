"""Shared fixtures for the library's tests.

The ``device`` fixture runs a test on the CPU and, when torch sees one, on a CUDA GPU;
the CUDA case carries the ``cuda`` marker and is skipped on machines without a GPU.
Helpers shared by several test modules live in ``attn_helpers.py``.

The tests use tiny tensors, for which torch's CPU thread pool costs more than it brings,
and much more on a busy shared machine (the suite took twice as long with two threads
there). So the tests run torch on one CPU thread; set ATTNCOURSE_TEST_THREADS to change it.
"""

from __future__ import annotations

import os

import pytest
import torch

from attn_helpers import CUDA_AVAILABLE


def pytest_configure(config):
    torch.set_num_threads(int(os.environ.get("ATTNCOURSE_TEST_THREADS", "1")))


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist's ``--dist loadgroup`` (``make test``), each test module runs whole
    in one process, so that its module-scoped fixtures (a graded class, a course) are built
    once, and the book's modules share one process and one build."""
    for item in items:
        group = "book" if "book" in item.path.parts else item.path.stem
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(
    params=[
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.cuda,
                pytest.mark.skipif(not CUDA_AVAILABLE, reason="no CUDA device"),
            ],
        ),
    ]
)
def device(request) -> torch.device:
    """The device a test runs on: cpu always, cuda when torch sees a GPU."""
    return torch.device(request.param)
