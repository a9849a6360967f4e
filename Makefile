VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo bench test lint format clean conformance conformance-suite

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,fast]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m examples.demo

# wrk and nginx are used when installed (apt-get install wrk nginx); see bench/run.py.
bench: $(STAMP)
	$(PY) -m bench.run --out bench-results.json

# The public HTTP cache test suite (npm http-cache-tests), installed outside the repository
# (see bench/conformance.py); `make conformance` prints sidecache's score per suite.
conformance-suite: $(STAMP)
	$(PY) -m bench.conformance --install-only

conformance: conformance-suite
	$(PY) -m bench.conformance

test: $(STAMP) conformance-suite
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
