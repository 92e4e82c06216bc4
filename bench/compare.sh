#!/usr/bin/env bash
# One table, same machine, same run: nnopt bench vs PyTorch (Debian's 1.13) for
# model files x batch sizes x thread counts, alternating the two programs and
# reporting medians of their own medians.
#
#   bench/compare.sh [MODELS...]          # default: models/seed_cnn.nn
#   BATCHES="64 256" THREADS="1 2" R=3 bench/compare.sh models/seed_cnn.nn
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=("${@:-models/seed_cnn.nn}")
BATCHES=${BATCHES:-"64 256"}
THREADS=${THREADS:-"1 2"}
R=${R:-3}
[ -x build/nnopt ] || scripts/build.sh build >/dev/null
PY=/usr/bin/python3
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
printf "%-22s %6s %7s %14s %14s %7s\n" model batch threads nnopt_img/s torch_img/s ratio
for m in "${MODELS[@]}"; do
  for b in $BATCHES; do
    for t in $THREADS; do
      nn=(); th=()
      for _ in $(seq "$R"); do
        nn+=("$(build/nnopt bench "$m" --batch "$b" --threads "$t" --no-peak --json --repeats 3 |
                $PY -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])')")
        th+=("$(OPENBLAS_NUM_THREADS=1 $PY bench/torch_model_bench.py "$m" --batch "$b" \
                --threads "$t" --repeats 3 | $PY -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])')")
      done
      a=$(printf "%s\n" "${nn[@]}" | median); c=$(printf "%s\n" "${th[@]}" | median)
      printf "%-22s %6s %7s %14.0f %14.0f %7.2f\n" "$(basename "$m")" "$b" "$t" "$a" "$c" \
        "$(awk -v a="$a" -v c="$c" 'BEGIN {print a / c}')"
    done
  done
done
echo "# loadavg: $(cat /proc/loadavg)"
