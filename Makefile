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
	$(BIN)/python -m tests.bench_orient
	$(BIN)/python -m tests.bench_series
	$(BIN)/python -m tests.bench_slice

# issue 12's hard cases through the CLI (tests/ROBUSTNESS.md); ROBUST_OPTS="--full --seeds 1,2"
robust: $(STAMP)
	$(BIN)/python -m tests.robustness $(ROBUST_OPTS)

man: $(STAMP)
	$(BIN)/python -m cxdi_cli.commands._man man

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(MAKE) --no-print-directory -C examples -j2 OUT=$(CURDIR)/demo summary

clean:
	rm -rf demo build dist *.egg-info

# Property-based fuzzing of the readers, the recipe parser and the config: FUZZ examples per property
# (13 properties; the suite runs a short fixed-seed profile of the same tests).
.PHONY: fuzz
FUZZ ?= 400
fuzz: $(STAMP)
	CXDI_FUZZ=$(FUZZ) $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py
