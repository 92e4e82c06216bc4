#!/usr/bin/env bash
# cli_search_pg.sh - `nnopt search` and `nnopt report` on a study held by
# PostgreSQL (docs/search.md, "Storage"): a throwaway server from Debian's
# postgresql (initdb + pg_ctl, a temporary data folder, its socket in the
# temporary folder, a free port), one database, one schema per study. Checks
# a search recorded in the database, two searches at once on one study that
# never run the same trial twice, --workers 2, kill -9 and a restart that
# keeps the finished trials and resumes the interrupted one (with
# --trials-dir), the report, and one-line errors that do not show a password.
# Skips (77) where PostgreSQL's server or nnopt's libpq support is missing.
#
# usage: bash tests/cli_search_pg.sh <path-to-nnopt> <source-dir>
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1
. "$SRC/tests/lib_search.sh" # (lib_cli.sh has made the working directory $T)
BG="" # a background nnopt, killed at exit
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
PGD=$T/pg # data folder, socket and log of the server
AS=()      # runs the server's programs: as root, as the postgres user
on_exit() {
    [ -n "$BG" ] && kill -9 "$BG" 2>/dev/null
    [ -f "$PGD/data/postmaster.pid" ] &&
        "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGD/data" -m immediate stop >/dev/null 2>&1
}
[ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] ||
    { echo "SKIP PostgreSQL's server (Debian's postgresql) is not installed"; exit 77; }
if "$NN" report "postgresql:///nnopt?host=$T/none" --out x.html --markdown x.md 2>&1 |
    grep -q "built without PostgreSQL"; then
    echo "SKIP this nnopt was built without PostgreSQL (libpq-dev)"; exit 77
fi
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || { echo "SKIP running as root, and no postgres user to run the server"; exit 77; }
    AS=(runuser -u postgres --)
    chmod 755 "$T"
fi
mkdir "$PGD" && { [ ${#AS[@]} -eq 0 ] || chown postgres "$PGD"; }
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if ! "${AS[@]}" "$PGBIN/initdb" -D "$PGD/data" -U nnopt --auth=trust -E UTF8 >"$PGD/initdb.log" 2>&1 ||
    ! "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGD/data" -l "$PGD/server.log" -w -t 60 \
        -o "-k $PGD -p $PORT -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null 2>&1 ||
    ! "$PGBIN/createdb" -h "$PGD" -p "$PORT" -U nnopt nnopt 2>"$PGD/createdb.log"; then
    fail "a PostgreSQL server starts" "$(tail -c 600 "$PGD"/*.log)"
    finish
    exit 1
fi
pass "a PostgreSQL server starts (port $PORT)"

# uri SCHEMA: the study in that schema of database nnopt (created by search)
uri() { echo "postgresql:///nnopt?host=$PGD&port=$PORT&user=nnopt&options=-csearch_path%3D$1"; }
# q SCHEMA SQL: one query's rows, columns joined by |
q() { PGOPTIONS="-csearch_path=$1" "$PGBIN/psql" -X -A -t -q -h "$PGD" -p "$PORT" -U nnopt -d nnopt -c "$2"; }


# 1. a search: every trial in the database, in a final state, with its curve
space 1500 2 >s.space
"$NN" search s.space --data "$DATA" --trials 4 --study "$(uri s1)" --json >run.json 2>err.txt
rc=$?
n=$(grep -c '^{"trial":' run.json)
[ $rc -eq 0 ] && [ "$n" -eq 4 ] && pass "search: 4 trials run (exit 0, one JSON object each)" ||
    fail "search: 4 trials run" "exit $rc, $n objects: $(head -c 300 err.txt)"
states=$(q s1 "select count(*) from trials where state in ('complete','pruned')")
[ "$states" = 4 ] && pass "study: 4 trials complete or pruned" || fail "study: 4 trials complete or pruned" "$states"
bad=$(q s1 "select count(*) from trials t where (select count(*) from epochs e where e.trial = t.id) < 1 or (state = 'complete' and (select count(*) from epochs e where e.trial = t.id) <> 2)")
[ "$bad" = 0 ] && pass "study: every trial's curve recorded (2 epochs when complete)" || fail "study: curves" "$bad trials without"
tested=$(q s1 "select count(*) from trials where test_accuracy > 0.3")
[ "${tested:-0}" -ge 1 ] && pass "finalists: test accuracy measured" || fail "finalists: test accuracy measured" "$tested"
[ -d nnopt.s1.trials ] && pass "default trials folder: DATABASE.SCHEMA.trials (nnopt.s1.trials)" ||
    fail "default trials folder nnopt.s1.trials" "$(ls)"

# 2. two searches at once on one study: exactly 12 trials, none run by both
space 1500 2 >w.space
"$NN" search w.space --data "$DATA" --trials 12 --study "$(uri s2)" >w1.txt 2>&1 &
BG=$!
"$NN" search w.space --data "$DATA" --trials 12 --study "$(uri s2)" >w2.txt 2>&1
rc2=$?
wait $BG; rc1=$?; BG=""
n=$(q s2 "select count(*) from trials where state in ('complete','pruned')")
total=$(q s2 "select count(*) from trials")
pids=$(q s2 "select count(distinct pid) from trials")
dup=$(cat w1.txt w2.txt | grep -oE '^trial +[0-9]+' | sort | uniq -d | wc -l)
lines=$(cat w1.txt w2.txt | grep -cE '^trial +[0-9]+')
[ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ "$total" = 12 ] && [ "$n" = 12 ] && [ "$dup" = 0 ] &&
    [ "$lines" = 12 ] && [ "$pids" = 2 ] &&
    pass "two searches on one study: 12 trials, each run by one of the 2, none by both" ||
    fail "two searches on one study" "exit $rc1/$rc2, $total trials ($n complete or pruned), $lines trial lines, $dup run twice, $pids owners"

# 3. --workers 2: one search, two processes
"$NN" search w.space --data "$DATA" --trials 6 --workers 2 --study "$(uri s3)" >w3.txt 2>&1
rc=$?
n=$(q s3 "select count(*) from trials where state in ('complete','pruned')")
pids=$(q s3 "select count(distinct pid) from trials")
[ $rc -eq 0 ] && [ "$n" = 6 ] && [ "$pids" = 2 ] && pass "--workers 2: 6 trials shared by 2 processes" ||
    fail "--workers 2: 6 trials shared by 2 processes" "exit $rc, $n trials, $pids owners: $(tail -c 300 w3.txt)"

# 4. kill -9 in the middle, restart: finished trials kept, the interrupted one resumed
space 3000 3 >k.space
K=(search k.space --data "$DATA" --trials 3 --sampler random --pruner none --study "$(uri s4)" --trials-dir k.trials)
"$NN" "${K[@]}" >k1.txt 2>&1 &
BG=$!
deadline=$((SECONDS + 600)) # slow builds (ASan) on a busy machine take minutes
while [ $SECONDS -lt $deadline ]; do
    sleep 0.1
    done_n=$(q s4 "select count(*) from trials where state = 'complete'" 2>/dev/null)
    ep=$(q s4 "select min(t.id) from epochs e join trials t on t.id = e.trial where t.state = 'running'" 2>/dev/null)
    # a running trial with an epoch recorded and its checkpoint written
    [ "${done_n:-0}" -ge 1 ] && [ -n "$ep" ] && [ -f "k.trials/trial_$(printf %06d "$ep").st" ] && break
done
kill -9 $BG 2>/dev/null; wait $BG 2>/dev/null; BG=""
before=$(q s4 "select id, train_seconds from trials where state = 'complete' order by id")
interrupted=$(q s4 "select id from trials where state = 'running'")
[ -n "$before" ] && [ -n "$interrupted" ] && pass "kill -9: a complete and a running trial in the study" ||
    fail "kill -9: a complete and a running trial in the study" "complete: $before running: $interrupted"
ckpt=$(ls k.trials/trial_"$(printf %06d "${interrupted:-0}")".st 2>/dev/null)
"$NN" "${K[@]}" >k2.txt 2>&1
rc=$?
after=$(q s4 "select id, train_seconds from trials where id in ($(echo "${before:-0}" | cut -d'|' -f1 | paste -sd,)) order by id")
[ $rc -eq 0 ] && [ "$before" = "$after" ] && pass "restart: every finished trial kept as it was" ||
    fail "restart: every finished trial kept as it was" "exit $rc: $(tail -c 300 k2.txt)"
total=$(q s4 "select count(*) from trials"); fin=$(q s4 "select count(*) from trials where state = 'complete'")
[ "$total" = 3 ] && [ "$fin" = 3 ] && pass "restart: the search completes its 3 trials, none added twice" ||
    fail "restart: 3 trials" "$total trials, $fin complete"
if [ -n "$interrupted" ]; then
    st=$(q s4 "select state from trials where id = $interrupted")
    resumed=$(grep -c "^trial *$interrupted " k2.txt)
    [ "$st" = complete ] && [ "$resumed" = 1 ] && [ -n "$ckpt" ] &&
        pass "restart: the interrupted trial $interrupted resumed from its checkpoint and finished" ||
        fail "restart: the interrupted trial resumed" "state $st: $(head -c 400 k2.txt)"
fi
ls k.trials/trial_* >/dev/null 2>&1 && [ ! -e nnopt.s4.trials ] &&
    pass "--trials-dir: the checkpoints in k.trials" || fail "--trials-dir: the checkpoints in k.trials" "$(ls)"
ls k.trials/*.tmp.* >/dev/null 2>&1 && fail "restart: no temporary checkpoint left" "$(ls k.trials)" ||
    pass "restart: no temporary checkpoint left"

# 5. the report reads the study from PostgreSQL
"$NN" report "$(uri s1)" --out r.html --markdown r.md --json >r.json 2>r.err
rc=$?
[ $rc -eq 0 ] && grep -q "<svg" r.html && [ -s r.md ] &&
    python3 -c "import json, sys; d = json.load(open('r.json')); sys.exit(d['trials'] != 4)" &&
    pass "report: the page, the summary and --json from a PostgreSQL study" ||
    fail "report: from a PostgreSQL study" "exit $rc: $(head -c 300 r.err)"

# 6. errors: one line, non-zero exit, no password shown
check_error "error: a study made with another space" "another search space" \
    "$NN" search k.space --data "$DATA" --study "$(uri s1)" --trials 1
check_error "error: no server" "cannot connect to the study" \
    "$NN" search s.space --data "$DATA" --study "postgresql:///nnopt?host=$T/nowhere&port=$PORT" --trials 1
out=$("$NN" report "postgresql://nnopt:secret@127.0.0.1:1/nnopt" --out x.html --markdown x.md 2>&1)
rc=$?
[ $rc -ne 0 ] && [ "$(echo "$out" | wc -l)" = 1 ] && echo "$out" | grep -q "nnopt:\*\*\*@" &&
    ! echo "$out" | grep -q secret && pass "error: the password is masked" ||
    fail "error: the password is masked" "exit $rc: $out"
check_error "error: report of a database that holds no study" "is it a study" \
    "$NN" report "$(uri nostudy)" --out x.html --markdown x.md
finish
