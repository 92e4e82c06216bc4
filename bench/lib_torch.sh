# lib_torch.sh - what bench/compare.sh and bench/latency.sh share, sourced
# after `cd` to the source tree: the nnopt build, the PyTorch builds to run
# (TORCHES: default 1.13, plus 2.x eager and compiled when
# scripts/setup_torch2.sh has installed them; "none": no PyTorch), the
# optional BASELINE binary, the OpenBLAS kernels nnopt uses (BLAS_CORE, given
# to PyTorch too), torch_cmd LABEL -> "python [--compile]", and median.
[ -x build/nnopt ] || scripts/build.sh build >/dev/null
PY=/usr/bin/python3
if [ -z "${TORCHES:-}" ]; then
  TORCHES="1.13"
  [ -x .venv-torch2/bin/python ] && TORCHES="1.13 2.x 2.x-compile"
fi
[ "$TORCHES" = none ] && TORCHES=""
BASELINE=${BASELINE:-}
if [ -n "$BASELINE" ] && [ ! -x "$BASELINE" ]; then
  echo "$(basename "$0"): BASELINE=$BASELINE is not an executable" >&2
  exit 2
fi
torch_cmd() { # label -> python [flags]
  case "$1" in
    1.13) echo "$PY" ;;
    2.x) echo ".venv-torch2/bin/python" ;;
    2.x-compile) echo ".venv-torch2/bin/python --compile" ;;
    *) echo "$(basename "$0"): unknown PyTorch '$1' (1.13, 2.x, 2.x-compile)" >&2; exit 2 ;;
  esac
}
BLAS_CORE="$(build/nnopt system --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["openblas_core"])')"
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
