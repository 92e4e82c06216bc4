#!/usr/bin/env bash
# Inference latency, nnopt against PyTorch, on this machine in one run: the
# median forward pass of a batch of the first Fashion-MNIST test images in
# eval mode (batch norm folded where nnopt folds it), one thread by default.
#
#   bench/latency.sh [MODELS...]            # default: seed CNN, resnet20, mobilenet_small
#   BATCH=1 THREADS=1 R=3 bench/latency.sh models/seed_cnn.nn
#   TORCHES="1.13" bench/latency.sh         # only some PyTorch builds
#   BASELINE=/old/build/nnopt bench/latency.sh   # another nnopt build in the same rounds
#
# nnopt: `nnopt compare MODEL --epochs 1 --train-limit 64 --threads T --json`
# (its latency_ms_batch1: median of 41 passes after training 64 images; BATCH
# other than 1 reads latency_ms_batch256, a batch of 256). PyTorch:
# bench/torch_latency.py (median of 201 passes under torch.inference_mode())
# as Debian's 1.13 (/usr/bin/python3) and, when scripts/setup_torch2.sh has
# installed it, PyPI's 2.x eager and compiled, each with OPENBLAS_NUM_THREADS=1
# and the OpenBLAS kernels nnopt uses. The programs alternate, R rounds; each
# figure is the median over the rounds. ratio = the fastest PyTorch's latency
# over nnopt's (above 1: nnopt is faster).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then MODELS=("$@"); else
  MODELS=(models/seed_cnn.nn models/resnet20.nn models/mobilenet_small.nn)
fi
BATCH=${BATCH:-1}
THREADS=${THREADS:-1}
R=${R:-3}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
case "$BATCH" in
  1) key=latency_ms_batch1 ;;
  256) key=latency_ms_batch256 ;;
  *) echo "latency.sh: BATCH is 1 or 256 (what nnopt compare measures)" >&2; exit 2 ;;
esac
[ -d "$DATA" ] || { echo "latency.sh: DATA=$DATA is not a directory" >&2; exit 2; }
. bench/lib_torch.sh
nn_ms() { # binary model -> ms
  "$1" compare "$2" --data "$DATA" --epochs 1 --train-limit 64 --test-limit 300 --threads "$THREADS" \
      --json --quiet --out "$tmp/c.svg" 2>/dev/null |
    $PY -c "import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])['$key'])"
}
torch_ms() { # label model -> ms
  local py flag
  read -r py flag <<<"$(torch_cmd "$1")"
  OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE="$BLAS_CORE" $py bench/torch_latency.py "$2" \
      --batch "$BATCH" --threads "$THREADS" --data "$DATA" ${flag:-} 2>/dev/null |
    $PY -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])["latency_ms"])'
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "# batch $BATCH, $THREADS thread(s), median of $R rounds, ms per forward pass; OpenBLAS $BLAS_CORE"
printf "%-20s %9s" model nnopt
[ -n "$BASELINE" ] && printf " %9s" baseline
for t in $TORCHES; do printf " %13s" "torch-$t"; done
[ -n "$TORCHES" ] && printf " %7s" ratio
printf "\n"
for m in "${MODELS[@]}"; do
  declare -A runs=()
  for _ in $(seq "$R"); do
    runs[nnopt]+="$(nn_ms build/nnopt "$m") "
    [ -n "$BASELINE" ] && runs[base]+="$(nn_ms "$BASELINE" "$m") "
    for tv in $TORCHES; do runs[$tv]+="$(torch_ms "$tv" "$m") "; done
  done
  a=$(printf "%s\n" ${runs[nnopt]} | median)
  printf "%-20s %9.4f" "$(basename "$m")" "$a"
  [ -n "$BASELINE" ] && printf " %9.4f" "$(printf "%s\n" ${runs[base]} | median)"
  best=""
  for tv in $TORCHES; do
    c=$(printf "%s\n" ${runs[$tv]} | median)
    best=$(awk -v x="$c" -v y="$best" 'BEGIN {print (y == "" || x < y) ? x : y}')
    printf " %13.4f" "$c"
  done
  [ -n "$TORCHES" ] && printf " %7.2f" "$(awk -v a="$a" -v c="$best" 'BEGIN {print c / a}')"
  printf "\n"
  unset runs
done
echo "# loadavg: $(cat /proc/loadavg)"
