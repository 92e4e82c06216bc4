#!/usr/bin/env bash
# Shows weights moving between nnopt and PyTorch, both ways. Exit 0 when both hold.
#
#   scripts/check_torch_interop.sh [--threads N] [--quick] [--nnopt PATH]
#
# (a) nnopt -> PyTorch: train the seed CNN for one epoch with nnopt and save the
#     checkpoint; evaluate it with `nnopt eval` and with
#     scripts/torch_eval_checkpoint.py (load_state_dict(strict=True) into
#     SeedCNN). The two test accuracies must agree within 0.05 percentage
#     points (5 of 10,000 images; float summation order may flip a couple).
# (b) PyTorch -> nnopt: export PyTorch's default initialization (seed 0) with
#     scripts/torch_export_init.py and train from it with `nnopt train --init`
#     for one epoch on 5,000 training images; the test accuracy on the first
#     1,000 test images must exceed 60%.
# (c) as (a) for the graph models (residual adds, batch norm with its int64
#     num_batches_tracked, depthwise-separable convs, dropout), 3,000 images.
# --quick (the ctest entry torch_interop): (a) on 2,000 training images, (c)
#     on resnet_small only, 500 images; (b) unchanged. About a minute.
# --nnopt PATH: the binary to test (default build/nnopt, built if absent).
# Needs Debian's PyTorch and NumPy under /usr/bin/python3 (scripts/deps.sh
# --torch installs them) and the Fashion-MNIST files in
# /usr/share/datasets/fashion-mnist; without them it says so and exits 77,
# which ctest counts as skipped.
set -euo pipefail

threads="$(nproc)"
quick=0
NN=build/nnopt
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads="${2:?--threads needs a value}"; shift 2 ;;
        --quick) quick=1; shift ;;
        --nnopt) NN="$(realpath -- "${2:?--nnopt needs a path}")"; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "check_torch_interop.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."

SKIP=77
PY=/usr/bin/python3
DATA=/usr/share/datasets/fashion-mnist
[ -x "$PY" ] || { echo "check_torch_interop.sh: $PY not found (Debian's python3 with PyTorch; scripts/deps.sh --torch)" >&2; exit $SKIP; }
# pydeps prints the command that installs what is missing
"$PY" -c 'import sys; sys.path.insert(0, "scripts"); from pydeps import require; require("numpy", "torch", prog="check_torch_interop.sh")' || exit $SKIP
ls "$DATA"/t10k-images-idx3-ubyte* >/dev/null 2>&1 || { echo "check_torch_interop.sh: no Fashion-MNIST in $DATA (scripts/deps.sh installs it)" >&2; exit $SKIP; }
if [ "$NN" = build/nnopt ] && [ ! -x build/nnopt ]; then scripts/build.sh >&2; fi
[ -x "$NN" ] || { echo "check_torch_interop.sh: $NN is not an executable" >&2; exit 1; }
export NNOPT="$NN" # scripts/nnopt_model.py expands models with blocks through it
if [ "$quick" -eq 1 ]; then
    a_limit=(--train-limit 2000); c_models=(resnet_small); c_limit=500
else
    a_limit=(); c_models=(resnet_small resnet20 mobilenet_small wide_cnn); c_limit=3000
fi
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT

# json_get KEY: reads one JSON object (the last line of stdin) and prints KEY.
json_get() { "$PY" -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])[sys.argv[1]])' "$1"; }

fail=0

echo "== (a) nnopt checkpoint -> PyTorch"
"$NN" train models/seed_cnn.nn --epochs 1 ${a_limit[@]+"${a_limit[@]}"} --threads "$threads" --save "$T/n.st" --json --quiet >"$T/train_a.json"
echo "nnopt train:  $(cat "$T/train_a.json")"
nn_acc="$("$NN" eval models/seed_cnn.nn --weights "$T/n.st" --threads "$threads" --json | json_get test_accuracy)"
pt_acc="$(OPENBLAS_NUM_THREADS=1 "$PY" scripts/torch_eval_checkpoint.py "$T/n.st" --threads "$threads" --json | json_get test_accuracy)"
echo "nnopt eval accuracy:   $nn_acc %"
echo "PyTorch eval accuracy: $pt_acc %"
if "$PY" -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= 0.05 + 1e-9 else 1)' "$nn_acc" "$pt_acc"; then
    res_a="PASS (|diff| = $("$PY" -c 'import sys; print("%.2f" % abs(float(sys.argv[1]) - float(sys.argv[2])))' "$nn_acc" "$pt_acc") points <= 0.05)"
else
    res_a="FAIL (accuracies differ by more than 0.05 points)"
    fail=1
fi
echo "(a) $res_a"

echo "== (b) PyTorch init -> nnopt training"
"$PY" scripts/torch_export_init.py "$T/t.st" --seed 0
"$NN" train models/seed_cnn.nn --init "$T/t.st" --epochs 1 --train-limit 5000 --test-limit 1000 \
    --threads "$threads" --json --quiet >"$T/train_b.json"
echo "nnopt train --init: $(cat "$T/train_b.json")"
b_acc="$(json_get test_accuracy <"$T/train_b.json")"
if "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 60.0 else 1)' "$b_acc"; then
    res_b="PASS (test accuracy $b_acc % > 60 %)"
else
    res_b="FAIL (test accuracy $b_acc % <= 60 %)"
    fail=1
fi
echo "(b) $res_b"

echo "== (c) graph models: residual + batch norm, depthwise-separable, dropout -> PyTorch"
res_c=PASS
for m in "${c_models[@]}"; do
    "$NN" train "models/$m.nn" --epochs 1 --train-limit "$c_limit" --threads "$threads" \
        --save "$T/$m.st" --json --quiet >/dev/null
    a="$("$NN" eval "models/$m.nn" --weights "$T/$m.st" --threads "$threads" --json | json_get test_accuracy)"
    b="$(OPENBLAS_NUM_THREADS=1 "$PY" scripts/torch_eval_checkpoint.py "$T/$m.st" --model "models/$m.nn" \
         --threads "$threads" --json | json_get test_accuracy)"
    echo "$m: nnopt $a %, PyTorch $b %"
    if ! "$PY" -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= 0.05 + 1e-9 else 1)' "$a" "$b"; then
        res_c="FAIL ($m differs)"
        fail=1
    fi
done
echo "(c) $res_c"

echo "== summary"
echo "(a) nnopt -> PyTorch: nnopt $nn_acc %, PyTorch $pt_acc %: $res_a"
echo "(b) PyTorch -> nnopt: $res_b"
echo "(c) graph models nnopt -> PyTorch: $res_c"
[ "$fail" -eq 0 ] && echo "torch interop: OK" || echo "torch interop: FAILED"
exit "$fail"
