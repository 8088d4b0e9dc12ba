# inference-cogs: `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cogs demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	PATH="$(PATH):/usr/lib/postgresql/15/bin" $(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

ui: $(STAMP)
	$(VENV)/bin/cogs ui

clean:
	rm -rf .cogs

# FOCUS conformance: the FinOps Foundation's focus-validator (Python >= 3.12, its own venv) on focus_costs
# from the demo and every connector's fixtures; failures must be documented in docs/validator-defects.md.
VALIDATOR_PYTHON ?= python3.12
VALIDATOR_PYENV_VERSION ?= 3.12.1
VALIDATOR_VENV := .cogs/validator-venv
VALIDATOR_STAMP := $(VALIDATOR_VENV)/.installed

.PHONY: conformance

$(VALIDATOR_STAMP): conformance/requirements.txt
	rm -rf $(VALIDATOR_VENV)
	PYENV_VERSION=$(VALIDATOR_PYENV_VERSION) $(VALIDATOR_PYTHON) -m venv $(VALIDATOR_VENV)
	$(VALIDATOR_VENV)/bin/python -m pip install --quiet -r conformance/requirements.txt
	touch $(VALIDATOR_STAMP)

conformance: $(STAMP) $(VALIDATOR_STAMP)
	$(PY) -m conformance.run --validator $(VALIDATOR_VENV)/bin/focus-validator

# Benchmark, not part of `make test`: 1M CUR 2.0 rows through ingest() vs a DuckDB floor and focus-converter 1.0.0
# (ROWS=10000000 also checks that memory stays bounded; BENCH_ARGS="--repeat 3" for steadier times).
.PHONY: bench
bench: $(STAMP)
	$(PY) benchmarks/bench_cur2_load.py --rows $(or $(ROWS),1000000) $(BENCH_ARGS)
