# The README's commands. Everything runs from a fresh clone with no manual step.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU wheel of torch: installed first so that no dependency pulls a multi-GB CUDA build. The test extra
# then adds the engine (torch>=2.3, satisfied by it), the report and the dashboard extras: what the demo and
# the tests need.
TORCH  ?= torch==2.13.0

.PHONY: venv demo test test-services lint bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# The study, then its top 3 re-run with 2 new seeds each (a linked study); the last lines name the report.
demo: venv
	$(VENV)/bin/hpctune check -c examples/demo.yaml
	$(VENV)/bin/hpctune run --local --workers 2 -c examples/demo.yaml
	$(VENV)/bin/hpctune rerun-top digits-demo --k 3 --seeds 2 --local --workers 2 -c examples/demo.yaml

# Starts what the tests need (a PostgreSQL is started by the test suite itself; SLURM by this script).
test-services:
	bash scripts/test-services.sh

# Two processes: the suite mostly waits (servers, SLURM, subprocesses); SLURM's tests stay in one of them
# (tests/conftest.py). `make test PYTEST_ARGS=` runs it in one process.
PYTEST_ARGS ?= -n 2 --dist loadgroup
test: venv test-services
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff, then the import contracts of pyproject.toml (docs/architecture.md).
lint: venv
	$(VENV)/bin/ruff check hpc_tune tests benchmarks examples scripts
	$(VENV)/bin/lint-imports

bench: venv test-services
	$(PY) benchmarks/orchestration.py
	$(PY) benchmarks/scale.py
	$(PY) benchmarks/eval_speed.py
	$(PY) benchmarks/amp_tolerance.py
	$(PY) benchmarks/search_efficiency.py

clean:
	rm -rf runs examples/runs .pytest_cache .ruff_cache build *.egg-info
