# One entry point that owns the virtual environment.
#   make test   create .venv (first time), install crapnet with its extras, ruff (lint + format check), pytest
#   make book   same set-up, then build the research book (crapnet book, default profile)
#   make lab    same set-up, registers the project's Jupyter kernel (`crapnet`) and opens
#               JupyterLab on notebooks/ (LAB_ARGS="--no-browser --port 8890" etc. are passed on)
#   make e2e    browser checks (headless Chromium): every page of the built book, and
#               JupyterLab opening and rendering a notebook (screenshots under _build/screenshots)
#   make slurm-check  build the smoke book through a real single-node SLURM on this machine
#               (root; installs slurm-wlm and munge with apt-get when missing)
#   make lock   regenerate requirements.lock (every package, exact versions and hashes) from
#               pyproject.toml's ranges and extras + constraints.txt, with pip-tools in .lock-tools/;
#               pins that still satisfy the ranges are kept; LOCK_ARGS=--upgrade takes the newest
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROFILE ?=
# jobs at a time, one thread each: every core by default
JOBS   ?= $(shell nproc 2>/dev/null || echo 1)
LAB_ARGS ?=
KERNEL := $(VENV)/share/jupyter/kernels/crapnet/kernel.json
LOCK   := requirements.lock
LOCK_TOOLS := .lock-tools
PIP_TOOLS_VERSION := 7.6.2
LOCK_ARGS ?=

.PHONY: venv test lint format book lab kernel e2e slurm-check clean-venv lock

# The environment is the lock: every package at the exact version (and file hash) of
# requirements.lock, then crapnet itself (editable, without resolving anything again).
# torch is pinned there to the local CPU wheel (constraints.txt), so no CUDA stack is pulled in.
$(STAMP): $(LOCK) pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

# pip-compile resolves with this pip's own configuration (indexes, find-links), i.e. exactly
# what `make` installs; it runs in its own small venv so the project's .venv stays the lock.
lock:
	test -x $(LOCK_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_TOOLS) && \
		$(LOCK_TOOLS)/bin/python -m pip install --quiet --upgrade pip && \
		$(LOCK_TOOLS)/bin/python -m pip install --quiet pip-tools==$(PIP_TOOLS_VERSION); }
	$(LOCK_TOOLS)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--extra book --extra test -c constraints.txt --no-emit-index-url --no-emit-find-links \
		$(LOCK_ARGS) --output-file $(LOCK) pyproject.toml

venv: $(STAMP)

# pytest-xdist: TEST_WORKERS test processes (one per core by default; TEST_WORKERS=0: one process).
# --dist loadfile keeps each test file in one worker, so a module's expensive fixtures are built
# once; tests/conftest.py starts the longest file (the smoke book) first, and
# --no-loadscope-reorder keeps that order.
TEST_WORKERS ?= $(JOBS)
test: venv lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# ruff: lint and format check (configured in pyproject.toml); `make format` rewrites in place
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

book: venv
	$(BIN)/crapnet book $(if $(PROFILE),--profile $(PROFILE)) --jobs $(JOBS)

# the project's kernel, inside .venv (--sys-prefix): nothing is written outside the clone
$(KERNEL): $(STAMP)
	$(BIN)/python -m ipykernel install --sys-prefix --name crapnet --display-name "Python (crapnet)"

kernel: $(KERNEL)

lab: kernel
	$(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

e2e: kernel
	PYTHONPATH=tests $(BIN)/python -m e2e.browser_check
	PYTHONPATH=tests $(BIN)/python -m e2e.browser_check lab

slurm-check: venv
	CRAPNET=$(BIN)/crapnet bash workflow/slurm_check.sh

clean-venv:
	rm -rf $(VENV)
