# Sealgate: `make demo` runs the local stack scenario, `make test` runs the suite.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
PYBIN := $(VENV)/bin/python
export ANVIL_BIN ?= $(CURDIR)/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
APT_PACKAGES := softhsm2 python3-bpfcc bpftool linux-headers-cloud-amd64 iproute2 redis-server

.PHONY: install install-python install-node install-system setup-ebpf contracts contracts-check demo test test-fast lint bench clean

install: install-system install-python install-node setup-ebpf

# stamp files make install idempotent: redone only when the pins change
install-python: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PYBIN) || $(PY) -m venv $(VENV)
	$(PYBIN) -m pip install --quiet --upgrade pip
	$(PYBIN) -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

install-node: node_modules/.installed
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	test -x node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
	touch $@

# system packages for the HSM and eBPF features; only as root, only when missing
install-system:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "apt-get install $$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing \
	      || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; }; \
	  fi; \
	else echo "install-system: not root, skipping apt packages ($(APT_PACKAGES))"; fi

# kernel headers link, bpffs, bcc visible in the venv (root only; idempotent)
setup-ebpf: install-python
	./deploy/setup-ebpf.sh "$$($(PYBIN) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

contracts: install-node
	node contracts/compile.cjs

contracts-check: install-node
	node contracts/compile.cjs --check

demo: install
	$(PYBIN) -m ext_authz.cli demo

test: install
	$(PYBIN) -m pytest

lint: install-python
	$(VENV)/bin/ruff check ext_authz tests bench
	$(VENV)/bin/mypy

test-fast: install
	$(PYBIN) -m pytest -m 'not slow'

bench: install
	$(PYBIN) bench/run_bench.py

clean:
	rm -rf .sealgate .pytest_cache
