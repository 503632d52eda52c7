# Two entry points: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# pip's build backend is chatty; keep its log and show it only when the install fails.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e . > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]' > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m flora_nb demo

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

bench: $(VENV)/.installed-test
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
