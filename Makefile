# The README's two set-up commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CI and this Makefile pin the CPU torch wheel; drop the constraint to get your platform's build.
CONSTRAINTS ?= .ci/constraints.txt
MODEL_NAME ?= imdb-sentiment
# As if the venv were activated: `mlflow run` finds its python, and the tests' subprocesses too.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo lint test test-tiers test-all test-fast results evidence-ui clean

$(BIN)/sentiment: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[test,docs]'
	touch $@

install: $(BIN)/sentiment

## Train, test and register the offline quick preset, then load it back from the registry.
demo: install
	$(BIN)/sentiment train --preset quick --register-as $(MODEL_NAME)
	$(BIN)/sentiment predict --model-uri models:/$(MODEL_NAME)@champion \
		"A warm, funny and beautifully acted film." "Dull, clumsy and far too long; I nearly walked out."

## The formatter and linter: ruff (configured in pyproject.toml), format check and lint, no file changed.
lint: install
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

## The test suite (under 25 minutes on 2 cores): everything but the tiers below and a whole shipped grid.
test: install lint
	$(BIN)/python -m pytest -q -rs -m "not grid and not postgres and not long_outage and not scale and not extended"

## The slow tiers CI runs after `make test`: the PostgreSQL-backed server, the long outages, Spark,
## the served model under load, and the extended end-to-end paths.
test-tiers: install
	$(BIN)/python -m pytest -q -rs -m "postgres or long_outage or scale or extended"

## Everything, including the shipped quick ablation grid end to end (about 8 more minutes).
test-all: install
	$(BIN)/python -m pytest -q -rs

## Everything but the slow end-to-end tests.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

## Re-render experiments/RESULTS.md and README's result block from the evidence store alone
## (experiments/evidence/: no server, no network, no training; experiments/results.yaml says what goes where).
results: install
	$(BIN)/sentiment evidence render

## The evidence store in the MLflow UI at http://127.0.0.1:5050 (the runs of every results document, ids kept).
evidence-ui: install
	$(BIN)/sentiment evidence ui --port 5050

clean:
	rm -rf .sentiment mlflow.db mlruns mlartifacts .pytest_cache
