# One-command set-up for lastreid. `make test` and `make demo` create the virtual
# environment on first use; later runs only redo what changed.
PYTHON ?= python3
VENV ?= .venv
# The Python versions lastreid supports (setup.py's python_requires says the same; a test
# keeps them equal): numpy 2.4.6 has no build for 3.10, and 3.11-3.13 are the ones tested.
PYTHON_VERSIONS := 3.11 3.12 3.13
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.lastreid-installed
TORCH := torch==2.14.1 torchvision==0.29.1
FASTREID := fastreid==1.4.0
# pytest-xdist workers of `make test`: each test file runs whole in one worker (a module's shared
# runs are made once); each worker gets its share of the cores (tests/conftest.py).
TEST_WORKERS ?= 2

.PHONY: setup test demo clean gpu-wheels gpu-check

setup: $(STAMP)

$(STAMP): setup.py requirements.txt Makefile
	@test -x $(PY) || $(PYTHON) -c 'import sys; ok = "$(PYTHON_VERSIONS)".split(); \
	    v = "%d.%d" % sys.version_info[:2]; msg = "make: $(PYTHON) is Python %s;" % v; \
	    sys.exit(0 if v in ok else msg + " lastreid supports Python " + ", ".join(ok))'
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
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 tests

demo: setup
	$(PY) tools/run_demo.py

# The offline GPU check (docs/performance.md, GPU check). gpu-wheels runs where there is internet and
# fills WHEELS with what the GPU machine lacks (about 19 MB); gpu-check runs on the GPU
# machine, with GPU_PYTHON (its Python 3.12 with torch), and writes gpu-check/figures.txt.
WHEELS ?= wheels
GPU_PYTHON ?= python3
GPU_WHEELS := fastreid==1.4.0 yacs==0.1.8 termcolor==3.3.0 faiss-cpu==1.15.1 \
    PyYAML==6.0.4 packaging==26.4 wheel==0.48.0

gpu-wheels:
	# faiss-cpu 1.15.1 is tagged manylinux_2_28 only; fastreid 1.4.0 is a py3 wheel.
	$(PYTHON) -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
	    --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
	    -d $(WHEELS) $(GPU_WHEELS)

gpu-check:
	GPU_PYTHON=$(GPU_PYTHON) GPU_WHEELS="$(GPU_WHEELS)" tools/gpu_check.sh $(WHEELS) gpu-check

clean:
	rm -rf $(VENV) build projects/LaST/*.egg-info .gpu-site
	find projects -name '*.so' -delete
