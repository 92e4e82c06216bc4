#!/usr/bin/env bash
# cli_search.sh - `nnopt search` end to end on small subsets of Fashion-MNIST:
# trials recorded in the study with their curves, the same seed giving the
# same trials, kill -9 in the middle and a restart that keeps every finished
# trial and resumes the interrupted one from its checkpoint, two workers (and
# two searches) sharing one study without overshooting or repeating a trial,
# a budget that stops a trial resumably, constraints checked before training,
# the export that `nnopt eval` and `nnopt train` take, and one-line errors
# for bad spaces and flags.
#
# usage: bash tests/cli_search.sh <path-to-nnopt> <source-dir>
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1
. "$SRC/tests/lib_search.sh" # (lib_cli.sh has made the working directory $T)
BG="" # a background nnopt, killed at exit
on_exit() { [ -n "$BG" ] && kill -9 "$BG" 2>/dev/null; }
command -v sqlite3 >/dev/null || { echo "SKIP sqlite3 (Debian's sqlite3) is not installed"; exit 77; }

q() { sqlite3 "$1" "$2"; }

# 1. a search: every trial in the study, in a final state, with its curve
space 1500 3 >s.space
"$NN" search s.space --data "$DATA" --trials 8 --json >run.json 2>err.txt
rc=$?
[ $rc -eq 0 ] && pass "search: 8 trials run (exit 0)" || fail "search: 8 trials run" "exit $rc: $(head -c 300 err.txt)"
n=$(grep -c '^{"trial":' run.json)
[ "$n" -eq 8 ] && pass "search --json: one object per trial" || fail "search --json: one object per trial" "$n lines"
python3 -c "import json,sys; [json.loads(l) for l in open('run.json')]" 2>/dev/null &&
    pass "search --json: every line is JSON" || fail "search --json: every line is JSON"
states=$(q s.study "select count(*) from trials where state in ('complete','pruned')")
[ "$states" = 8 ] && pass "study: 8 trials complete or pruned" || fail "study: 8 trials complete or pruned" "$states"
bad=$(q s.study "select count(*) from trials t where (select count(*) from epochs e where e.trial = t.id) < 1 or (state = 'complete' and (select count(*) from epochs e where e.trial = t.id) <> 3)")
[ "$bad" = 0 ] && pass "study: every trial's curve recorded (3 epochs when complete)" || fail "study: curves" "$bad trials without"
tested=$(q s.study "select count(*) from trials where test_accuracy > 0.3")
[ "$tested" -ge 1 ] && pass "finalists: test accuracy measured" || fail "finalists: test accuracy measured" "$tested"

# 2. the same seed in a new study: the same trials
"$NN" search s.space --data "$DATA" --trials 8 --study again.study --json >again.json 2>&1
a=$(q s.study "select config from trials order by id"); b=$(q again.study "select config from trials order by id")
[ -n "$a" ] && [ "$a" = "$b" ] && pass "search: the same seed proposes the same trials" || fail "search: the same seed proposes the same trials"

# 3. kill -9 in the middle, restart: finished trials kept, the interrupted one resumed
space 6000 3 >k.space
"$NN" search k.space --data "$DATA" --trials 4 --sampler random --pruner none >k1.txt 2>&1 &
BG=$!
# as long as the search lives (5 minutes at most): under AddressSanitizer
# beside other tests a trial took more than the 30 s this loop once allowed
for _ in $(seq 1 3000); do
    sleep 0.1
    kill -0 $BG 2>/dev/null || break
    done_n=$(q k.study "select count(*) from trials where state = 'complete'" 2>/dev/null || echo 0)
    ep=$(q k.study "select count(*) from epochs e join trials t on t.id = e.trial where t.state = 'running'" 2>/dev/null || echo 0)
    [ "${done_n:-0}" -ge 1 ] && [ "${ep:-0}" -ge 1 ] && break
done
sleep 0.3
kill -9 $BG 2>/dev/null; wait $BG 2>/dev/null; BG=""
before=$(q k.study "select id, train_seconds from trials where state = 'complete' order by id")
interrupted=$(q k.study "select id from trials where state = 'running'")
[ -n "$before" ] && [ -n "$interrupted" ] && pass "kill -9: a complete and a running trial in the study" ||
    fail "kill -9: a complete and a running trial in the study" "complete: $before running: $interrupted"
"$NN" search k.space --data "$DATA" --trials 4 --sampler random --pruner none >k2.txt 2>&1
rc=$?
after=$(q k.study "select id, train_seconds from trials where id in ($(echo "$before" | cut -d'|' -f1 | paste -sd,)) order by id")
[ $rc -eq 0 ] && [ "$before" = "$after" ] && pass "restart: every finished trial kept as it was" ||
    fail "restart: every finished trial kept as it was" "exit $rc"
total=$(q k.study "select count(*) from trials"); fin=$(q k.study "select count(*) from trials where state = 'complete'")
[ "$total" = 4 ] && [ "$fin" = 4 ] && pass "restart: the search completes its 4 trials, none added twice" ||
    fail "restart: 4 trials" "$total trials, $fin complete"
if [ -n "$interrupted" ]; then
    st=$(q k.study "select state from trials where id = $interrupted")
    resumed=$(grep -c "^trial *$interrupted " k2.txt)
    [ "$st" = complete ] && [ "$resumed" = 1 ] && pass "restart: the interrupted trial $interrupted resumed and finished" ||
        fail "restart: the interrupted trial resumed" "state $st"
fi
ls k.study.trials/*.tmp.* >/dev/null 2>&1 && fail "restart: no temporary checkpoint left" "$(ls k.study.trials)" ||
    pass "restart: no temporary checkpoint left"

# 4. two workers, and two searches at once, on one study: exactly N trials
space 1500 2 >w.space
"$NN" search w.space --data "$DATA" --trials 10 --workers 2 --study w.study >w.txt 2>&1
rc=$?
n=$(q w.study "select count(*) from trials where state in ('complete','pruned')")
pids=$(q w.study "select count(distinct pid) from trials")
[ $rc -eq 0 ] && [ "$n" = 10 ] && [ "$pids" = 2 ] && pass "--workers 2: 10 trials shared by 2 processes" ||
    fail "--workers 2: 10 trials shared by 2 processes" "exit $rc, $n trials, $pids owners"
"$NN" search w.space --data "$DATA" --trials 16 --study w.study >w1.txt 2>&1 &
BG=$!
"$NN" search w.space --data "$DATA" --trials 16 --study w.study >w2.txt 2>&1
rc2=$?
wait $BG; rc1=$?; BG=""
n=$(q w.study "select count(*) from trials")
dup=$(cat w1.txt w2.txt | grep -oE '^trial +[0-9]+' | sort | uniq -d | wc -l)
[ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ "$n" = 16 ] && [ "$dup" = 0 ] &&
    pass "two searches on one study: 16 trials, none run by both" ||
    fail "two searches on one study" "exit $rc1/$rc2, $n trials, $dup run twice"

# 5. a budget stops a trial resumably; the next run finishes it (30 epochs
# of 6000 images: 3 took under the 1 s budget on a fast host)
space 6000 30 >b.space
"$NN" search b.space --data "$DATA" --trials 1 --budget 1 --pruner none --study b.study >b1.txt 2>&1
st=$(q b.study "select state || ':' || ifnull(error,'') from trials")
[ "$st" = "stopped:budget" ] && pass "--budget: a trial past the budget is stopped" || fail "--budget: stopped" "$st"
"$NN" search b.space --data "$DATA" --trials 1 --pruner none --study b.study >b2.txt 2>&1
st=$(q b.study "select state from trials"); n=$(q b.study "select count(*) from trials")
[ "$st" = complete ] && [ "$n" = 1 ] && pass "--budget: the stopped trial resumes and completes" || fail "--budget: resumes" "$n trials, $st"

# 6. a constraint that no model meets: every trial infeasible, none trained
space 1500 3 "constraint = latency_ms <= 0.000001" >c.space
"$NN" search c.space --data "$DATA" --trials 3 --study c.study >c.txt 2>&1
n=$(q c.study "select count(*) from trials where state = 'infeasible'"); e=$(q c.study "select count(*) from epochs")
[ "$n" = 3 ] && [ "$e" = 0 ] && pass "constraints: infeasible trials are not trained" || fail "constraints" "$n infeasible, $e epochs"

# 7. export: the best trial as files that eval and train take
"$NN" search s.space --data "$DATA" --trials 8 --export best >x.txt 2>&1
rc=$?
[ $rc -eq 0 ] && [ -f best/model.nn ] && [ -f best/recipe.ini ] && [ -f best/weights.st ] &&
    pass "--export: model.nn, recipe.ini, weights.st" || fail "--export" "exit $rc: $(tail -c 300 x.txt)"
id=$(grep -oE 'exported trial [0-9]+' x.txt | grep -oE '[0-9]+$')
want=$(q s.study "select printf('%.2f', 100 * test_accuracy) from trials where id = ${id:-0}")
got=$("$NN" eval best/model.nn --weights best/weights.st --data "$DATA" 2>&1 | grep -oE '[0-9]+\.[0-9]+%' | head -1 | tr -d %)
[ -n "$want" ] && [ "$want" = "$got" ] && pass "--export: nnopt eval gives the study's test accuracy ($got%)" ||
    fail "--export: eval" "study $want, eval $got"
"$NN" train best/model.nn --config best/recipe.ini --data "$DATA" --epochs 1 --train-limit 300 --test-limit 100 >t.txt 2>&1 &&
    pass "--export: nnopt train takes the model and recipe" || fail "--export: train" "$(tail -c 300 t.txt)"
# a space that leaves the threads to the machine: the recipe does too
space 600 1 | grep -v '^threads' >nt.space
"$NN" search nt.space --data "$DATA" --trials 1 --export nt >nt.txt 2>&1 &&
    ! grep -q '^threads' nt/recipe.ini &&
    "$NN" train nt/model.nn --config nt/recipe.ini --data "$DATA" --epochs 1 --train-limit 300 --test-limit 100 >nt2.txt 2>&1 &&
    pass "--export: threads left unset stay unset in the recipe" || fail "--export: unset threads" "$(tail -c 300 nt.txt nt2.txt)"

# 8. errors: one line naming the file, non-zero exit, nothing created
check_error "error: a missing space file" "nosuch.space" "$NN" search nosuch.space
printf '[search]\nmodel = %s/models/search_cnn.nn\n[model]\nC1 = int 9 4\n' "$SRC" >bad1.space
check_error "error: a malformed space names file:line" "bad1.space:4:" "$NN" search bad1.space --data "$DATA"
printf '[search]\nmodel = %s/models/search_cnn.nn\n[optimizer]\nlearning = float 0.1 1\n' "$SRC" >bad2.space
check_error "error: an unknown recipe key names file:line" "bad2.space:4: optimizer.learning" "$NN" search bad2.space --data "$DATA"
printf '[search]\nmodel = %s/models/search_cnn.nn\n[model]\nWIDTH = int 4 8\n' "$SRC" >bad3.space
check_error "error: a model parameter the model lacks" "no parameter 'WIDTH'" "$NN" search bad3.space --data "$DATA"
printf '[search]\nmodel = %s/models/search_cnn.nn\n[data]\nval = 5\n' "$SRC" >bad4.space
check_error "error: the space may not set the data split" "data.val" "$NN" search bad4.space --data "$DATA"
check_error "error: a study made with another space" "another search space" "$NN" search w.space --data "$DATA" --study s.study --trials 1
check_error "error: an unknown sampler" "unknown sampler 'bayes'" "$NN" search s.space --sampler bayes
check_error "error: a bad budget" "--budget" "$NN" search s.space --budget soon
echo "not sqlite" >junk.study
check_error "error: a study that is not SQLite" "junk.study" "$NN" search s.space --data "$DATA" --study junk.study
ls bad*.study >/dev/null 2>&1 && fail "errors: no study created for a bad space" || pass "errors: no study created for a bad space"
finish
