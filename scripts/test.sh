#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds, runs every test
# (ctest), then builds again with AddressSanitizer + UBSan and runs the whole
# suite again, then fuzzes every reader for 15 seconds (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build
(cd build && ctest --output-on-failure)
scripts/build.sh build-asan -DNN_SANITIZE=ON
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure)
scripts/fuzz.sh 15
echo "all tests passed (release and ASan+UBSan builds, fuzzing)"
