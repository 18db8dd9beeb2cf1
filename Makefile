# Everything runs from a venv inside the repo, so a fresh clone builds its own.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The lowest and highest Python the package claims (requires-python >= 3.10), each in its own
# venv; found under pyenv (~/.pyenv/versions/3.10.*) or on PATH as python3.10.
OTHER_PYTHONS ?= 3.10 3.13
PYENV_VERSIONS ?= $(HOME)/.pyenv/versions

.PHONY: install demo test test-all test-other-pythons lint bench bench-all clean

# The compiled parts are built in place by the install: their sources are prerequisites too.
BUILD_INPUTS := pyproject.toml setup.py otel_memory/activity/_census.c otel_memory/kernel/_proc.c

$(STAMP): $(BUILD_INPUTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default: no collector, spans printed, daily log written to logs/.
demo: $(STAMP)
	$(BIN)/python examples/nations_dump.py

## The test suite (unit + end-to-end against a real OTLP receiver the tests start), then the
## census leak check under memray's allocation tracker (it skips itself without --memray).
test: $(STAMP)
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest --memray tests/test_census_memray.py

## Everything `test` runs, then the unit suite (no end-to-end tests) on each of OTHER_PYTHONS.
test-all: test test-other-pythons

test-other-pythons: $(OTHER_PYTHONS:%=test-python%)

# The venvs are kept between runs (make would otherwise delete them as intermediates).
.PRECIOUS: .venv-%/.installed

test-python%: .venv-%/.installed
	.venv-$*/bin/python -m pytest -q -m "not e2e" -p no:cacheprovider

.venv-%/.installed: $(BUILD_INPUTS)
	@py=$$(ls -d $(PYENV_VERSIONS)/$*.*/bin/python3 2>/dev/null | sort -V | tail -n 1); \
	if [ -z "$$py" ]; then py=$$(command -v python$*) || { echo "no Python $* (pyenv or PATH)" >&2; exit 1; }; fi; \
	echo "$$py -m venv .venv-$*"; "$$py" -m venv .venv-$*
	.venv-$*/bin/pip install --quiet --upgrade pip
	.venv-$*/bin/pip install --quiet -e '.[dev]'
	touch $@

## ruff, mypy --strict, and import-linter's layer contracts (pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check otel_memory tests examples benchmarks
	$(BIN)/mypy --strict otel_memory
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

## Every benchmark: task overhead, the event drain, the guard, the census, the leak reachability
## check, a whole asyncio service
## (about 10 min).
bench-all: bench
	$(BIN)/python benchmarks/drain.py
	$(BIN)/python benchmarks/guard.py
	$(BIN)/python benchmarks/census.py
	$(BIN)/python benchmarks/reachability.py
	$(BIN)/python benchmarks/whole_app.py

clean:
	rm -rf $(VENV) $(OTHER_PYTHONS:%=.venv-%) logs .pytest_cache .mypy_cache .ruff_cache
	rm -rf build *.egg-info otel_memory/*/_census.*.so otel_memory/*/_proc.*.so
