# Two commands on a fresh machine with Python 3.11 and make:  `make run`  and  `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: run test test-pg e2e lint format migrate worker sandbox bench clean

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

## The whole suite on the production stack: PostgreSQL and the Redis broker/cache on 127.0.0.1 (started if stopped).
## Tests get their own database (test_portal) and Redis database 15, which they flush.
PG_URL ?= postgres://postgres@127.0.0.1:5432/portal
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
test-pg: $(VENV)/.dev
	bash .ci/services
	DATABASE_URL=$(PG_URL) REDIS_URL=$(TEST_REDIS_URL) $(VENV)/bin/pytest

## Browser tests: Playwright driving Debian's Chromium (/usr/bin/chromium, or CHROMIUM=...) against a live server,
## a worker and the sandbox. Screenshots go to var/screenshots/.
e2e: $(VENV)/.dev
	$(VENV)/bin/pytest -c e2e/pytest.ini e2e

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
