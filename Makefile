# The study's two commands on a fresh machine:
#   make reproduce [PROFILE=cpu|smoke|paper] [RETRAIN=1] [RETIME=1]   run every notebook with a profile
#   make test                                                unit tests + nbval on the notebooks
# Both create .venv (python3 -m venv; pip install -e .[dev]) when it is absent.

PROFILE ?= cpu
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# The benchmark archives are read from KGC_DATA_DIR when it is set (empty: download them from the
# ConvE release), else from ../shared/data next to the repository when it exists, else downloaded:
# kgdistill.core.environment.default_data_dir owns that default (scripts/reproduce.py and
# notebooks/conftest.py pass it to the notebook kernels as an absolute path).

.PHONY: reproduce runs test lint unit nbval notebooks clean-smoke help report

help:
	@echo "make reproduce [PROFILE=cpu|smoke|paper] [RETRAIN=1] [RETIME=1] - run the notebooks -> results/<profile>/"
	@echo "make runs [PROFILE=cpu|paper]                         - train the profile's missing runs only (no notebooks)"
	@echo "make test                                             - ruff, unit tests and nbval on notebooks/"
	@echo "make notebooks                                        - re-execute notebooks/ in place with the smoke profile (commit them)"
	@echo "make clean-smoke                                      - delete the smoke run records (after a library change)"
	@echo "make report [PROFILE=cpu|smoke]                       - the static HTML site of the executed notebooks -> build/site/<profile>/"

$(PYTHON):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -e .[dev]

reproduce: $(PYTHON)
	$(PYTHON) scripts/reproduce.py --profile $(PROFILE) $(if $(RETRAIN),--retrain,) $(if $(RETIME),--retime,)

# Train the records of a profile without the notebooks (resumable; see scripts/train_runs.py).
runs: $(PYTHON)
	$(PYTHON) scripts/train_runs.py --profile $(PROFILE)

test: lint unit nbval

# ruff (pyproject.toml [tool.ruff]): pyflakes, pycodestyle, sorted imports, 120 columns
lint: $(PYTHON)
	$(VENV)/bin/ruff check lib tests scripts benchmarks notebooks/conftest.py

unit: $(PYTHON)
	$(VENV)/bin/pytest tests

# The committed notebooks hold smoke-profile outputs; nbval re-executes them (training the smoke
# runs from scratch when results/smoke/runs is empty, as in CI) and compares every unmarked
# output. Records left in results/smoke/runs by an older library are reused: after a change to
# the library, `make clean-smoke` first.
nbval: $(PYTHON)
	$(VENV)/bin/pytest --nbval notebooks/ --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

# Refresh the committed outputs: the notebooks executed in place with the smoke profile, every
# run trained from scratch in a temporary folder (as CI will), so no stale record leaks in.
notebooks: $(PYTHON)
	$(PYTHON) scripts/reproduce.py --profile smoke --in-place --fresh-runs

# Forget the smoke records (never committed), e.g. after a library change.
clean-smoke:
	rm -rf results/smoke/runs

# The study as a static HTML site (findings page, one page per executed notebook, tables, figures)
# from results/<profile>/ as it is: nothing is executed (scripts/build_report.py; Sphinx + myst-nb).
# Open build/site/<profile>/index.html, or: python3 -m http.server -d build/site/<profile>
report: $(PYTHON)
	$(PYTHON) scripts/build_report.py --profile $(PROFILE)
