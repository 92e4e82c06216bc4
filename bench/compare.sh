#!/usr/bin/env bash
# One table, same machine, same run: nnopt bench against PyTorch for model
# files x batch sizes x thread counts. PyTorch runs as Debian's 1.13
# (/usr/bin/python3) and, when scripts/setup_torch2.sh has installed it,
# PyPI's 2.x eager and compiled (torch.compile), each with
# OPENBLAS_NUM_THREADS=1 (its best setting here) and OPENBLAS_CORETYPE set to
# the OpenBLAS kernels nnopt uses (nnopt system), so that Debian's PyTorch,
# which links the same OpenBLAS, gets them too where OpenBLAS's own choice is
# older than the CPU. The programs alternate,
# R rounds, each round starting one program later than the one before (so
# every program runs in every place of the order); each figure is the
# median of their medians. ratio = nnopt over
# the fastest PyTorch of the row.
#
#   bench/compare.sh [MODELS...]          # default: the seed CNN, resnet20,
#                                         # mobilenet_small, wide_cnn, conv_heavy
#   BATCHES="64 256" THREADS="1 2" R=3 bench/compare.sh models/seed_cnn.nn
#   TORCHES="1.13" bench/compare.sh       # only some PyTorch builds
#   STEPS=10 PRECISION=bf16 bench/compare.sh models/conv_heavy.nn
#   BASELINE=/old/build/nnopt TORCHES=none bench/compare.sh models/seed_cnn.nn
# Both sides train on the same real batches: the first 32 of DATA's
# Fashion-MNIST training set (default /usr/share/datasets/fashion-mnist),
# cycled; DATA=random times one random batch repeated instead, which flatters
# nnopt (PyTorch 1.13 ran the seed CNN at 5.0k images/s on it against 8.6k on
# real batches).
# STEPS: timed steps per repeat for both (default 50); PRECISION: nnopt's
# --precision (PyTorch runs fp32 always). BASELINE: another nnopt binary (an
# older commit's build), run in the same rounds; its column and new/baseline
# ratio show whether a change moved the speed. TORCHES=none: no PyTorch.
# BASELINE_DATA=1 gives the baseline --data too (builds that have it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then MODELS=("$@"); else
  MODELS=(models/seed_cnn.nn models/resnet20.nn models/mobilenet_small.nn models/wide_cnn.nn
          models/conv_heavy.nn)
fi
BATCHES=${BATCHES:-"64 256"}
THREADS=${THREADS:-"1 2"}
R=${R:-3}
STEPS=${STEPS:-50}
PRECISION=${PRECISION:-fp32}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
if [ "$DATA" = random ]; then
  data_flag=()
else
  [ -d "$DATA" ] || { echo "compare.sh: DATA=$DATA is not a directory (DATA=random for one random batch)" >&2; exit 2; }
  data_flag=(--data "$DATA")
fi
. bench/lib_torch.sh
echo "# PyTorch runs with OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=$BLAS_CORE"
echo "# batches: ${data_flag[1]:-one random batch}${data_flag[1]:+ (the first 32 training batches, cycled, on both sides)}"
img_s() { $PY -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["images_per_s"])'; }
printf "%-16s %5s %7s %11s" model batch threads "nnopt-$PRECISION"
[ -n "$BASELINE" ] && printf " %11s %8s" baseline "vs-base"
for t in $TORCHES; do printf " %13s" "torch-$t"; done
[ -n "$TORCHES" ] && printf " %7s" ratio
printf "\n"
for m in "${MODELS[@]}"; do
  for b in $BATCHES; do
    for t in $THREADS; do
      declare -A runs=()
      progs=(nnopt ${BASELINE:+base} $TORCHES)
      for r in $(seq "$R"); do
        # each round starts one program later: every program takes every
        # place in the order as often (nnopt, always first, right after
        # PyTorch 2.x compiled, ran wide_cnn at 2 threads 0.68x the speed
        # of the same build second)
        for k in "${!progs[@]}"; do
          p=${progs[$(( (k + r - 1) % ${#progs[@]} ))]}
          case $p in
          nnopt)
            runs[nnopt]+="$(build/nnopt bench "$m" --batch "$b" --threads "$t" --no-peak --json --repeats 3 \
                            --steps "$STEPS" --precision "$PRECISION" "${data_flag[@]}" | img_s) " ;;
          base)
            runs[base]+="$("$BASELINE" bench "$m" --batch "$b" --threads "$t" --no-peak --json --repeats 3 \
                           --steps "$STEPS" --precision "$PRECISION" ${BASELINE_DATA:+"${data_flag[@]}"} | img_s) " ;;
          *)
            read -r py flag <<<"$(torch_cmd "$p")"
            runs[$p]+="$(OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE="$BLAS_CORE" $py bench/torch_model_bench.py "$m" --batch "$b" \
                         --threads "$t" --repeats 3 --steps "$STEPS" ${flag:-} "${data_flag[@]}" 2>/dev/null | img_s) " ;;
          esac
        done
      done
      a=$(printf "%s\n" ${runs[nnopt]} | median)
      best=0
      printf "%-16s %5s %7s %11.0f" "$(basename "$m")" "$b" "$t" "$a"
      if [ -n "$BASELINE" ]; then
        o=$(printf "%s\n" ${runs[base]} | median)
        printf " %11.0f %8.3f" "$o" "$(awk -v a="$a" -v o="$o" 'BEGIN {print a / o}')"
      fi
      for tv in $TORCHES; do
        c=$(printf "%s\n" ${runs[$tv]} | median)
        best=$(awk -v x="$c" -v y="$best" 'BEGIN {print (x > y) ? x : y}')
        printf " %13.0f" "$c"
      done
      [ -n "$TORCHES" ] && printf " %7.2f" "$(awk -v a="$a" -v c="$best" 'BEGIN {print a / c}')"
      printf "\n"
      unset runs
    done
  done
done
echo "# loadavg: $(cat /proc/loadavg)"
