# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv if it is
# missing and installs the package with its extras (and the test server) first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.trtcas-installed

.PHONY: setup test demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[rtx,test,verify,ray]'
	@if [ -f .ci/install-nginx.sh ]; then bash .ci/install-nginx.sh; fi
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

demo: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh

bench: setup
	@for b in benchmarks/*_bench.py; do echo "== $$b"; $(PY) $$b; done

clean:
	rm -rf $(VENV) .demo .pytest_cache
