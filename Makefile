# Two entry points, both from a fresh clone on Linux with Python 3.10+:
#   make demo   set everything up and run the main job
#   make test   set everything up and run the full test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; on this project's machines it lies on local disk, so pip does not
# fetch the multi-GB CUDA wheels. Override TORCH_SPEC for another build.
TORCH_SPEC ?= torch==2.13.0
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) "$(TORCH_SPEC)"
	$(PY) -m pip install $(PIP_FLAGS) "$(TORCH_SPEC)" -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/cogvx demo --out demo-out --force

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
