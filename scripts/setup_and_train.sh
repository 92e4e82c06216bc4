#!/usr/bin/env bash
# The main job on a fresh Debian machine: installs what is missing, builds,
# then trains the seed CNN on Fashion-MNIST with the seed recipe (SGD lr 0.01,
# momentum 0.9, batch 64, 5 epochs) and prints the test accuracy.
# Extra arguments go to `nnopt train` (e.g. --seed 2 --save seed.st).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build
exec build/nnopt train models/seed_cnn.nn --epochs 5 --batch 64 --lr 0.01 --momentum 0.9 "$@"
