# Two commands on a fresh machine with Python 3.11 and make:  `make run`  and  `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: run test lint format migrate worker sandbox bench clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Reinstall only when a requirements file changed (the stamp files record the last install).
$(VENV)/.runtime: requirements.txt | $(PY)
	$(PIP) install --quiet -r requirements.txt
	@touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(PY)
	$(PIP) install --quiet -r requirements-dev.txt
	@touch $@ $(VENV)/.runtime

migrate: $(VENV)/.runtime
	$(PY) manage.py migrate --noinput

## Web server + django-q2 worker + Knox sandbox with a demo account; Ctrl-C stops everything.
run: migrate
	$(PY) manage.py ensure_demo_admin
	$(PY) manage.py dev

## The whole test suite plus ruff.
test: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## A worker cluster on its own (production runs one or more of these per host).
worker: migrate
	$(PY) manage.py qcluster

## Benchmarks (full size; writes docs/performance.md). Quick set: $(PY) bench/run.py --quick
bench: $(VENV)/.dev
	$(PY) bench/run.py

sandbox: $(VENV)/.runtime
	$(PY) manage.py knox_sandbox

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
