# Developer entry points. Everything runs from the project virtualenv in .venv.
#
#   make install   create .venv (if missing) and install voxflow with its dev tools
#   make run       install, then run the server (voxflow serve)
#   make check     lint + types + test (what CI runs, see scripts/test.sh)
#   make bench     run every benchmark in bench/

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The directories the linters look at (bench/ may not exist yet in a fresh clone).
LINT_PATHS := $(wildcard src tests bench)
# Re-run pip only when the package metadata changed since the last install.
STAMP := $(VENV)/.voxflow-installed

.PHONY: install run lint types test check bench

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/voxflow serve

lint:
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/ruff check $(LINT_PATHS)

types:
	$(BIN)/mypy

test:
	$(BIN)/pytest

check: lint types test

bench:
	@set -e; found=0; \
	for f in bench/*.py; do \
		[ -e "$$f" ] || continue; \
		found=1; \
		echo "== $$f"; \
		$(BIN)/python "$$f"; \
	done; \
	[ "$$found" = 1 ] || echo "no benchmarks in bench/"
