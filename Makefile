# Two commands: `make run` starts the server on SQLite, `make test` runs every check and test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test lint fuzz bench screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/fhirbox serve $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# Tests run in parallel on every CPU (pytest-xdist); PYTEST_WORKERS=0 runs them in this process (--pdb).
PYTEST_WORKERS ?= auto

test: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(ARGS)

# Generated requests against real servers on both backends (PostgreSQL when FHIRBOX_TEST_POSTGRES_URL is
# set); `make test` sends 2,000 per backend, `make fuzz FUZZ_EXAMPLES=N` as many as asked.
FUZZ_EXAMPLES ?= 20000

fuzz: $(VENV)/.installed-dev
	FHIRBOX_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -n $(PYTEST_WORKERS) tests/e2e/test_fuzz.py $(ARGS)

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench $(ARGS)

# The README's console screenshots (docs/screenshots/*.png), taken by the browser test in a real Chromium.
screenshots: $(VENV)/.installed-dev
	FHIRBOX_SCREENSHOT_DIR=docs/screenshots FHIRBOX_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -n 0 -q \
		"tests/console/test_console_browser.py::test_an_operators_day_in_the_console[sqlite]" $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache bench/results bench/peer/node_modules
