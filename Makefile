# One-command set-up for lastreid. `make test` and `make demo` create the virtual
# environment on first use; later runs only redo what changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.lastreid-installed
TORCH := torch==2.14.1 torchvision==0.29.1
FASTREID := fastreid==1.4.0

.PHONY: setup test demo clean

setup: $(STAMP)

$(STAMP): setup.py requirements.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -r requirements.txt
	# fastreid's own pins (torch==1.13.1, ...) do not exist for Python 3.11: no deps.
	$(PIP) install -q --no-deps $(FASTREID)
	# Compiles fastreid's Cython evaluator into lastreid (see setup.py).
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import lastreid, fastreid.evaluation.rank as r; assert r.IS_CYTHON_AVAI"
	touch $@

test: setup
	$(PY) -m pytest -q tests

demo: setup
	$(PY) tools/run_demo.py

clean:
	rm -rf $(VENV) build projects/LaST/*.egg-info
	find projects -name '*.so' -delete
