# Two commands on a fresh machine:
#   make run    set up .venv if needed, run the laptop study, print where the report is
#   make test   set up .venv if needed, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
EXTRAS ?= data,bdt,torch,tensorflow,dev
CORES  ?= all
STAMP   = $(VENV)/.installed

.PHONY: setup run test bench lint clean-results

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=python3.11)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

run: setup
	$(BIN)/snakemake --cores $(CORES) --rerun-incomplete
	$(BIN)/snakemake --report results/report.html
	@echo "Report: $(CURDIR)/results/report.html"

test: setup
	$(BIN)/python -m pytest

bench: setup
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

lint: setup
	$(BIN)/snakemake --lint

clean-results:
	rm -rf results/*/ .snakemake/
