# The README's two commands: `make lab` (set-up + the full matrix) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
OUT ?= results

.PHONY: lab test test-fast setup system venv lock canary figures bench bench-docs reliability notebooks lint clean

lab: setup
	$(VENV)/bin/trustlab matrix --out $(OUT)

# The whole suite: the results page's browser test too, so the set-up installs Chromium here (and
# the test fails rather than skips without it); `make lab` never needs a browser.
# In parallel (pytest-xdist): most of a test's time is spent waiting on proxies and containers, so
# 4 workers beat 2 on 2 cores. Tests that share a session or module fixture share a worker (their
# xdist group, tests/conftest.py), and a test marked `serial` runs with no other test beside it.
XDIST ?= -n 4 --dist loadgroup
test: export TRUSTLAB_REQUIRE_BROWSER = 1
test: setup
	$(PY) -m pytest $(XDIST) --durations=20

# What needs no proxy, docker daemon, notebook kernel or browser (each such test carries its
# marker: tests/conftest.py fails one that starts a runtime without it). No set-up beyond the venv.
FAST := not slow and not integration and not docker and not notebooks and not browser
test-fast: venv
	$(PY) -m pytest $(XDIST) -m "$(FAST)" --durations=10

setup: system venv

system:
	@bash .ci/system-packages

venv: $(VENV)/.installed

# Every extra, exactly as locked (hashes checked); then the project itself, without resolving again.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# Re-resolve every extra of pyproject.toml into requirements.lock (uv, hashes), in a throwaway venv.
# Resolved for the oldest Python the lock serves: Debian 12's 3.11.2, which the lab and classroom
# images run (a lock resolved on 3.11.7 pinned soupsieve 4.1, which needs 3.11.5).
lock:
	rm -rf build/lock && $(PYTHON) -m venv build/lock
	build/lock/bin/pip install -q uv
	build/lock/bin/uv pip compile pyproject.toml --all-extras --generate-hashes \
	    --python-version 3.11.2 --python-platform x86_64-manylinux_2_36 -q -o requirements.lock

# The newest versions pyproject.toml allows, in a throwaway venv, against a smoke (every identity
# minted, one scenario per proxy kind): what breaks here is what the next `make lock` must fix.
# Not part of `make test`.
canary: system
	rm -rf build/canary && $(PYTHON) -m venv build/canary
	build/canary/bin/pip install -q --upgrade -e '.[dev,audit,proxies]'
	build/canary/bin/python -m harness.canary

# Every figure README.md and docs/*.md state, from the repo and a fresh full matrix (docs/figures.json),
# and the front page's picture and example results page from the same run.
figures: setup
	$(VENV)/bin/trustlab matrix --out $(OUT)
	$(PY) -m harness.report.figures update $(OUT)/matrix.json
	cp $(OUT)/matrix.png docs/matrix-summary.png
	$(VENV)/bin/trustlab report $(OUT)/matrix.json -o docs/results.html

# Execute copies of notebooks/*.ipynb and render them to HTML under notebooks/_build/ (git-ignored).
notebooks: setup
	$(PY) -m harness.course.render render

bench: setup
	$(PY) benchmarks/bench_phases.py

# The same, with docker against local under a CPU hog, written into docs/reference.md.
bench-docs: setup
	$(PY) benchmarks/bench_phases.py --docker-vs-local 2 --hog 4 --write-docs docs/reference.md

# The full reliability set: adds 20 repeated matrices in random orders to the CI subset.
reliability: setup
	$(PY) -m pytest -m "" tests/test_reliability.py tests/test_integration.py tests/test_held.py

lint: venv
	$(VENV)/bin/ruff check harness tests benchmarks
	$(VENV)/bin/ruff format --check harness tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) results build dist *.egg-info
