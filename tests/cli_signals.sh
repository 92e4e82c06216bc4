#!/usr/bin/env bash
# cli_signals.sh - a graceful stop: SIGINT or SIGTERM in the middle of an
# epoch finishes the step in progress, writes a resumable checkpoint, says how
# to resume and exits 128 + the signal's number (130, 143); resuming gives the
# checkpoint of the run that was never interrupted, byte for byte. A second
# signal ends the run at once. A temporary file left by a killed writer is
# removed at the next save.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1
BG=""
on_exit() { [ -n "$BG" ] && kill -9 "$BG" 2>/dev/null; }

FLAGS=(--data "$DATA" --train-limit 3000 --test-limit 300 --threads 2 --seed 3 --epochs 2 --json)

# meta FILE KEY: one metadata value of a checkpoint.
meta() {
    head -c 4096 "$1" 2>/dev/null | grep -ao "\"$2\":\"[0-9]*\"" | head -1 | sed 's/.*:"\([0-9]*\)"/\1/'
}

timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --save ref.st >ref.json 2>ref.err
[ $? -eq 0 ] && [ -s ref.st ] && pass "reference run" || { fail "reference run" "$(head -c 300 ref.err)"; finish; exit 1; }

# stop_run SIG EXPECT: trains in the background with --save-every 3, sends SIG
# once the first mid-epoch checkpoint exists, expects exit EXPECT, then resumes.
stop_run() {
    local sig=$1 expect=$2 dir=run_$1
    mkdir "$dir"
    "$NN" train "$MODEL" "${FLAGS[@]}" --save "$dir/run.st" --save-every 3 --log "$dir/run.csv" \
        >"$dir/out.json" 2>"$dir/err" &
    BG=$!
    local n=0
    until [ -n "$(meta "$dir/run.st" step)" ] || [ $n -ge 3000 ] || ! kill -0 "$BG" 2>/dev/null; do
        sleep 0.01; n=$((n + 1))
    done
    kill -"$sig" "$BG"
    wait "$BG"
    local rc=$?
    BG=""
    local step batch
    step=$(meta "$dir/run.st" step)
    batch=$(meta "$dir/run.st" batch_in_epoch)
    if [ $rc -eq "$expect" ] && grep -q "resume with: nnopt train .*--resume $dir/run.st" "$dir/err"; then
        pass "$sig: exits $expect and says how to resume"
    else
        fail "$sig: exits $expect and says how to resume" "exit $rc: $(head -c 300 "$dir/err")"
    fi
    check "$sig: the message names the signal and the step" grep -q "at step $step" "$dir/err"
    if [ -n "$batch" ] && [ "$batch" -gt 0 ]; then pass "$sig: the checkpoint is mid-epoch (batch $batch)"
    else fail "$sig: the checkpoint is mid-epoch" "batch_in_epoch '$batch'"; fi
    check "$sig: no lock or temporary file is left" bash -c "! ls $dir | grep -E '[.]lock|[.]tmp[.]'"
    # a writer killed mid-write long ago left a temporary file: gone after the next save
    : >"$dir/run.st.tmp.999999999"
    timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --save "$dir/run.st" --resume "$dir/run.st" \
        --log "$dir/run.csv" >>"$dir/out.json" 2>"$dir/err2"
    rc=$?
    if [ $rc -eq 0 ] && cmp -s ref.st "$dir/run.st"; then
        pass "$sig: resumed run's checkpoint equals the uninterrupted one byte for byte"
    else
        fail "$sig: resumed run's checkpoint equals the uninterrupted one" "exit $rc: $(head -c 300 "$dir/err2")"
    fi
    check "$sig: the stale temporary file was removed" test ! -e "$dir/run.st.tmp.999999999"
    check "$sig: the log has one row per epoch" bash -c "[ \$(wc -l < $dir/run.csv) -eq 3 ]"
}
stop_run INT 130
stop_run TERM 143

# two signals: the second ends the process at once (default action), even in
# the middle of a long step (a wide linear layer: seconds per step)
printf 'input shape=1x28x28\nflatten\nlinear out=40000\nrelu\nlinear out=10\nsoftmax_ce\n' >wide.nn
"$NN" train wide.nn --data "$DATA" --train-limit 4096 --test-limit 100 --batch 1024 --threads 2 \
    --epochs 5 --save wide.st >two.out 2>two.err &
BG=$!
n=0
until grep -q "nnopt: training" two.out 2>/dev/null || [ $n -ge 6000 ]; do sleep 0.01; n=$((n + 1)); done
sleep 0.5
kill -INT "$BG"
n=0
until grep -q "stopping after the current step" two.err || [ $n -ge 1000 ]; do sleep 0.01; n=$((n + 1)); done
kill -INT "$BG"
t0=$(date +%s%N)
wait "$BG"
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
BG=""
if [ $rc -eq 130 ] && [ $ms -lt 1500 ] && ! grep -q "stopped at" two.err; then
    pass "a second SIGINT stops at once (${ms} ms)"
else
    fail "a second SIGINT stops at once" "exit $rc after ${ms} ms: $(head -c 300 two.err)"
fi
finish
