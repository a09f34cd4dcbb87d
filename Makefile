# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv if it is
# missing and installs the package with its extras first; `make test` also installs the
# test server (nginx-light, from Debian's packages) that only the remote-cache tests need.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.trtcas-installed

.PHONY: setup test-server test demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[rtx,test,verify,ray]'
	touch $(STAMP)

setup: $(STAMP)

test-server:
	@if [ -f .ci/install-nginx.sh ]; then \
		echo "make test: the remote-cache tests need nginx-light and openssl; installing any that are missing with apt-get (.ci/install-nginx.sh)"; \
		bash .ci/install-nginx.sh; fi

test: setup test-server
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

demo: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh
	@echo; echo "trtcas is installed in $(VENV): run '. $(VENV)/bin/activate' to put it on your PATH"

bench: setup
	@for b in benchmarks/*_bench.py; do echo "== $$b"; $(PY) $$b; done

clean:
	rm -rf $(VENV) .demo .pytest_cache
