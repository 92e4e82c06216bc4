#!/usr/bin/env bash
# PyPI's newest PyTorch (2.x) in .venv-torch2, for the speed comparisons in
# bench/ (bench/compare.sh uses it when present). Not needed to build or test
# nnopt. PyPI's Linux wheels bring NVIDIA's CUDA libraries: about 5 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-torch2/bin/python ] || "$PY" -m venv .venv-torch2
.venv-torch2/bin/python -m pip install -q --upgrade torch numpy
.venv-torch2/bin/python -c 'import torch; print("PyTorch", torch.__version__, "in .venv-torch2")'
