# Set-up and the everyday commands. Every target that runs code bootstraps its own virtual
# environment from a lock file, so a fresh machine gets exactly the versions CI tested:
#   requirements.lock      TransformerLens 3.9 (HookedTransformer), the default, in .venv
#   requirements-tl4.lock  TransformerLens 4.x (TransformerBridge only), in .venv-tl4 (make test-tl4)
#   requirements-ray.lock  the `ray` extra on TransformerLens 3.9 (requirements.lock's pins plus Ray), in
#                          .venv-ray (make test-ray: the Ray tests against a two-node local Ray cluster)
# The lock pins the CPU build of torch (torch==2.13.0+cpu): a bare `torch` requirement resolved
# from PyPI would pull a multi-GB CUDA build. `make lock` regenerates the lock after a change to
# pyproject.toml (see "Refreshing the lock" in README.md).
SHELL    := /bin/bash
PYTHON   ?= python3
VENV     ?= .venv
LOCK     ?= requirements.lock
PY       := $(VENV)/bin/python
PIP      := --quiet --disable-pip-version-check
# the CPU build of torch that the locks pin (found in pip's find-links or an extra index)
TORCH    ?= torch==2.13.0+cpu
UV       ?= uv==0.13.9
RUFF     ?= ruff==0.17.5
# extra uv options for `make lock`, e.g. TORCH_SOURCE="--extra-index-url https://download.pytorch.org/whl/cpu"
TORCH_SOURCE ?= $(if $(wildcard /opt/wheels),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)

.PHONY: install install-ray run test test-tl4 test-ray test-all test-latest bench bench-ray lint tables lock clean

$(VENV)/.installed: $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP) -r $(LOCK)
	$(PY) -m pip install $(PIP) --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(VENV)/.installed

## the main job: a quick experiment end to end; prints what it did and where its results are,
## ending with the HTML page of the trained model's circuits (runs/demo/inspect/index.html)
run: $(VENV)/.installed
	$(VENV)/bin/mechmem train recall --name demo --overwrite --quiet
	$(VENV)/bin/mechmem inspect runs/demo --quiet

## the default test suite (what CI runs)
test: $(VENV)/.installed
	$(PY) -m pytest -q

## the default test suite on TransformerLens 4.x (requirements-tl4.lock, in .venv-tl4)
test-tl4:
	$(MAKE) --no-print-directory VENV=.venv-tl4 LOCK=requirements-tl4.lock test

## the `ray` extra (requirements-ray.lock), in .venv-ray
install-ray:
	$(MAKE) --no-print-directory VENV=.venv-ray LOCK=requirements-ray.lock install

## the Ray tests (pytest -m ray) against a two-node Ray cluster started on this machine, stopped after, also on
## failure, with a check that none of its processes is left (tests/ray_cluster.py; docs/design/sweeps.md)
test-ray: install-ray
	.venv-ray/bin/python tests/ray_cluster.py --nodes 2 -- .venv-ray/bin/python -m pytest -q -rs -m ray tests

## also the slow reproductions
test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m "slow or not slow"

## the newest versions pyproject.toml allows (torch stays the CPU build), in .venv-latest
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install $(PIP) "$(TORCH)"
	.venv-latest/bin/python -m pip install $(PIP) --upgrade --upgrade-strategy eager -e ".[test,notebooks]" \
		--constraint <(echo "$(TORCH)")
	.venv-latest/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@echo "resolved (differences from $(LOCK)):"
	@diff <(grep -E '^[A-Za-z0-9]' $(LOCK) | tr A-Z_ a-z- | sort) \
		<(.venv-latest/bin/python -m pip freeze --exclude-editable | tr A-Z_ a-z- | sort) | grep '^>' || true
	.venv-latest/bin/python -m pytest -q

bench: $(VENV)/.installed
	for b in $(filter-out benchmarks/ray_sweep.py,$(wildcard benchmarks/*.py)); do echo "== $$b"; $(PY) $$b || exit 1; done

## sweep throughput on a two-node local Ray cluster vs one local worker (in .venv-ray)
bench-ray: install-ray
	.venv-ray/bin/python benchmarks/ray_sweep.py

## ruff: lint and format check (configured in pyproject.toml; ruff lives in .venv-tools, pinned by RUFF)
lint:
	test -x .venv-tools/bin/ruff || ($(PYTHON) -m venv .venv-tools && .venv-tools/bin/python -m pip install $(PIP) "$(RUFF)")
	.venv-tools/bin/ruff check .
	.venv-tools/bin/ruff format --check .

## regenerate the READMEs' claims / experiments / timing tables from mechmem/papers/*/results/*.json
tables: $(VENV)/.installed
	$(PY) scripts/claims_tables.py

## regenerate requirements.lock (TransformerLens 3.9), requirements-tl4.lock (4.x) and requirements-ray.lock
## from pyproject.toml (needs network access). The Ray lock is the `test` and `ray` extras constrained to
## requirements.lock, so every package the two share keeps requirements.lock's pin.
UV_COMPILE = .venv-tools/bin/uv pip compile pyproject.toml \
	--python-version 3.11 --python-platform x86_64-manylinux_2_28 $(TORCH_SOURCE) \
	--constraint <(echo "$(TORCH)") --no-emit-find-links --no-emit-index-url --custom-compile-command "make lock"
COMPILE = $(UV_COMPILE) --extra test --extra notebooks
lock:
	test -x .venv-tools/bin/uv || ($(PYTHON) -m venv .venv-tools && .venv-tools/bin/python -m pip install $(PIP) "$(UV)")
	$(COMPILE) --constraint <(echo "transformer-lens<4") -o requirements.lock
	$(COMPILE) --constraint <(echo "transformer-lens>=4,<5") -o requirements-tl4.lock
	$(UV_COMPILE) --extra test --extra ray --constraint requirements.lock -o requirements-ray.lock

clean:
	rm -rf $(VENV) .venv-tl4 .venv-ray .venv-latest .venv-tools runs
