# The README's commands. Works on a fresh Debian machine with Python 3.11, as root or not.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_DEPS := $(VENV)/.run-deps
DEV_DEPS := $(VENV)/.dev-deps
PYTEST_ARGS ?=

.PHONY: install run test lint clean postgres-server chromium vendor binary

install: $(DEV_DEPS)

run: $(RUN_DEPS)
	$(BIN)/python wsgi.py

test: $(DEV_DEPS) postgres-server chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(DEV_DEPS)
	$(BIN)/ruff check .

# The single-file executable dist/nexus-proxy (PyInstaller, packaging/nexus-proxy.spec). `make
# test` does not depend on it: tests/packaging/test_binary.py builds it when missing or older
# than the sources, so a subset run (PYTEST_ARGS=-k …) skips the build.
binary: $(DEV_DEPS)
	packaging/build

# The suite starts its own throwaway PostgreSQL from the server binaries (tests/pg.py).
postgres-server:
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else \
	    echo "error: the PostgreSQL server is not installed: apt-get install postgresql" >&2; \
	    exit 1; \
	  fi; \
	fi

# The browser tests drive Debian's chromium through Playwright (no browser download).
chromium:
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "error: chromium is not installed: apt-get install chromium" >&2; \
	    exit 1; \
	  fi; \
	fi

# Refresh static/vendor/ (htmx, ECharts) from the npm registry, checked against its integrity.
vendor: $(RUN_DEPS)
	$(BIN)/python scripts/vendor_assets.py

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "error: Python 3.11 or newer is needed (set PYTHON=...)" >&2; exit 1; }
	@if ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	  else \
	    echo "error: $(PYTHON) cannot create virtual environments: install python3-venv" >&2; \
	    exit 1; \
	  fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(RUN_DEPS): requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -r requirements.txt
	@touch $@

$(DEV_DEPS): requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	@touch $@ $(RUN_DEPS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist
