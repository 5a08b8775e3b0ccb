# lss-lightning: `make run` trains and evaluates the default experiment; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run data test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	$(PY) -c "import torch, timm, lightning, hydra, camb, h5py, hdf5plugin, monai, zuko, tarp; print('torch', torch.__version__, 'timm', timm.__version__)"
	touch $(STAMP)

install: $(STAMP)

data: $(STAMP)  ## build the default mock store (data/mocks/default) if absent
	$(PY) -m lss_lightning.mocks

run: $(STAMP)  ## build the default store if absent, train, evaluate; prints where metrics and plots went
	$(PY) train.py

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	@for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info lss_lightning.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
