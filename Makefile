# Two entry points: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else 'torch must stay 2.13.0, got ' + v)"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check src tests
	$(PY) -m pytest -q -m "not slow" -n 2

demo: $(STAMP)
	$(VENV)/bin/crossentropy demo

bench: $(STAMP)
	$(VENV)/bin/crossentropy bench

clean:
	rm -rf $(VENV) build dist .pytest_cache .hypothesis
