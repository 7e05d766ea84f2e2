# Two entry points: `make demo` (the main job) and `make test`.
#
# One virtualenv, filled in layers; a stamp file records each layer:
#   demo  the package with its `cli` extra (NumPy, scikit-learn, matplotlib...):
#         what `crossentropy demo` needs and nothing more (no PyTorch, JAX, TF)
#   test  + the `fast` extra and the `test` dependency group: every array
#         library and the test tools, with this project's exact pins
#   docs  + the `docs` dependency group
# Dependency groups (PEP 735) are not published with the package; installing
# them needs pip >= 25.1, so pip is upgraded first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --quiet

PIP_STAMP  := $(VENV)/.installed-pip
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: install test demo bench docs dist clean

$(PIP_STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade 'pip>=25.1'
	touch $@

$(DEMO_STAMP): pyproject.toml $(PIP_STAMP)
	$(PIP) install -e '.[cli]'
	touch $@

# The test layer is a superset of the demo's, so it stamps both.
$(TEST_STAMP): pyproject.toml $(PIP_STAMP)
	$(PIP) install -e '.[cli,fast]' --group test
	$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else 'torch must stay 2.13.0, got ' + v)"
	touch $@ $(DEMO_STAMP)

$(DOCS_STAMP): $(TEST_STAMP) pyproject.toml
	$(PIP) install --group docs
	touch $@

install: $(TEST_STAMP)

test: $(TEST_STAMP)
	$(PY) -m ruff check src tests tools
	$(VENV)/bin/lint-imports
	$(PY) -m mypy --strict
	$(PY) -m pytest -q -m "not slow" -n 2

demo: $(DEMO_STAMP)
	$(VENV)/bin/crossentropy demo

bench: $(TEST_STAMP)
	$(VENV)/bin/crossentropy bench

# The documentation site, built with --strict (any warning fails) into site/.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 MPLBACKEND=Agg $(VENV)/bin/mkdocs build --strict --site-dir site

# A source distribution and a wheel in dist/ (the wheel is built from the sdist).
dist: $(PIP_STAMP)
	$(PIP) install 'build>=1.2'
	rm -rf dist
	$(PY) -m build --outdir dist .

clean:
	rm -rf $(VENV) build dist .pytest_cache .hypothesis .mypy_cache site
