# authwire — two commands: `make run` (the demo / sidecar) and `make test`. Both set up the machine first.
# Everything here is idempotent: the second run only checks and moves on.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup system venv run serve test test-fast protos lint bench clean

setup: system venv

# apt packages, kernel header links, tracefs/debugfs/bpffs mounts (see scripts/setup-system.sh).
system:
	@bash scripts/setup-system.sh

venv: $(STAMP)

# Debian's bcc is bound to /usr/bin/python3: the venv must see system site-packages.
$(STAMP): pyproject.toml setup.py $(wildcard sidecar/authwire/*/_*.c)
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@$(PY) -m pip install -q --upgrade 'pip>=24'
	@$(PY) -m pip install -q -e '.[test]'
	@# xds-protos ships a stale copy of opentelemetry/proto/* over opentelemetry-proto's (grpc/grpc#42926):
	@# reinstall the real one last so OTLP export gets current LogRecord/ScopeLogs descriptors.
	@$(PY) -m pip install -q --force-reinstall --no-deps "opentelemetry-proto==$$($(PY) -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	@touch $(STAMP)

run: setup
	$(VENV)/bin/authwire demo

serve: setup
	$(VENV)/bin/authwire serve

test: setup
	$(PY) -m pytest -q -ra tests

test-fast: venv
	$(PY) -m pytest -q -ra -m "not kernel and not gateway" tests

protos: venv
	@$(PY) scripts/gen_protos.py

lint: venv
	$(VENV)/bin/ruff check sidecar tests bench scripts

bench: setup
	@for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info sidecar/*.egg-info .pytest_cache
