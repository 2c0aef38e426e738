# Two commands for a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
DATA ?= atis
MODEL ?= artifacts/$(DATA)
SPLIT ?= test

.PHONY: setup run test lint train eval bench-accuracy report clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,dev]"
	touch $(STAMP)

# Train a model if none exists, then score it on the test split.
run: setup
	test -f $(MODEL)/model.safetensors || $(PY) -m export.train --data $(DATA) --out $(MODEL)
	$(PY) -m export.evaluate --model $(MODEL) --data $(DATA) --split $(SPLIT)

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

train: setup
	$(PY) -m export.train --data $(DATA) --out $(MODEL)

eval: setup
	$(PY) -m export.evaluate --model $(MODEL) --data $(DATA) --split $(SPLIT)

# Trains ATIS and SNIPS with the defaults (about 45 min on 2 CPU cores) and writes
# benchmarks/results/accuracy.json, then regenerates the README results table.
bench-accuracy: setup
	$(PY) -m benchmarks.accuracy
	$(PY) -m benchmarks.report

report: setup
	$(PY) -m benchmarks.report

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
