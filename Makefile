# One entry point that owns the virtual environment.
#   make test   create .venv (first time), install crapnet with its extras, run pytest
#   make book   same set-up, then build the research book (crapnet book, default profile)
#   make e2e    browser check of the built book (headless Chromium)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROFILE ?=
JOBS   ?= 1

.PHONY: venv test book e2e clean-venv

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

clean-venv:
	rm -rf $(VENV)
