#!/usr/bin/env bash
# cli_logs.sh - nothing a run writes is lost: an existing --log survives a run
# that fails its checks (it is cut only once the run starts), a full disk
# under the log ends the run with an error instead of exit 0 and lost rows
# (a small tmpfs; skipped where mounting is not allowed), and a second run
# writing the same log or checkpoint is refused naming the first one's pid.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1
BG=""
MNT=""
on_exit() {
    [ -n "$BG" ] && kill -9 "$BG" 2>/dev/null
    [ -n "$MNT" ] && umount "$MNT" 2>/dev/null
}
LIM=(--data "$DATA" --train-limit 600 --test-limit 100 --threads 2 --quiet)

# --- an existing log is kept when a later check fails (unwritable --save)
printf 'epoch,step\n1,10\n' >old.csv
cp old.csv old.csv.orig
if "$NN" train "$MODEL" "${LIM[@]}" --epochs 1 --log old.csv --save /nonexistent/dir/x.st \
    >out 2>err; then
    fail "an unwritable --save fails"
else
    check "an unwritable --save fails naming the path" grep -q "/nonexistent/dir/x.st" err
fi
check "the existing log is untouched" cmp old.csv old.csv.orig

# --- a log that is not a regular file is refused, and nothing blocks
mkfifo pipe.csv
if timeout 20 "$NN" train "$MODEL" "${LIM[@]}" --epochs 1 --log pipe.csv >out 2>err; then
    fail "a FIFO as --log is refused"
else
    rc=$?
    if [ $rc -ne 124 ] && grep -q "pipe.csv" err; then pass "a FIFO as --log is refused at once"
    else fail "a FIFO as --log is refused at once" "exit $rc: $(head -c 200 err)"; fi
fi

# --- two runs, one log (and one checkpoint)
"$NN" train "$MODEL" "${LIM[@]}" --epochs 200 --log shared.csv --save shared.st >bg.out 2>bg.err &
BG=$!
n=0
until [ -s shared.csv ] || [ $n -ge 3000 ]; do sleep 0.01; n=$((n + 1)); done
cp shared.csv shared.before
if "$NN" train "$MODEL" "${LIM[@]}" --epochs 1 --log shared.csv >out 2>err; then
    fail "a second run on the same log is refused"
else
    check "a second run on the same log is refused naming the first's pid" \
        grep -q "shared.csv: another nnopt run (pid $BG) is writing this log" err
fi
if "$NN" train "$MODEL" "${LIM[@]}" --epochs 1 --save shared.st >out 2>err; then
    fail "a second run on the same checkpoint is refused"
else
    check "a second run on the same checkpoint is refused naming the first's pid" \
        grep -q "shared.st: another nnopt run (pid $BG) is writing this checkpoint" err
fi
kill -TERM "$BG"
wait "$BG"
BG=""
check "the first run's log kept its rows (header and epochs, nothing mixed in)" python3 -c '
import sys
rows = open("shared.csv").read().splitlines()
assert rows[0].startswith("epoch,step,"), rows[:1]
epochs = [int(r.split(",")[0]) for r in rows[1:]]
assert epochs == list(range(1, len(epochs) + 1)), epochs
'
check "a stopped run leaves no lock file" bash -c '! ls | grep -q "[.]lock$"'

# --- a full disk under the log
mkdir small
if mount -t tmpfs -o size=64k tmpfs small 2>/dev/null; then
    MNT=$T/small
    # fill the file system but three pages: the recipe written beside the log,
    # the log's lock, and the log (its header and about 70 of the 100 rows)
    avail=$(df -B1 --output=avail small | tail -1)
    head -c $((avail - 12288)) /dev/zero >small/fill 2>/dev/null
    "$NN" train "$MODEL" "${LIM[@]}" --epochs 100 --train-limit 64 --log small/run.csv \
        --save run.st >out 2>err
    rc=$?
    if [ $rc -ne 0 ] && grep -q "small/run.csv: write failed: No space left on device" err; then
        pass "a full disk under the log fails the run with a clear error"
    else
        fail "a full disk under the log fails the run with a clear error" "exit $rc: $(head -c 300 err)"
    fi
    check "the checkpoint of the epoch whose row was lost is still written" test -s run.st
    umount small && MNT=""
else
    echo "SKIP full disk: cannot mount a tmpfs here (needs root)"
fi
finish
