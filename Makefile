# attncourse: build the book, run the tests, run the benchmarks.
#
#   make book    build the book into _build/html (creates .venv on first use)
#   make test    run the whole test suite, book build and browser checks included
#   make bench   run the benchmarks in benchmarks/bench_*.py

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp
# Recipes find the venv's tools first: jupyter-book starts notebook kernels with the venv's
# python, and nbgrader runs helpers such as `alembic` by name.
export PATH := $(BIN):$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Extra pip arguments for the torch install only, for machines that must take the CPU build
# from PyTorch's own index:  make venv TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
# Test processes (pytest-xdist); each test module runs whole in one of them, and the book's
# build and browser checks together (tests/conftest.py groups them).
TEST_JOBS ?= auto
BENCH_ARGS ?=

.PHONY: help venv book test bench bench-book-data exercises constraints clean distclean

help:
	@echo "make book         build the book; prints the path of _build/html/index.html"
	@echo "make test         run the test suite (builds the book, drives headless Chromium)"
	@echo "make bench        run benchmarks/bench_*.py (BENCH_ARGS='name ...' to pick some)"
	@echo "make exercises    regenerate exercises/ from solutions/ with nbgrader"
	@echo "make bench-book-data  rerun the efficient-attention sweep for chapter 8"
	@echo "make venv         create or update .venv from constraints.txt"
	@echo "make constraints  rewrite constraints.txt from the packages in .venv"
	@echo "make clean        remove build outputs; 'make distclean' also removes .venv"

venv: $(STAMP)

# torch goes in first and alone, pinned by constraints.txt, so that no looser requirement
# later on can make pip choose a different (CUDA) build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt pip
	$(BIN)/python -m pip install --quiet -c constraints.txt $(TORCH_PIP_ARGS) torch
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,test,grading]"
	touch $@

book: venv
	jupyter-book build . -W -n --keep-going
	@echo "Book built: $(CURDIR)/_build/html/index.html"

test: venv
	bash tools/install-system-packages.sh
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadgroup $(PYTEST_ARGS)

bench: venv
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# The student release: nbgrader generate_assignment for every assignment in solutions/,
# plus the hidden tests of the self-study edition (src/attncourse/grading/data/).
exercises: venv
	$(BIN)/python -m attncourse.grading.release

# Chapter 8 plots a committed sweep (book/data/efficient_sweep.json); this remeasures it.
bench-book-data: venv
	$(BIN)/python -m benchmarks.bench_efficient --write-book-data

constraints: venv
	$(BIN)/python tools/write_constraints.py

clean:
	rm -rf _build .pytest_cache .hypothesis benchmarks/results src/*.egg-info
	find . -path ./.venv -prune -o -type d -name __pycache__ -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
