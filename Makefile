# Two commands do everything on a fresh machine:
#   make demo   create .venv, install tfattr, explain real photos, write pictures + a table
#   make test   create .venv, install tfattr with test extras, run the test suite
#   make docs   build the documentation site into build/site (mkdocs --strict: warnings are errors; offline)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND := tensorflow

.PHONY: demo test test-slow lint docs bench papers install clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,examples,beam]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) examples/demo.py --out outputs/demo

# The second pass repeats the numeric-equality tests with one thread and other chunk sizes, so
# the kernels sum in other orders, as on another CPU: they must hold within float32 bounds.
# The `slow` tests (full keras.applications networks, EfficientNet-Lite0 at 224 against the
# reference files) and the `beam` tests (Apache Beam pipelines, worker processes) run in their own
# step, `make test-slow` (CI runs both).
test: $(VENV)/.installed
	$(PY) -m pytest tests -m "not slow and not beam"
	TF_NUM_INTRAOP_THREADS=1 TFATTR_TEST_CHUNK_SIZES=2,5,33 $(PY) -m pytest tests -m "numeric and not slow and not beam"

test-slow: $(VENV)/.installed
	$(PY) -m pytest tests -m "slow or beam"

$(VENV)/.docs-installed: $(VENV)/.installed setup.cfg
	$(PY) -m pip install -q -e '.[docs]'
	touch $@

# The site is built from docs/ and the docstrings (mkdocstrings); its code blocks are run by
# tests/test_docs_snippets.py in `make test`. Nothing is fetched at build time.
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --clean

# ruff with the configuration in pyproject.toml (the test extra installs it)
lint: $(VENV)/.installed
	$(PY) -m ruff check .

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_engine.py --quick
	$(PY) benchmarks/bench_speed.py
	$(PY) benchmarks/bench_methods.py
	$(PY) benchmarks/bench_guided.py
	$(PY) benchmarks/bench_metrics.py --model small --size 64 --kernel-size 5 --images 8

papers: $(VENV)/.installed
	$(PY) benchmarks/evaluate_papers.py

clean:
	rm -rf $(VENV) outputs build *.egg-info
