# Set-up and the two everyday commands. Both bootstrap .venv on a fresh machine:
# the CPU build of torch first (a bare `torch` requirement would pull a multi-GB CUDA build),
# then mechmem itself with its test and notebook extras.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: install run test test-all bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,notebooks,ray]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(VENV)/.installed

## the main job: a quick experiment end to end; prints where its results are
run: $(VENV)/.installed
	$(VENV)/bin/mechmem train recall --name demo --overwrite --quiet

## the default test suite (what CI runs)
test: $(VENV)/.installed
	$(PY) -m pytest -q

## also the slow reproductions
test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m "slow or not slow"

bench: $(VENV)/.installed
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs
