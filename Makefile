# Everything runs from a venv inside the repo, so a fresh clone builds its own.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
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

lint: $(STAMP)
	$(BIN)/ruff check otel_memory tests examples benchmarks
	$(BIN)/mypy --strict otel_memory

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) logs .pytest_cache .mypy_cache .ruff_cache
