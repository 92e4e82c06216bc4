#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz; clang, ASan + UBSan, build dir
# build-fuzz) and runs each on its seed corpus, one target after the other.
#
#   scripts/fuzz.sh [LIMIT] [TARGET...]
#
# LIMIT is seconds per target (default 60) or a number of inputs per target
# written with a trailing "runs" (e.g. 10000000runs). TARGETs are among
# model checkpoint idx png recipe space (default: all). The seeds in
# tests/fuzz/corpus/<target> are only read; inputs that find new coverage go
# to build-fuzz/corpus/<target> (kept between runs), crashing inputs to
# build-fuzz/artifacts/, each run's log to build-fuzz/logs/<target>.log.
# Exits non-zero if any target crashes, leaks, hits UB, a failed message
# check or the memory or time limits. FUZZ_FLAGS adds libFuzzer flags; FUZZ_NICE
# (default 19) is the niceness the fuzzers run at. docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
limit="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(model checkpoint idx png recipe space)
case "$limit" in
  *runs) budget=(-runs="${limit%runs}") ;;
  *[!0-9]* | "") echo "usage: scripts/fuzz.sh [SECONDS|Nruns] [TARGET...]" >&2; exit 2 ;;
  *) budget=(-max_total_time="$limit") ;;
esac

CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Release -DNN_FUZZ=ON >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz >/dev/null

mkdir -p build-fuzz/artifacts build-fuzz/logs
failed=()
for t in "${targets[@]}"; do
  bin="build-fuzz/tests/fuzz/fuzz_$t"
  [ -x "$bin" ] || { echo "fuzz.sh: no target '$t'" >&2; exit 2; }
  mkdir -p "build-fuzz/corpus/$t"
  dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  log="build-fuzz/logs/$t.log"
  # 2 GB of memory at most, 10 s per input; an allocation over 128 MB fails
  # (ASan returns NULL: __asan_default_options in tests/fuzz/fuzz_common.h)
  # and the reader must say so. OpenBLAS's threads would only compete.
  if OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 nice -n "${FUZZ_NICE:-19}" "$bin" "${budget[@]}" \
       -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1 \
       -artifact_prefix="build-fuzz/artifacts/$t-" "${dict[@]}" ${FUZZ_FLAGS:-} \
       "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    runs=$(awk '/^stat::number_of_executed_units/ {print $2}' "$log")
    summary=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | sed 's/.*DONE[[:space:]]*//')
    echo "fuzz $t: ok, $runs inputs, $summary"
  else
    echo "fuzz $t: FAILED (log: $log)"
    grep -E 'ERROR|SUMMARY|^fuzz:|Test unit written' "$log" | head -5 | sed 's/^/  /'
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing failed: ${failed[*]}"
  exit 1
fi
