# One entry point that owns the virtual environment.
#   make test   create .venv (first time), install crapnet with its extras, run pytest
#   make book   same set-up, then build the research book (crapnet book, default profile)
#   make e2e    browser check of the built book (headless Chromium)
#   make slurm-check  build the smoke book through a real single-node SLURM on this machine
#               (root; installs slurm-wlm and munge with apt-get when missing)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROFILE ?=
# jobs at a time, one thread each: every core by default
JOBS   ?= $(shell nproc 2>/dev/null || echo 1)

.PHONY: venv test book e2e slurm-check clean-venv

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

e2e: venv
	$(BIN)/python -m crapnet_core.browser_check

slurm-check: venv
	CRAPNET=$(BIN)/crapnet bash workflow/slurm_check.sh

clean-venv:
	rm -rf $(VENV)
