# ImgStory: `make run` serves http://localhost:8000, `make test` runs the test suite.
# Both set up everything they need on a fresh machine (virtualenv, packages, nats-server).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install install-test nats-server bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(STAMP)-test: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

install-test: $(STAMP)-test

nats-server: | $(PY)
	@bash scripts/ensure-nats-server.sh $(VENV)

run: install nats-server
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) scripts/run_stack.py

test: install-test nats-server
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest

bench: install-test nats-server
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) bench/pipeline.py

clean:
	rm -rf $(VENV) .cache *.egg-info
