# Entry points: `make demo`, `make lab` (the tutorial notebooks) and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo lab test check bench clean chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# pip's build backend is chatty; keep its log and show it only when the install fails.
# The demo draws a chart (the plot extra); the notebooks need JupyterLab too (the lab extra).
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[plot]' > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	touch $@

$(VENV)/.installed-lab: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[lab]' > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	touch $@ $(VENV)/.installed

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]' > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	touch $@ $(VENV)/.installed $(VENV)/.installed-lab

demo: $(VENV)/.installed
	$(PY) -m flora_nb demo

# JupyterLab on the three tutorials (each runs on its own simulated account unless FLORA_API_KEY is set).
lab: $(VENV)/.installed-lab
	cd notebooks && ../$(VENV)/bin/jupyter lab 01-quickstart.ipynb

# Browser tests drive Debian's Chromium through Playwright (never `playwright install`).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing and not root: browser tests will skip (in CI they fail)"; fi; }

# Lint and types are part of the build: `make test` fails on either.
check: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy flora_nb

# The suite runs beside a throwaway PostgreSQL cluster (installed when missing and root, as Chromium is;
# started in a temporary directory, on a Unix socket only, and removed at the end): scripts/with-postgres.
test: $(VENV)/.installed-test chromium check
	bash scripts/with-postgres $(PY) -m pytest -q -n 5 --dist loadgroup

bench: $(VENV)/.installed-test
	bash scripts/with-postgres bash -c 'for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done'

clean:
	rm -rf $(VENV) build *.egg-info
