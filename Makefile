# Two entry points (see README): `make demo` and `make test`. Both build .venv from scratch.
# `make test-fast` is `make test` without the model extra (no torch; tests marked `model` not run).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
CHECKED := ledger wallets gateway model_server inferpay_cli witness

.PHONY: demo walkthrough test test-fast lint clean

# The full install also satisfies the fast one (a superset of it).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,model]'
	touch $@ $(VENV)/.installed-fast

$(VENV)/.installed-fast: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/inferpay demo

walkthrough: $(VENV)/.installed
	bash scripts/walkthrough.sh

test: $(VENV)/.installed
	$(PY) -m pytest -q
	$(MAKE) lint

test-fast: $(VENV)/.installed-fast
	$(PY) -m pytest -q -m "not model"
	$(MAKE) lint

# ruff (lint and format) and mypy (strict on ledger.* and wallets.*, see pyproject.toml).
lint: $(VENV)/.installed-fast
	$(VENV)/bin/ruff check $(CHECKED)
	$(VENV)/bin/ruff format --check $(CHECKED)
	$(VENV)/bin/mypy $(CHECKED)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Benchmarks (bench/, docs/performance.md); never part of `make test`, and they decide nothing there.
.PHONY: bench bench-quick bench-profile

$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[bench]'
	touch $@

# LiteLLM's proxy, the peers phase's peer, in a venv of its own (its pins must not mix with ours),
# under bench/out/ (ignored by git) unless LITELLM_VENV says elsewhere.
# prisma: for the probe of its per-key budgets (bench/litellm_peer.py).
LITELLM_VENV ?= bench/out/litellm-venv
export LITELLM_VENV
$(LITELLM_VENV)/.installed:
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install -q 'litellm[proxy]==1.108.7' 'prisma==0.15.0'
	touch $@

.PHONY: bench-peers-install
bench-peers-install: $(LITELLM_VENV)/.installed

bench: $(VENV)/.bench-installed $(LITELLM_VENV)/.installed
	$(PY) -m bench.run

bench-quick: $(VENV)/.bench-installed $(LITELLM_VENV)/.installed
	$(PY) -m bench.run --quick

# Only the phases beside peers (LiteLLM, the x402 middleware), with witnesses, and the real model;
# the report keeps the other phases' figures from the run before.
.PHONY: bench-peers bench-peers-quick
bench-peers: $(VENV)/.bench-installed $(LITELLM_VENV)/.installed
	$(PY) -m bench.run --only peers,witnessed,model

bench-peers-quick: $(VENV)/.bench-installed $(LITELLM_VENV)/.installed
	$(PY) -m bench.run --quick --only peers,witnessed,model

bench-profile: $(VENV)/.bench-installed
	$(PY) -m bench.profile all

# P1 and P2 with the ledger in PostgreSQL, one and two gateway processes (a throwaway schema per
# run in BENCH_POSTGRES); adds a PostgreSQL section to docs/performance/report.* (quick: bench/out/report-quick.*).
.PHONY: bench-wsgi bench-pg bench-pg-quick
BENCH_POSTGRES ?= postgresql://postgres@127.0.0.1:5432/test

# gunicorn against granian on P1's load (bench/p7_wsgi.py): a design question, not a key.
bench-wsgi: $(VENV)/.bench-installed
	$(PY) -m bench.p7_wsgi

bench-pg: $(VENV)/.bench-installed
	$(PY) -m bench.run --database '$(BENCH_POSTGRES)'

bench-pg-quick: $(VENV)/.bench-installed
	$(PY) -m bench.run --quick --database '$(BENCH_POSTGRES)'

# The reliability suite (reliability/, docs/reliability.md): Jepsen-style bank workload, crashes,
# clock steps, attacks, fuzzing, tampering. Writes reliability/out/report.json.
.PHONY: reliability reliability-quick

reliability: $(VENV)/.installed
	$(PY) -m reliability --full

reliability-quick: $(VENV)/.installed
	$(PY) -m reliability --quick
