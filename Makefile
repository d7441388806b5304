# Entry points a newcomer needs: `make demo` (train and evaluate a small FCN-8s on synthetic data)
# and `make test` (the whole test suite). Both create .venv once; a stamp file makes reruns quick.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fcnseg-installed
# The CPU build of torch; an unpinned torch would pull several GB of CUDA packages.
TORCH := torch==2.13.0

.PHONY: venv demo test clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fcnseg demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
