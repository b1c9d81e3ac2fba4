# bedside — the two commands the README promises (`make demo`, `make test`) and what they need.
# Everything is installed by these targets on a fresh machine: Debian packages, the main
# environment (.venv), the Enterprise Gateway environment (.venv-eg) and npm packages.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
EG_VENV := .venv-eg
ACRO_VENV := .venv-acro
TORCH := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: all system venv eg-venv acro-venv npm labextension deps test test-fast demo bench lint typecheck clean

all: deps

# Debian packages: bubblewrap for the kernel sandbox, chromium for the JupyterLab browser tests.
system: $(VENV)/.system-stamp
$(VENV)/.system-stamp:
	@mkdir -p $(VENV)
	@if ! command -v bwrap >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap; \
	  else echo "bubblewrap is missing: sudo apt-get install bubblewrap" >&2; exit 1; fi; fi
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is missing: sudo apt-get install chromium" >&2; exit 1; fi; fi
	@touch $@

# The main environment: the kernel, the sentry, the extension and the CLI.
venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml setup.py policy/_scanner.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[analysis,dev]"
	@# an editable install skips data-files: link the prebuilt JupyterLab extension, as
	@# `jupyter labextension develop` would (a wheel installs it as a data-file)
	@mkdir -p $(VENV)/share/jupyter/labextensions
	ln -sfn $(CURDIR)/extension/labextension $(VENV)/share/jupyter/labextensions/bedside-jupyterlab
	@# ... and the data-file that enables the server extension by default
	@mkdir -p $(VENV)/etc/jupyter/jupyter_server_config.d
	cp jupyter-config/jupyter_server_config.d/bedside.json $(VENV)/etc/jupyter/jupyter_server_config.d/
	$(PY) -m bedside.kernel install --sys-prefix --name bedside-kernel >/dev/null 2>&1 || true
	@touch $@

# Enterprise Gateway 3.3 pins jupyter_server<2, jupyter_client<7, pyzmq<25: its own environment.
eg-venv: $(EG_VENV)/.stamp
$(EG_VENV)/.stamp: gateway/requirements-eg.txt
	@test -x $(EG_VENV)/bin/python || $(PYTHON) -m venv $(EG_VENV)
	$(EG_VENV)/bin/python -m pip --disable-pip-version-check install -q -r gateway/requirements-eg.txt
	@touch $@

# ACRO (SACRO), the reference for the disclosure rules, pins pandas<=2.3.3: its own environment,
# used only by tests/kernel/test_acro_parity.py to compare verdicts cell by cell.
acro-venv: $(ACRO_VENV)/.stamp
$(ACRO_VENV)/.stamp:
	@test -x $(ACRO_VENV)/bin/python || $(PYTHON) -m venv $(ACRO_VENV)
	$(ACRO_VENV)/bin/python -m pip --disable-pip-version-check install -q acro==1.0.2
	@touch $@

# npm packages: a pinned solc for the anchor contract and a JSON-RPC dev chain.
npm: node_modules/.stamp
node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The JupyterLab extension (labextension/ -> extension/labextension/). Its built output is
# committed, so `pip install` and `make test` need no Node toolchain; run this after changing
# labextension/ (tests/frontend/test_build.py says when), then commit extension/labextension/.
labextension: venv
	cd labextension && npm ci --no-audit --no-fund --loglevel=error
	rm -rf labextension/lib labextension/tsconfig.tsbuildinfo extension/labextension
	cd labextension && node_modules/.bin/tsc && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" jupyter-builder build .
	cp labextension/install.json extension/labextension/install.json
	$(PY) labextension/digest.py --write

deps: system venv eg-venv acro-venv npm

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

demo: deps
	$(VENV)/bin/bedside demo

bench: deps
	$(PY) bench/run_all.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(EG_VENV) $(ACRO_VENV) node_modules build *.egg-info labextension/node_modules labextension/lib
