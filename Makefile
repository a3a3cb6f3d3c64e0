# The lesson's two everyday commands (see README):
#   make lab    set everything up (venv, packages, data, weights) and open JupyterLab
#   make test   run the whole test suite, notebooks included (what CI runs)
# Offline (workshop room, CI): LESSON_MIRROR=/path/to/mirror make lab|test

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup data lab test test-fast notebooks bench clean-data

setup: $(VENV)/.installed
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -e .
	touch $@

data: setup
	$(BIN)/python -m lesson_helpers fetch

lab: data
	$(BIN)/jupyter lab lessons/

test: data
	$(BIN)/python -m pytest

# Unit tests only (no notebooks): seconds, for quick work on the helpers.
test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow"

# Regenerate the notebooks from their markdown sources (the single source).
notebooks: setup
	$(BIN)/jupytext --to ipynb lessons/[0-9]*.md

bench: data
	$(BIN)/python tools/benchmark.py

clean-data:
	rm -rf data/*/
