#!/usr/bin/env bash
# cli_share.sh - nnopt processes share the cores (src/cli/share.c): a run
# that was given no thread count uses its share of the cores this process may
# use (the affinity mask) among the live nnopt processes in the per-user
# registry (NNOPT_SHARE_DIR here, a directory of this test's own, so that
# other tests running at the same time do not count).
#
# usage: bash tests/cli_share.sh <path-to-nnopt> <source-dir>
#
# Checks: alone a run takes every core; two trainings at once report fewer
# threads while they overlap (1 each on 2 cores) and each goes back up after
# the other ends; a live registered process counts; the entry of a process
# killed with -9 is ignored and removed, as is a file no process holds;
# --threads and a recipe's threads are left alone; NNOPT_SHARE=off takes
# every core and registers nothing; an unusable registry (not private) turns
# sharing off; a shared run's recipe leaves threads unset. Prints one
# PASS/FAIL line per check; exits 1 if any failed.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1
BG=""
on_exit() { for p in $BG; do kill -9 "$p" 2>/dev/null; done; }

REG=$T/reg
export NNOPT_SHARE_DIR=$REG
unset NNOPT_SHARE
CORES=$(nproc)   # the affinity mask, as nnopt counts it
HALF=$(( (CORES + 1) / 2 ))
SMALL=(--data "$DATA" --train-limit 2000 --test-limit 200 --epochs 2 --json)
LONG=(--data "$DATA" --train-limit 20000 --test-limit 200 --epochs 3 --json)

# threads FILE: the epochs' thread counts, space-separated
threads() { python3 -c 'import json,sys; print(" ".join(str(json.loads(l)["threads"]) for l in open(sys.argv[1])))' "$1" 2>/dev/null; }
# some_at_most N COUNTS / all_at_most N COUNTS: an epoch's / every epoch's
# count is at most N
some_at_most() { python3 -c 'import sys; t = list(map(int, sys.argv[2].split())); sys.exit(0 if t and min(t) <= int(sys.argv[1]) else 1)' "$1" "$2"; }
all_at_most() { python3 -c 'import sys; t = list(map(int, sys.argv[2].split())); sys.exit(0 if t and max(t) <= int(sys.argv[1]) else 1)' "$1" "$2"; }

# holder SECONDS: a registered live process (a Python stand-in holding its
# entry's lock as nnopt does); its pid in HOLDER once the entry exists
holder() {
    python3 -c '
import fcntl, os, sys, time
d = sys.argv[1]
os.makedirs(d, mode=0o700, exist_ok=True)
f = open(os.path.join(d, ".%d.new" % os.getpid()), "w")
fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
f.write("nnopt-share 1\npid %d\ncpus %s\n" % (os.getpid(), ",".join(map(str, sorted(os.sched_getaffinity(0))))))
f.flush()
os.rename(f.name, os.path.join(d, str(os.getpid())))
time.sleep(float(sys.argv[2]))' "$REG" "$1" &
    HOLDER=$!
    BG="$BG $HOLDER"
    for _ in $(seq 200); do [ -e "$REG/$HOLDER" ] && return 0; sleep 0.05; done
    return 1
}

# 1. alone: every core, on every epoch; the entry is gone after the run
timeout 120 "$NN" train "$MODEL" "${SMALL[@]}" >solo.json 2>solo.err
got=$(threads solo.json)
[ "$got" = "$CORES $CORES" ] && pass "alone: $CORES threads (every core) on every epoch" ||
    fail "alone: every core" "threads '$got', cores $CORES: $(head -c 300 solo.err)"
[ -d "$REG" ] && [ -z "$(ls -A "$REG")" ] && pass "the registry is left empty after the run" ||
    fail "registry empty after the run" "$(ls -la "$REG" 2>&1 | head -5)"
[ "$(stat -c %a "$REG" 2>/dev/null)" = 700 ] && pass "the registry is private (0700)" ||
    fail "registry private" "$(stat -c %a "$REG" 2>&1)"
timeout 120 "$NN" train "$MODEL" --data "$DATA" --train-limit 2000 --test-limit 200 --epochs 1 >solo.txt 2>&1
grep -Eq "^epoch 1/1 .* img/s  $CORES threads?$" solo.txt && grep -q ", $CORES threads," solo.txt &&
    pass "the epoch line and the first line name the threads" ||
    fail "the epoch line names the threads" "$(head -c 400 solo.txt)"

# 2. two trainings at once: each reports fewer threads while they overlap
#    (the second starts once the first is registered)
"$NN" train "$MODEL" "${LONG[@]}" >a.json 2>a.err &   # no timeout: $! is nnopt's pid
A=$!
BG="$BG $A"
for _ in $(seq 200); do [ -e "$REG/$A" ] && break; sleep 0.02; done
timeout 300 "$NN" train "$MODEL" "${LONG[@]}" >b.json 2>b.err
wait $A
ta=$(threads a.json) tb=$(threads b.json)
if [ "$CORES" -ge 2 ]; then
    some_at_most "$HALF" "$ta" && some_at_most "$HALF" "$tb" &&
        pass "two at once: each had at most $HALF of $CORES threads while they overlapped (a: $ta, b: $tb)" ||
        fail "two at once: fewer threads each" "a: '$ta', b: '$tb' ($(head -c 200 a.err b.err))"
else
    [ "$ta" = "1 1 1" ] && [ "$tb" = "1 1 1" ] && pass "two at once on 1 core: 1 thread each" ||
        fail "two at once on 1 core" "a: '$ta', b: '$tb'"
fi
[ -z "$(ls -A "$REG")" ] && pass "both entries removed at the end" || fail "entries removed" "$(ls -A "$REG")"

# 3. a run that starts alone takes every core and gives half back when
#    another registers, then takes them again when it leaves
if [ "$CORES" -ge 2 ]; then
    "$NN" train "$MODEL" --data "$DATA" --train-limit 30000 --test-limit 200 --epochs 4 \
        --json >c.json 2>c.err &
    C=$!
    BG="$BG $C"
    # another process registers after the first epoch and leaves after the second
    # (waiting as long as the run lives: under ASan beside other tests an
    # epoch can take longer than any fixed bound)
    while kill -0 $C 2>/dev/null && ! [ -s c.json ]; do sleep 0.02; done
    holder 600 || fail "setup: the holder registers"
    while kill -0 $C 2>/dev/null && [ "$(wc -l <c.json)" -lt 2 ]; do sleep 0.02; done
    kill "$HOLDER" 2>/dev/null
    wait "$HOLDER" 2>/dev/null
    wait $C
    tc=$(threads c.json)
    python3 -c 'import sys; t = list(map(int, sys.argv[2].split())); c = int(sys.argv[1]); sys.exit(0 if len(t) == 4 and t[0] == c and min(t) < c and t[-1] == c else 1)' "$CORES" "$tc" &&
        pass "alone, shared, alone again: the threads follow (epochs: $tc)" ||
        fail "the threads follow the registry during a run" "epochs '$tc' ($(head -c 200 c.err))"
fi

# 4. a live registered process counts; --threads and a recipe's threads
#    are left alone; NNOPT_SHARE=off takes every core and registers nothing
holder 120 || fail "setup: the holder registers"
timeout 120 "$NN" train "$MODEL" "${SMALL[@]}" >peer.json 2>peer.err
got=$(threads peer.json)
if [ "$CORES" -ge 2 ]; then
    all_at_most "$HALF" "$got" && pass "beside a live registered process: at most $HALF threads ($got)" ||
        fail "a live registered process counts" "threads '$got': $(head -c 300 peer.err)"
fi
timeout 120 "$NN" train "$MODEL" "${SMALL[@]}" --threads 2 >fixed.json 2>/dev/null
[ "$(threads fixed.json)" = "2 2" ] && pass "--threads 2 is left alone beside another process" ||
    fail "--threads 2 left alone" "threads '$(threads fixed.json)'"
printf '[train]\nthreads = 2\n' >two.ini
timeout 120 "$NN" train "$MODEL" "${SMALL[@]}" --config two.ini >fixedr.json 2>/dev/null
[ "$(threads fixedr.json)" = "2 2" ] && pass "a recipe's threads = 2 is left alone beside another process" ||
    fail "recipe threads left alone" "threads '$(threads fixedr.json)'"
NNOPT_SHARE=off timeout 120 "$NN" train "$MODEL" "${SMALL[@]}" --log off.csv >off.json 2>/dev/null &
O=$!
sleep 0.3
entries=$(find "$REG" -mindepth 1 ! -name "$HOLDER" | wc -l)
wait $O
[ "$(threads off.json)" = "$CORES $CORES" ] && [ "$entries" = 0 ] &&
    pass "NNOPT_SHARE=off: every core, no registry entry" ||
    fail "NNOPT_SHARE=off" "threads '$(threads off.json)', other entries $entries"
check "NNOPT_SHARE=off: the recipe records the threads used" grep -q "^threads = $CORES$" off.recipe.ini
timeout 120 "$NN" train "$MODEL" "${SMALL[@]}" --log on.csv >/dev/null 2>&1
check "a shared run's recipe leaves threads unset (reused, it shares again)" \
    bash -c "test -s on.recipe.ini && ! grep -q '^threads' on.recipe.ini"
kill "$HOLDER" 2>/dev/null
wait "$HOLDER" 2>/dev/null

# 5. the entry of a process killed with -9 stays but counts for nothing, and
#    is removed by the next run; so is a file that no process holds
"$NN" train "$MODEL" "${LONG[@]}" >k.json 2>/dev/null &
K=$!
BG="$BG $K"
for _ in $(seq 200); do [ -e "$REG/$K" ] && break; sleep 0.02; done
sleep 0.3
kill -9 $K
wait $K 2>/dev/null
[ -e "$REG/$K" ] && pass "setup: a killed run leaves its entry" || fail "setup: killed run's entry" "$(ls -A "$REG")"
printf 'nnopt-share 1\npid 4194300\ncpus 0\n' >"$REG/4194300"
timeout 120 "$NN" train "$MODEL" "${SMALL[@]}" >dead.json 2>dead.err
[ "$(threads dead.json)" = "$CORES $CORES" ] && pass "dead processes' entries are ignored: $CORES threads" ||
    fail "dead entries ignored" "threads '$(threads dead.json)': $(head -c 300 dead.err)"
[ ! -e "$REG/$K" ] && [ ! -e "$REG/4194300" ] && pass "dead processes' entries are removed" ||
    fail "dead entries removed" "$(ls -A "$REG")"

# 6. a registry that is not private is not used (sharing stays off)
chmod 755 "$REG"
holder 60 || fail "setup: the holder registers"
timeout 120 "$NN" train "$MODEL" "${SMALL[@]}" >open.json 2>open.err
[ "$(threads open.json)" = "$CORES $CORES" ] && [ ! -s open.err ] &&
    pass "a registry others can read is not used: every core, nothing on stderr" ||
    fail "a non-private registry is refused" "threads '$(threads open.json)': $(head -c 300 open.err)"
kill "$HOLDER" 2>/dev/null
wait "$HOLDER" 2>/dev/null
chmod 700 "$REG"

# 7. NNOPT_SHARE takes on or off
NNOPT_SHARE=maybe timeout 60 "$NN" train "$MODEL" "${SMALL[@]}" >bad.out 2>bad.err
rc=$?
[ $rc -eq 2 ] && [ ! -s bad.out ] && [ "$(cat bad.err)" = "nnopt: NNOPT_SHARE=maybe: expected on or off" ] &&
    pass "NNOPT_SHARE=maybe is refused (exit 2, one line)" || fail "NNOPT_SHARE=maybe refused" "exit $rc: $(head -c 200 bad.err)"

finish
