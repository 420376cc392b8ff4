# One obvious way to run things. `make dev` and `make test` set everything up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
DAGSTER_PORT ?= 3000

.PHONY: install dev test test-fast lint format bench reliability screenshots system-deps clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The main command: the UI on http://127.0.0.1:3000 with the embedded demo database
# created, seeded, and its organizations registered as partitions. `dagster dev` warns once
# that `dg dev` supersedes it (dg is not installed here): that line is silenced; the code's
# own beta warnings are silenced in export_pipelines/defs/__init__.py.
dev: install
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/export-pipelines sync-orgs
	PYTHONWARNINGS='ignore:Function `dev_command` is superseded' \
	  $(BIN)/dagster dev -h 127.0.0.1 -p $(DAGSTER_PORT) -w workspace.yaml

# Debian packages some tests use when present (LibreOffice converts our xlsx files,
# Chromium runs the UI test, poppler renders page images);
# installed when missing and possible, never fatal.
system-deps:
	@command -v soffice >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	   libreoffice-calc-nogui >/dev/null) || echo "note: LibreOffice not installed; its test will be skipped"; }
	@command -v pdftoppm >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	   poppler-utils >/dev/null) || echo "note: poppler-utils not installed; make screenshots needs it"; }
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	   chromium >/dev/null) || echo "note: Chromium not installed; the browser test will be skipped (it fails in CI)"; }

# The test command: installs everything, then runs the whole suite (slow tests included).
test: install system-deps
	$(BIN)/python -m pytest -q -m "slow or not slow"

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check export_pipelines export_pipelines_tests benchmarks
	$(BIN)/ruff format --check export_pipelines export_pipelines_tests benchmarks

format: install
	$(BIN)/ruff format export_pipelines export_pipelines_tests benchmarks
	$(BIN)/ruff check --fix export_pipelines export_pipelines_tests benchmarks

bench: install
	$(BIN)/python benchmarks/run_all.py

# Faults injected and hostile input tried, counted into RELIABILITY.md (a few minutes).
reliability: install
	$(BIN)/python reliability/run.py

# Page 1 of each people format (PDF, and Excel as LibreOffice prints it) of a demo month,
# as PNGs in screenshots/ for a reviewer (not committed).
screenshots: install system-deps
	$(BIN)/python tools/screenshots.py

clean:
	rm -rf data exports .dagster_home
