# Two commands on a fresh machine:
#   make run    set up .venv if needed, run the laptop study, print where the report is
#   make test   set up .venv if needed, build Horovod into it if needed, run the test suite
# Optional: make horovod   build Horovod (the diffusion's 'horovod' engine) into .venv; see README
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
EXTRAS ?= data,bdt,torch,tensorflow,dev
CORES  ?= all
# pytest-xdist workers of `make test` (each test file stays on one worker)
TEST_WORKERS ?= 2
STAMP   = $(VENV)/.installed

.PHONY: setup horovod run test bench lint clean-results

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=python3.11)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

# Horovod 0.28.1 (its last release) from its source release, with two fixes for current TensorFlow:
# C++17 instead of C++14 (TensorFlow's headers need it) and without xla_mpi_ops.cc (it includes an XLA
# header TensorFlow no longer ships). CPU build with gloo, no MPI; on a GPU site add
# HOROVOD_GPU_OPERATIONS=NCCL (make horovod HOROVOD_GPU_OPERATIONS=NCCL). Skipped when
# `import horovod.tensorflow` already works in the venv. HOROVOD_JOBS: parallel compile jobs.
HOROVOD_VERSION ?= 0.28.1
HOROVOD_BUILD   ?= build/horovod
HOROVOD_JOBS    ?= 2
HOROVOD_FLAGS   ?= HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
                   HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1
HOROVOD_GPU_OPERATIONS ?=
HOROVOD_SRC      = $(HOROVOD_BUILD)/horovod-$(HOROVOD_VERSION)
HOROVOD_STAMP    = $(VENV)/.horovod-$(HOROVOD_VERSION)

horovod: $(HOROVOD_STAMP)

$(HOROVOD_STAMP): $(STAMP)
	@if $(BIN)/python -c 'import horovod.tensorflow' >/dev/null 2>&1; then \
	  echo "Horovod already works in $(VENV)"; touch $@; exit 0; fi; \
	set -ex; \
	command -v cmake >/dev/null || $(BIN)/python -m pip install --quiet cmake; \
	export PATH="$(abspath $(BIN)):$$PATH"; \
	mkdir -p $(HOROVOD_BUILD); \
	test -f $(HOROVOD_BUILD)/horovod-$(HOROVOD_VERSION).tar.gz || \
	  $(BIN)/python -m pip download --quiet --no-binary :all: --no-deps -d $(HOROVOD_BUILD) horovod==$(HOROVOD_VERSION); \
	rm -rf $(HOROVOD_SRC); \
	tar -xzf $(HOROVOD_BUILD)/horovod-$(HOROVOD_VERSION).tar.gz -C $(HOROVOD_BUILD); \
	sed -i 's/CMAKE_CXX_STANDARD 14)/CMAKE_CXX_STANDARD 17)/' $(HOROVOD_SRC)/CMakeLists.txt $(HOROVOD_SRC)/horovod/torch/CMakeLists.txt; \
	sed -i '/xla_mpi_ops\.cc/d' $(HOROVOD_SRC)/horovod/tensorflow/CMakeLists.txt; \
	grep -q 'CMAKE_CXX_STANDARD 17)' $(HOROVOD_SRC)/CMakeLists.txt; \
	if grep -q xla_mpi_ops $(HOROVOD_SRC)/horovod/tensorflow/CMakeLists.txt; then exit 1; fi; \
	$(BIN)/python -m pip install --quiet setuptools wheel; \
	env $(HOROVOD_FLAGS) $(if $(HOROVOD_GPU_OPERATIONS),HOROVOD_GPU_OPERATIONS=$(HOROVOD_GPU_OPERATIONS)) \
	  MAKEFLAGS=-j$(HOROVOD_JOBS) $(BIN)/python -m pip install --no-build-isolation --no-cache-dir $(HOROVOD_SRC); \
	$(BIN)/python -c 'import horovod.tensorflow'; \
	touch $@

run: setup
	$(BIN)/snakemake --cores $(CORES) --rerun-incomplete
	$(BIN)/snakemake --report results/report.html
	@echo "Report: $(CURDIR)/results/report.html"

test: setup horovod
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25

bench: setup
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

lint: setup
	$(BIN)/snakemake --lint

clean-results:
	rm -rf results/*/ .snakemake/
