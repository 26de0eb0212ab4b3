# One command each: `make demo` (set up + train the demo), `make test` (set up + test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m sdgdml.train --dataset DigitsDG --source mnist --algorithm ProxyAnchor \
		--output_dir runs/demo

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest

clean:
	rm -rf runs
