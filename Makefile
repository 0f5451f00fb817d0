# The two commands of a fresh machine: `make demo` and `make test`.
# Each creates .venv if missing, installs torch==2.13.0 first (an unpinned
# torch pulls a multi-GB CUDA build), then the package (editable, so the
# compiled extensions are built in place) with its test extras.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.connector_sim-installed
SOURCES := setup.py pyproject.toml $(wildcard cpp/include/connector_sim/*.hpp src/pybind/*.cpp src/cython/*.pyx)

.PHONY: demo ddm test bench docs install clean

install: $(STAMP)

$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/connector-sim backends
	touch $@

demo: $(STAMP)
	$(BIN)/connector-sim demo --out report

# The drift-diffusion matching section (double well, cycling multi-well, Lorenz at N = 1e5; memories).
ddm: $(STAMP)
	$(BIN)/connector-sim ddm all --out report

test: $(STAMP)
	$(BIN)/pytest

# the HTML documentation (offline): docs/_build/html/index.html
docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

# asv against the installed environment (offline); results in benchmarks/.asv/
bench: $(STAMP)
	cd benchmarks && ../$(BIN)/asv machine --yes && \
	../$(BIN)/asv run -E existing:$(CURDIR)/$(BIN)/python --set-commit-hash $$(git rev-parse HEAD)
	$(BIN)/python benchmarks/compare.py

clean:
	rm -rf build $(VENV) report docs/_build docs/generated docs/auto_examples benchmarks/.asv connector_sim/_ext/*.so src/cython/*.cpp
