# OCA: the two commands are `make run` (serve a sample cache on loopback) and `make test`.
# Both work from a fresh clone: they create .venv and install what they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian packages the tests and benchmarks drive for real (command:package)
SYSTEM_TOOLS := nginx:nginx wrk:wrk strace:strace systemd-analyze:systemd

.PHONY: test run lint typecheck unit bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

system-deps:
	@scripts/install-system-deps.sh $(SYSTEM_TOOLS)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: $(STAMP) system-deps lint typecheck
	$(BIN)/pytest -q

run: $(STAMP)
	$(BIN)/python -m oca.sample run

bench: $(STAMP) system-deps
	$(BIN)/python -m loadtest.bench --quick --json out.json

clean:
	rm -rf $(VENV) run build *.egg-info .pytest_cache .mypy_cache .ruff_cache
