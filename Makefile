# `make run` and `make test` set everything up on a fresh machine, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8501
ADDRESS ?= 127.0.0.1

.PHONY: setup system run test test-fast lint bench clean

# The pinned requirements, then the project itself in editable mode (`cfdm` command; cdm_core
# importable from anywhere without sys.path changes). --no-deps: the pins above are the truth.
$(STAMP): requirements.txt requirements-base.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q -e . --no-deps
	touch $(STAMP)

system:
	@bash scripts/system-deps.sh

setup: system $(STAMP)

run: setup
	$(PY) -m streamlit run app.py --server.address $(ADDRESS) --server.port $(PORT)

lint: setup
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not browser"

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache .ruff_cache *.egg-info
