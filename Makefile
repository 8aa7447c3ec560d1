# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing and install rshash into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 8

.PHONY: demo test lint install clean

# Python may cache compiled modules: a workflow starts a Python process per job (and the
# tests start Snakemake many times), and without the cache each one compiles Snakemake's
# and rshash's modules again (about 5 s a process on 2 cores).
unexport PYTHONDONTWRITEBYTECODE

install: $(VENV)/.installed

# --no-compile: no .pyc for all of torch up front (a module compiles when first imported)
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e '.[test]'
	touch $@

demo: install
	$(BIN)/snakemake --cores $(CORES) results/tables/demo.csv

# Linters first (seconds), then the test suite.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules workflow
	$(BIN)/snakemake --lint

# The suite on TEST_WORKERS pytest-xdist workers (0: in this process), a test file
# per worker at a time, the longest files first (tests/conftest.py). Measured on a quiet
# 2-core machine, clean clone, `CI=true ./.ci/run`: 1,041 tests in 864 s on two workers,
# 15 min 31 s with install and lint.
TEST_WORKERS ?= 2

test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

clean:
	rm -rf results .snakemake
