# hybridlearn: `make train` runs the main job, `make test` the tests (both install on first use).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# extras to install: `make test EXTRAS=dev,tf` adds TensorFlow (the style transfer's TF-Hub path)
EXTRAS ?= dev
COMMA := ,
STAMP := $(VENV)/.installed-$(subst $(COMMA),-,$(EXTRAS))
export DATA_DIR ?= ./data

.PHONY: help install lint format train test test-all sweep bench reproduce clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with its dev extra (idempotent)

lint: $(STAMP)  ## ruff: lint and format check of the whole tree (CI runs it before the tests)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)  ## ruff: fix imports and format the tree
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

train: $(STAMP)  ## the main job: LeNet-5 on MNIST (~3 min on 2 CPU cores)
	$(PY) train.py experiment=lenet_mnist $(ARGS)

# two pytest-xdist workers that steal tests from each other (9 min on a 2-core Xeon, bare LeNet-5 epoch 6.6 s)
XDIST ?= -n 2 --dist worksteal

test: $(STAMP)  ## the fast test suite (real data from DATA_DIR; XDIST= runs it in one process)
	$(PY) -m pytest -q $(XDIST) $(ARGS)

test-all: $(STAMP)  ## every test, the slow full-scale ones included
	$(PY) -m pytest -q -m "" $(XDIST) $(ARGS)

sweep: $(STAMP)  ## example multirun: two learning rates x two seeds, 2 parallel jobs
	$(PY) train.py -m experiment=lenet_mnist hydra/launcher=joblib hydra.launcher.n_jobs=2 \
		model.lr=0.001,0.002 seed=1,2 trainer.max_epochs=2 $(ARGS)

bench: $(STAMP)  ## benchmarks (see benchmarks/RESULTS.md)
	$(PY) benchmarks/bench_lenet.py

reproduce: $(STAMP)  ## the whole paper as one Hydra sweep, resumable: lightning_logs/reproduce/paper/REPORT.md (QUICK=1: reduced settings, <= 5 min; ARGS='hydra/launcher=submitit_slurm ...': README)
	$(PY) train.py experiment=reproduce $(if $(filter 1 true yes,$(QUICK)),reproduce.quick=true) $(ARGS)

clean:  ## remove run outputs and caches (keeps .venv and data)
	rm -rf lightning_logs/*/ outputs multirun .pytest_cache
	@echo "kept: .venv, data/, and ~/.cache/hybridlearn (converted style weights, pretrained LeNets)"
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
