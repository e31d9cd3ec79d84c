#!/usr/bin/env bash
# The offline GPU check (docs/performance.md, GPU check): on a machine with CUDA and a preinstalled
# PyTorch but no internet, installs fastreid (no deps), yacs, termcolor and faiss-cpu from a
# folder of wheels into a target folder used over the machine's own packages, compiles the
# Cython evaluator, runs the `cuda` tests and benchmarks/gpu_throughput.py, and writes every
# figure to one file.
#
#   tools/gpu_check.sh WHEELS_DIR [OUT_DIR]      (or: make gpu-check WHEELS=WHEELS_DIR)
#
# GPU_PYTHON (default python3) is the interpreter with torch; nothing outside the
# repository and OUT_DIR is written (the target folder is .gpu-site/). Exits non-zero when
# a step fails, after writing what it has.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=${1:?usage: tools/gpu_check.sh WHEELS_DIR [OUT_DIR]}
OUT=${2:-gpu-check}
PY=${GPU_PYTHON:-python3}
SITE=$PWD/.gpu-site
FIGURES=$OUT/figures.txt
# The packages the GPU machine lacks, versions as requirements.txt, plus what they need that
# it may lack: PyYAML (yacs), packaging (faiss's loader), wheel (the build).
PACKAGES=${GPU_WHEELS:-"fastreid==1.4.0 yacs==0.1.8 termcolor==3.3.0 faiss-cpu==1.15.1
    PyYAML==6.0.4 packaging==26.4 wheel==0.48.0"}
mkdir -p "$OUT"
: > "$FIGURES"
status=0

say() { echo "$*" | tee -a "$FIGURES"; }
step() {  # step NAME COMMAND...: runs it, its output into the log and the figures file
    local name=$1; shift
    say "== $name: $*"
    "$@" 2>&1 | tee -a "$FIGURES"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then say "== $name FAILED (exit $rc)"; status=1; fi
    return "$rc"
}

commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
say "lastreid GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit"
command -v nvidia-smi >/dev/null && nvidia-smi -L 2>&1 | tee -a "$FIGURES"
say "load average: $(cut -d' ' -f1-3 /proc/loadavg), CPUs: $(nproc)"
step python "$PY" -c "import sys, torch, torchvision; print(sys.version.split()[0], 'torch', \
torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available())" || exit 1

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    say "== WARNING: torch sees no CUDA device: the cuda tests will skip and the GPU figures"
    say "   will be missing; the check reports FAILED (the CPU parts still run)"
    status=1
fi

rm -rf "$SITE"
step install "$PY" -m pip install --disable-pip-version-check -q --no-index --no-deps \
    --find-links "$WHEELS" --target "$SITE" $PACKAGES || exit 1
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
# Compiles fastreid's evaluator into lastreid (setup.py) against the fastreid just installed.
step build "$PY" -m pip install --disable-pip-version-check -q --no-index --no-deps \
    --no-build-isolation --upgrade --target "$SITE" . || exit 1
step evaluator "$PY" -c "import lastreid, fastreid.evaluation.rank as r; \
assert r.IS_CYTHON_AVAI, 'Cython evaluator missing'; print('Cython evaluator: ok')" || exit 1

step cuda-tests "$PY" -m pytest -q -rs -p no:cacheprovider -m cuda tests/test_cuda.py \
    --junitxml "$OUT/cuda-tests.xml"
step gpu-throughput "$PY" -W ignore benchmarks/gpu_throughput.py --json "$OUT/gpu_throughput.json"
outcome=$([ $status -eq 0 ] && echo "all steps passed" || echo "some steps FAILED")
say "== done: $outcome; figures in $FIGURES"
exit $status
