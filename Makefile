# Two commands matter: `make demo` and `make test`. Both create .venv on first
# use (Python 3.11+ and pip are all they need) and install the project into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_FLAGS ?=

.PHONY: demo test test-slow test-all bench proofs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## the main job on the shipped zoo; report in reports/demo/
	$(BIN)/semio demo --out reports/demo --force

test: $(STAMP)  ## the test suite without the slow tests (CI)
	$(BIN)/python -m pytest $(PYTEST_FLAGS)

test-slow: $(STAMP)  ## only the tests marked slow
	$(BIN)/python -m pytest -m slow $(PYTEST_FLAGS)

test-all: $(STAMP)  ## everything
	$(BIN)/python -m pytest -m '' $(PYTEST_FLAGS)

bench: $(STAMP)  ## every benchmark script; tables land in benchmarks/results/
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

proofs: $(STAMP)  ## validate every proposition; results in reports/proofs/ (never in the source tree)
	$(BIN)/semio proofs --out reports/proofs

clean:
	rm -rf $(VENV) reports .pytest_cache .hypothesis
