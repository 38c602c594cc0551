# Bastion — the two quickstart commands, and the pieces they are made of.
# Each target creates ./.venv and installs the project from pyproject.toml if needed.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PG_URL  ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: demo test lint typecheck pytest services bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP) services lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) services
	BASTION_TEST_POSTGRES_URL=$(PG_URL) $(BIN)/python -m pytest -q

# PostgreSQL and Redis are real servers on loopback; start them if they are down.
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@for i in 1 2 3 4 5 6 7 8 9 10; do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
	@pg_isready -h 127.0.0.1 -p 5432

bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.decisions

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
