# The two commands a newcomer runs: `make run` and `make test`. Everything they need is installed
# from this repository's own files (requirements*.txt, package-lock.json).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: setup run test lint typecheck unit clean

setup: $(PY_STAMP) $(NODE_STAMP)

$(PY_STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## make run: Azurite + devhost on http://127.0.0.1:7071 with the embedded dev defaults; Ctrl-C stops all
run: setup
	$(PY) -m devhost.stack

## make test: lint, format check, types, then the whole suite against real peers
test: setup lint typecheck unit

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: setup
	$(PY) -m mypy

unit: setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) node_modules .local .pytest_cache .mypy_cache .ruff_cache
