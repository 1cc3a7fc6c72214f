# Two commands do all the set-up on a fresh machine:
#   make demo   -> virtual env, install, run `meddiff demo` (report in runs/demo/report.html)
#   make test   -> virtual env, install with test extras, run the test suite
#   make docs   -> the documentation site from docs/ into site/ (strict: broken links fail)
# TORCH: the torch requirement installed first, so pip does not pull a multi-GB CUDA build
# by accident; set TORCH="torch" (or a CUDA wheel spec) on a GPU machine.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
# test workers (pytest-xdist, whole files per worker) and torch threads per worker: 2 x 1 fills the
# 2-core CI machine; `make test TEST_WORKERS=0` runs the suite in one process
TEST_WORKERS ?= 2
TEST_THREADS ?= 1
BIN    := $(VENV)/bin

.PHONY: demo test docs install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed-dev

demo: $(VENV)/.installed-dev
	$(BIN)/meddiff demo --out runs/demo --overwrite

test: $(VENV)/.installed-dev
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

docs: $(VENV)/.installed-dev
	$(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) runs/demo site
