# The README's two commands: `make lab` (set-up + the full matrix) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
OUT ?= results

.PHONY: lab test setup system venv bench reliability notebooks lint clean

lab: setup
	$(VENV)/bin/trustlab matrix --out $(OUT)

test: setup
	$(PY) -m pytest

setup: system venv

system:
	@bash .ci/system-packages

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,docker,notebooks,audit,proxies]'
	touch $@

# Execute copies of notebooks/*.ipynb and render them to HTML under notebooks/_build/ (git-ignored).
notebooks: setup
	$(PY) -m harness._notebooks render

bench: setup
	$(PY) benchmarks/bench_local.py

# The full reliability set: adds 20 repeated matrices in random orders to the CI subset.
reliability: setup
	$(PY) -m pytest -m "" tests/test_reliability.py tests/test_integration.py tests/test_held.py

lint: venv
	$(VENV)/bin/ruff check harness tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) results build dist *.egg-info
