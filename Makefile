# Two entry points (README quickstart): `make reproduce` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
PROFILE ?= toy

.PHONY: setup reproduce all test test-fast lint clean-work

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# Table 1 of the default (toy) profile, from scratch: world, teacher traces, base student, every method.
reproduce: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) results/table1.csv

# Everything: both tables, calibration, figures and the generated report.
all: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --config profile=$(PROFILE)

test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q

test-fast: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -m "not slow"

lint: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake -n results/table1.csv

clean-work:
	rm -rf work .snakemake
