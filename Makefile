# Two commands for a fresh machine (see README.md):
#   make demo   set everything up, then run the default suite (CPU, ~9 minutes; 526 s measured 2026-12-08): ring-suite
#   make test   set everything up, then run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ringnce-installed
DEMO_DIR ?= runs/default

.PHONY: setup demo test test-slow bench clean-venv

$(STAMP): pyproject.toml constraints.txt transfer/install_detectron2.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	# real offline data for Meta-Dataset sources; --no-deps: its module (which needs TensorFlow) is never imported
	$(BIN)/python -m pip install -q --no-deps animal_mnist==0.4
	# real annotated aerial photos (tree crowns) for detection; --no-deps: only its data/ folder is read
	$(BIN)/python -m pip install -q --no-deps deepforest==2.1.0
	$(BIN)/ring-install-detectron2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/ring-suite -o $(DEMO_DIR)

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

bench: setup
	$(BIN)/python benchmarks/pretrain_throughput.py
	$(BIN)/python benchmarks/ring_selection.py

clean-venv:
	rm -rf $(VENV)
