#!/usr/bin/env bash
# Data-parallel scaling on this machine, nnopt against PyTorch
# DistributedDataParallel, side by side in one run (issue 17): for each model,
# each layout RANKSxTHREADS (ranks under mpirun; 1xT is one process with T
# threads) trains 2 epochs of N real Fashion-MNIST images at R x B global
# batch (B per rank) and the second epoch is timed. Reported per row:
# images/s (all ranks), the speed-up over 1x1, and for nnopt the share of the
# epoch its steps stood waiting on gradient all-reduces and the share of the
# all-reduce time that ran hidden behind the backward pass (comm_wait_s and
# comm_overlap_s of `nnopt train --json`). PyTorch DDP runs the same layouts
# (gloo, bench/torch_ddp.py) under Debian's 1.13 and, when
# scripts/setup_torch2.sh installed it, PyPI's 2.x. The programs alternate, R
# rounds; each figure is the median.
#
# A layout RANKSxTHREADSsK (e.g. 2x1s2) trains a K-stage pipeline
# (`--stages K`, 1F1B, 2K micro-batches; RANKS / K data-parallel replicas, B
# per replica): PyTorch has no such layout here, so its columns stay empty.
#
# Then the sharing check: two independent `nnopt train` runs started at once
# (default threads each, as a user would start them) against one alone:
# each one's images/s as a share of the solo run's.
#
#   bench/scaling.sh                          # seed_cnn and conv_heavy, 1x1 1x2 2x1 2x1s2
#   MODELS="models/seed_cnn.nn" LAYOUTS="1x1 2x1" ROUNDS=5 bench/scaling.sh
#   TORCHES=none bench/scaling.sh             # nnopt only
# Variables: MODELS, LAYOUTS, BATCH (per rank, default 32), N (images, default
# 12800), ROUNDS (default 3), DATA, TORCHES ("1.13 2" default, or none).
# Run it alone: another process on these cores changes every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${MODELS:-"models/seed_cnn.nn models/conv_heavy.nn"}
LAYOUTS=${LAYOUTS:-"1x1 1x2 2x1 2x1s2"}
BATCH=${BATCH:-32}
N=${N:-12800}
ROUNDS=${ROUNDS:-3}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
TORCHES=${TORCHES:-"1.13 2"}
NN=${NN:-build/nnopt}
[ -x "$NN" ] || { echo "scaling.sh: build nnopt first (scripts/build.sh)" >&2; exit 1; }
MPI=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
export OPENBLAS_NUM_THREADS=1
export NNOPT_TUNE_CACHE=off # the layouts say the threads
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

pythons=()
for t in $TORCHES; do
  case $t in
    1.13) /usr/bin/python3 -c 'import torch' 2>/dev/null && pythons+=("1.13:/usr/bin/python3") ;;
    2) [ -x .venv-torch2/bin/python ] && pythons+=("2:.venv-torch2/bin/python") ;;
    none) ;;
  esac
done

# nnopt RANKS THREADS MODEL [STAGES]: "images/s wait_share overlap_share" of epoch 2
nnopt_run() {
  local r=$1 t=$2 m=$3 k=${4:-1} launch=() pipe=()
  [ "$r" -gt 1 ] && launch=("${MPI[@]}" -np "$r")
  [ "$k" -gt 1 ] && pipe=(--stages "$k")
  "${launch[@]}" "$NN" train "$m" --data "$DATA" --train-limit "$N" --test-limit 256 --epochs 2 \
    --batch "$BATCH" --threads "$t" "${pipe[@]}" --json 2>/dev/null | tail -1 | python3 -c '
import json, sys
e = json.loads(sys.stdin.read())
w, o, s = e.get("comm_wait_s", 0), e.get("comm_overlap_s", 0), e["seconds"]
print(e["images_per_s"], w / s, o / (o + w) if o + w > 0 else 0)'
}
torch_run() { # PYTHON RANKS THREADS MODEL: images/s
  "$1" bench/torch_ddp.py "$4" --ranks "$2" --threads "$3" --batch "$BATCH" --train-limit "$N" \
    --data "$DATA" 2>/dev/null | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["images_per_s"])'
}
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

echo "# data-parallel scaling: $(nproc) cores, batch $BATCH per rank, $N images, $ROUNDS rounds, $(date -u +%F)"
for m in $MODELS; do
  echo
  echo "## $(basename "$m" .nn)"
  echo
  header="| layout | nnopt img/s | x 1x1 | waiting | overlapped |"
  rule="|---|---|---|---|---|"
  for p in "${pythons[@]}"; do header="$header DDP ${p%%:*} img/s | nnopt / DDP ${p%%:*} |"; rule="$rule---|---|"; done
  echo "$header"; echo "$rule"
  base=""
  for l in $LAYOUTS; do
    r=${l%x*}; t=${l#*x}; k=1
    case $t in *s*) k=${t#*s}; t=${t%s*} ;; esac
    ips=(); waits=(); overl=(); declare -A tor=()
    for _ in $(seq "$ROUNDS"); do
      read -r a b c < <(nnopt_run "$r" "$t" "$m" "$k")
      ips+=("$a"); waits+=("$b"); overl+=("$c")
      [ "$k" -gt 1 ] && continue
      for p in "${pythons[@]}"; do tor[${p%%:*}]+=" $(torch_run "${p#*:}" "$r" "$t" "$m")"; done
    done
    ip=$(median "${ips[@]}"); [ -z "$base" ] && base=$ip
    row=$(python3 -c 'import sys; ip, b, w, o = map(float, sys.argv[1:5]); print("| %s | %.0f | %.2f | %.1f%% | %.0f%% |" % (sys.argv[5], ip, ip / b, 100 * w, 100 * o))' \
          "$ip" "$base" "$(median "${waits[@]}")" "$(median "${overl[@]}")" "$l")
    for p in "${pythons[@]}"; do
      if [ "$k" -gt 1 ]; then row="$row | |"; continue; fi
      # shellcheck disable=SC2086
      tp=$(median ${tor[${p%%:*}]})
      row="$row $(python3 -c 'import sys; a, b = map(float, sys.argv[1:]); print("%.0f | %.2f |" % (b, a / b))' "$ip" "$tp")"
    done
    echo "$row"
    unset tor
  done
done

# two independent trainings at once, default threads each
m=$(echo "$MODELS" | awk '{print $1}')
solo() { "$NN" train "$m" --data "$DATA" --train-limit "$N" --test-limit 256 --epochs 2 --batch 64 --json 2>/dev/null | tail -1 | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["images_per_s"])'; }
s=$(solo)
solo >"$TMP/a" & pa=$!
solo >"$TMP/b" & pb=$!
wait $pa $pb
echo
echo "two nnopt train runs of $(basename "$m" .nn) at once (batch 64, default threads): $(cat "$TMP/a") and $(cat "$TMP/b") img/s against $s alone: $(python3 -c 'import sys; s, a, b = map(float, sys.argv[1:]); print("%.0f%% and %.0f%% of solo" % (100 * a / s, 100 * b / s))' "$s" "$(cat "$TMP/a")" "$(cat "$TMP/b")")"
