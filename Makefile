# posedistill: `make demo` installs everything and runs the main job; `make test` runs all tests.
PYTHON ?= python3
TORCH  ?= torch==2.13.0
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: install demo test test-slow export clean-nbs readme bench docs

$(VENV)/.installed: settings.ini setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[dev,deploy]"
	touch $@

install: $(VENV)/.installed

# the main job, quick: about 5 minutes on 2 CPU cores (`posedistill demo` without --quick: the lessons' schedules)
demo: install
	$(BIN)/posedistill demo --quick

test: install
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests

test-slow: install
	$(BIN)/nbdev_test --n_workers 1 --flags slow --timing

export: install
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

readme: install
	$(BIN)/python tools/readme.py

bench: install
	$(BIN)/posedistill bench render
	$(BIN)/posedistill bench mixers

# The docs site in _docs/ (tools/docs.py: Quarto when installed, else an offline HTML site). Installs nothing.
# `make docs ONLY="00_keypoints index"` rebuilds only those pages.
docs:
	@test -f $(VENV)/.installed || { echo "make docs: the virtual environment $(VENV)/ is missing or incomplete; run 'make install' first" >&2; exit 1; }
	OMP_NUM_THREADS=1 $(BIN)/python tools/docs.py $(if $(ONLY),--only $(ONLY))
