# The README's two set-up commands:
#   make run    creates .venv, installs the package, runs the main job on its embedded default
#   make test   creates .venv with the test extras, runs the test suite
# and the further CI steps:
#   make test-slow      the long end-to-end tests (pytest -m slow)
#   make test-install   builds the wheel, installs it (not editable) with the version floors of
#                       pyproject.toml into a fresh venv, runs every console script's --help and
#                       the Figure 1 job by config name (tests/install_check.py, ~3 minutes)
# Variables: PYTHON (interpreter for the venv), VENV, WORKDIR (of `make run`), TORCH (the torch
# requirement installed before the `port` extra, so pip never resolves a multi-GB CUDA build
# on a CPU machine; set e.g. TORCH="torch --index-url <your CUDA wheel index>" on a GPU box).
PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= runs/synth
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
BIN := $(VENV)/bin

.PHONY: run test test-slow test-install bench mutants clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

$(VENV)/.installed-run: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

# pyautoattack is the official AutoAttack code (the golden reference of the attack tests);
# torchattacks and robustbench without their dependencies (torchvision, timm, ...): the tests use
# torchattacks' attacks and RobustBench's architecture code, loaded by path
# (tests/torch_reference_models.py), neither of which needs them.
$(VENV)/.installed-test: $(VENV)/.installed-run
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test,port,tfds,tensorboard]"
	$(BIN)/python -m pip install -q --no-deps "torchattacks>=3.5.1"
	$(BIN)/python -m pip install -q --no-deps "robustbench>=1.1.1"
	$(BIN)/python -m pip install -q --no-deps "pyautoattack>=0.2.0"
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/jax-abstain --config=synth --workdir=$(WORKDIR)

# pytest exits 5 when it collects no test: a suite that silently runs nothing is a failure.
PYTEST = rc=0; $(BIN)/python -m pytest $(1) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make $@: pytest collected no tests (exit 5)" >&2; exit 1; fi; \
	exit $$rc

# The suite without the long end-to-end tests (marked slow): under 15 minutes on 2 cores.
test: $(VENV)/.installed-test
	@$(call PYTEST,-m "not slow" $(PYTEST_ARGS))

# The long end-to-end tests (Figure 1 job, kill-and-resume, multi-process, full-size ports):
# CI's second step.
test-slow: $(VENV)/.installed-test
	@$(call PYTEST,-m slow $(PYTEST_ARGS))

test-install: $(VENV)/.installed-test
	@$(call PYTEST,tests/install_check.py)

bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.run

# Mutation testing of the numerical core (docs/mutation.md; not part of `make test`): mutmut,
# module by module under `nice -n 10`, then the kill rate per module. MUTANT_MODULES selects
# modules (names as in tests/mutation_rates.py), e.g. MUTANT_MODULES="losses metrics".
MUTANT_MODULES ?=
mutants: $(VENV)/.installed-test
	$(BIN)/python -m pip install -q "mutmut==3.8.1"
	$(BIN)/python tests/mutation_rates.py --in-process --survivors $(if $(MUTANT_MODULES),--only $(MUTANT_MODULES))

clean:
	rm -rf $(VENV) runs .pytest_cache mutants
