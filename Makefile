# `make run` and `make test` set everything up on a fresh machine, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8501
ADDRESS ?= 127.0.0.1

.PHONY: setup system run test test-fast bench clean

$(STAMP): requirements.txt requirements-base.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

system:
	@bash scripts/system-deps.sh

setup: system $(STAMP)

run: setup
	$(PY) -m streamlit run app.py --server.address $(ADDRESS) --server.port $(PORT)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not browser"

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
