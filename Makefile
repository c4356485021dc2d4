# The README's two set-up commands:
#   make run    creates .venv, installs the package, runs the main job on its embedded default
#   make test   creates .venv with the test extras, runs the test suite
# Variables: PYTHON (interpreter for the venv), VENV, WORKDIR (of `make run`), TORCH (the torch
# requirement installed before the `port` extra, so pip never resolves a multi-GB CUDA build
# on a CPU machine; set e.g. TORCH="torch --index-url <your CUDA wheel index>" on a GPU box).
PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= runs/synth
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
BIN := $(VENV)/bin

.PHONY: run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

$(VENV)/.installed-run: $(BIN)/python setup.py requirements.txt
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test,port,tfds,tensorboard]"
	$(BIN)/python -m pip install -q --no-deps "torchattacks>=3.5"
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/python -m jax_abstain.main --config=configs/synth.py --workdir=$(WORKDIR)

# pytest exits 5 when it collects no test: a suite that silently runs nothing is a failure.
test: $(VENV)/.installed-test
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; exit 1; fi; \
	exit $$rc

bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) runs .pytest_cache
