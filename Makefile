# Two commands do all the set-up on a fresh machine:
#   make demo   -> virtual env, install, run `meddiff demo` (report in runs/demo/report.html)
#   make test   -> virtual env, install with test extras, run the test suite
#   make docs   -> the documentation site from docs/ into site/ (strict: broken links fail)
# TORCH: the torch requirement installed first, so pip does not pull a multi-GB CUDA build
# by accident; set TORCH="torch" (or a CUDA wheel spec) on a GPU machine.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
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
	$(BIN)/python -m pytest -q

docs: $(VENV)/.installed-dev
	$(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) runs/demo site
