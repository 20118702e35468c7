# cxdi: set-up, tests, benchmark, man pages and the demo pipeline.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test test-fast bench man install clean
.PHONY: robust

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m tests.bench
	$(BIN)/python -m tests.bench_assemble
	$(BIN)/python -m tests.bench_cluster

# issue 12's hard cases through the CLI (tests/ROBUSTNESS.md); ROBUST_OPTS="--full --seeds 1,2"
robust: $(STAMP)
	$(BIN)/python -m tests.robustness $(ROBUST_OPTS)

man: $(STAMP)
	$(BIN)/python -m cxdi_cli.commands._man man

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(MAKE) --no-print-directory -C examples -j2 OUT=$(CURDIR)/demo summary

clean:
	rm -rf demo build dist *.egg-info
