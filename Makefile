# One entry point that owns the virtual environment.
#   make test   create .venv (first time), install crapnet with its extras, run pytest
#   make book   same set-up, then build the research book (crapnet book, default profile)
#   make lab    same set-up, registers the project's Jupyter kernel (`crapnet`) and opens
#               JupyterLab on notebooks/ (LAB_ARGS="--no-browser --port 8890" etc. are passed on)
#   make e2e    browser checks (headless Chromium): every page of the built book, and
#               JupyterLab opening and rendering a notebook (screenshots under _build/screenshots)
#   make slurm-check  build the smoke book through a real single-node SLURM on this machine
#               (root; installs slurm-wlm and munge with apt-get when missing)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROFILE ?=
# jobs at a time, one thread each: every core by default
JOBS   ?= $(shell nproc 2>/dev/null || echo 1)
LAB_ARGS ?=
KERNEL := $(VENV)/share/jupyter/kernels/crapnet/kernel.json

.PHONY: venv test book lab kernel e2e slurm-check clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, alone, so that pip takes the pinned (local CPU) wheel and never the CUDA stack
	$(BIN)/python -m pip install --quiet -c constraints.txt torch
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,test]"
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(BIN)/python -m pytest

book: venv
	$(BIN)/crapnet book $(if $(PROFILE),--profile $(PROFILE)) --jobs $(JOBS)

# the project's kernel, inside .venv (--sys-prefix): nothing is written outside the clone
$(KERNEL): $(STAMP)
	$(BIN)/python -m ipykernel install --sys-prefix --name crapnet --display-name "Python (crapnet)"

kernel: $(KERNEL)

lab: kernel
	$(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

e2e: kernel
	$(BIN)/python -m crapnet_core.book.browser_check
	$(BIN)/python -m crapnet_core.book.browser_check lab

slurm-check: venv
	CRAPNET=$(BIN)/crapnet bash workflow/slurm_check.sh

clean-venv:
	rm -rf $(VENV)
