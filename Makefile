# deltaps: `make demo` runs a local cluster end to end, `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?=
EVENTS ?= 200000

.PHONY: setup demo lint test test-unit test-integration bench bench-baseline bench-compare clean

$(BIN)/deltaps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

setup: $(BIN)/deltaps

## Start a local cluster, train on a stream (synthetic, or DATA=path), read predictions, stop.
demo: setup
	PATH="$(abspath $(BIN)):$$PATH" bash deploy/demo.sh "$(DATA)" "$(EVENTS)"

## Lint (ruff, settings in pyproject.toml), then every test.
lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest -q

test-unit: setup
	$(BIN)/python -m pytest -q tests/unit

test-integration: setup
	$(BIN)/python -m pytest -q tests/integration tests/e2e

## Benchmarks: JSON + markdown in bench/results/ (BENCH_ARGS=--quick for a short run).
bench: setup
	$(BIN)/python -m bench.run $(BENCH_ARGS)

## Make bench/baseline.json from full runs of one commit, noise bands measured between them:
## make bench-baseline RUNS="bench/results/A.json bench/results/B.json bench/results/C.json"
RUNS ?=
bench-baseline: setup
	$(BIN)/python -m bench.baseline $(RUNS)

## Compare the latest run with a stored baseline: BASELINE=bench/baseline.json
BASELINE ?= bench/baseline.json
bench-compare: setup
	$(BIN)/python -m bench.compare $(BASELINE)

clean:
	rm -rf $(VENV) .deltaps build *.egg-info
