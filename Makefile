# The two commands a user needs: `make bench` (the quick benchmark into runs/quick, resumable) and `make test`.
# Each runs the idempotent set-up first (.venv with torch and tdopt[dev,bench,tune,peers-light]).
PY := .venv/bin/python
ARGS ?=

.PHONY: setup bench test test-all lint

setup:
	@bash scripts/setup.sh

bench: setup
	$(PY) -m benchmarks $(ARGS)

test: setup
	$(PY) -m pytest $(ARGS)

test-all: setup
	$(PY) -m pytest -m "slow or not slow" $(ARGS)

lint: setup
	$(PY) -m ruff check .
