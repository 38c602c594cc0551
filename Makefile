# Bastion — the two quickstart commands, and the pieces they are made of.
# Each target creates ./.venv and installs the project from pyproject.toml if needed.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PG_URL  ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: demo test lint typecheck pytest services browser bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP) services browser lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

# End-to-end tests first, alone: they start real processes and measure propagation times. Then
# the in-process tests on two workers (a test file stays on one worker: module fixtures hold);
# most of their time is spent waiting on PostgreSQL, Redis and threads, not on the CPU.
pytest: $(STAMP) services browser
	BASTION_TEST_POSTGRES_URL=$(PG_URL) $(BIN)/python -m pytest -q tests/e2e
	BASTION_TEST_POSTGRES_URL=$(PG_URL) $(BIN)/python -m pytest -q -n 2 --dist loadfile tests/integration tests/unit

# PostgreSQL and Redis are real servers on loopback; start them if they are down.
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@for i in 1 2 3 4 5 6 7 8 9 10; do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
	@pg_isready -h 127.0.0.1 -p 5432

# The console's browser tests drive Debian's chromium through Playwright (never a browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	@command -v chromium >/dev/null

bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.decisions

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
