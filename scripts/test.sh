#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds, runs every test
# (ctest), then builds again with AddressSanitizer + UBSan and runs the suite
# again (all but the labels below), then fuzzes every reader for 15 seconds
# (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
stage() { echo "test.sh: $1 done, ${SECONDS} s since the start"; }
scripts/deps.sh
scripts/build.sh build
(cd build && ctest --output-on-failure)
stage "release suite"
scripts/build.sh build-asan -DNN_SANITIZE=ON
# Under the sanitizers: every test but the re-runs on the guard backend, the
# PyTorch-driven ones and those of several processes at once (labels,
# tests/CMakeLists.txt), which take most of an hour there; of those, the
# 2-rank data-parallel training (cli_mpi's sections a, d and e).
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-asan && ctest --output-on-failure -LE 'multiprocess|guard|python' &&
   CLI_MPI_PARTS="a d e" ctest --output-on-failure -R '^cli_mpi$')
unset ASAN_OPTIONS UBSAN_OPTIONS
stage "sanitizer suite"
scripts/fuzz.sh 15
stage "fuzzing"
echo "all tests passed (release and ASan+UBSan builds, fuzzing)"
