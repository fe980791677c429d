# The two commands of the README: `make dashboard` (the main job) and `make test`.
# Each sets up what it needs on a fresh machine: the virtual environments and, for the tests,
# Debian's Prometheus, node_exporter, Alertmanager and Chromium.

PYTHON ?= python3
VENV := .venv
LITELLM_VENV := .venv-litellm
LITELLM_PINS := 'litellm[proxy]==1.108.7' 'prometheus-client==0.26.0' 'prisma==0.15.0'
PYTEST_ARGS ?=

.PHONY: dashboard demo snapshot test lint venv litellm-venv litellm-venv-aidash system-deps clean

dashboard: $(VENV)/.installed-dashboard  ## the main job: the recorder and the dashboard on 127.0.0.1:8866
	$(VENV)/bin/aidash serve

demo: $(VENV)/.installed-dashboard litellm-venv-aidash  ## a LiteLLM proxy with traffic, and the dashboard
	$(VENV)/bin/aidash demo

snapshot: $(VENV)/.installed-dashboard
	$(VENV)/bin/aidash snapshot

test: $(VENV)/.installed-test $(LITELLM_VENV)/.installed litellm-venv-aidash system-deps lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .

venv: $(VENV)/.installed-test
litellm-venv: $(LITELLM_VENV)/.installed

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip

$(VENV)/.installed-dashboard: pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[dashboard]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-dashboard

# The gateway runs in an environment of its own, as operators run it: its pins never steer ours.
$(LITELLM_VENV)/.installed:
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install -q -U pip
	$(LITELLM_VENV)/bin/pip install -q $(LITELLM_PINS)
	touch $@

# aidash's request logger runs inside the gateway: install aidash there as operators do (editable,
# so the tests run this checkout), and check that it leaves LiteLLM's pins intact.
litellm-venv-aidash: $(LITELLM_VENV)/.installed-aidash

$(LITELLM_VENV)/.installed-aidash: pyproject.toml $(LITELLM_VENV)/.installed
	$(LITELLM_VENV)/bin/pip install -q -e .
	$(LITELLM_VENV)/bin/pip check
	touch $@

system-deps:
	@scripts/system-deps.sh

clean:
	rm -rf $(VENV) $(LITELLM_VENV) .pytest_cache .ruff_cache *.egg-info
