# The two commands a newcomer runs: `make run` and `make test`. Everything they need is installed
# from this repository's own files (requirements*.txt, package-lock.json).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: setup chromium run test lint typecheck unit clean

setup: $(PY_STAMP) $(NODE_STAMP) chromium

$(PY_STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## chromium: Debian's Chromium for the browser test (tests/test_browser.py drives /usr/bin/chromium
## through Playwright; `playwright install` downloads browsers and fails here, so never run it)
CHROMIUM := /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=; \
	  elif command -v sudo >/dev/null 2>&1; then sudo=sudo; \
	  else echo "$(CHROMIUM) is missing: install Debian's chromium package as root" >&2; exit 1; fi; \
	  $$sudo apt-get update && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }

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
