#!/usr/bin/env bash
# cli_recipe.sh - the training-algorithm options end to end: recipe files
# (--config) reproduce a run, flags override them, invalid recipes are refused
# with file:line, and a run using every option (Adam, plateau schedule,
# warm-up, augmentation, label smoothing, clipping, accumulation, early
# stopping) resumes bit for bit after kill -9.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1

SMALL="--train-limit 2000 --test-limit 400 --threads 2 --quiet"

# 1. a run's recorded recipe reproduces it
"$NN" train "$MODEL" $SMALL --epochs 2 --val 200 --optimizer adamw --lr 0.002 \
    --schedule cosine --warmup-steps 10 --crop-pad 2 --hflip --label-smoothing 0.1 --ema 0.99 \
    --log a.csv --json > a.json 2>/dev/null
check "recipe written beside the log" test -s a.recipe.ini
check "recipe names the optimizer" grep -q "^name = adamw" a.recipe.ini
check "recipe holds the weight averaging" grep -q "^ema = 0.99$" a.recipe.ini
check "recipe writes each section once" bash -c \
    '[ -z "$(grep "^\[" a.recipe.ini | sort | uniq -d)" ]'
"$NN" train "$MODEL" --config a.recipe.ini --log b.csv --json > b.json 2>/dev/null
if cmp -s <(cut -d, -f1-7 a.csv) <(cut -d, -f1-7 b.csv); then pass "recipe reproduces the run"
else fail "recipe reproduces the run" "$(diff a.csv b.csv | head -5)"; fi

# 2. flags override the file
"$NN" train "$MODEL" --config a.recipe.ini --epochs 1 --lr 0.0005 --log c.csv --json > c.json 2>/dev/null
check "flag overrides recipe (lr), written as the shortest float" grep -q "^lr = 0.0005$" c.recipe.ini
check "flag overrides recipe (epochs)" test "$(wc -l < c.json)" -eq 1

# 2b. a recipe holds only what the run used: an SGD run's recipe has no Adam
# betas, no epsilon and no derived cosine length, and reused with another
# optimizer it trains (it once stored beta1 = beta2 = eps = 0: NaN at step 2)
"$NN" train "$MODEL" $SMALL --epochs 1 --log s.csv > /dev/null 2>&1
check "an SGD recipe holds no betas, eps or t_max" bash -c \
    "grep -q '^momentum = 0.9$' s.recipe.ini && grep -q '^lr = 0.01$' s.recipe.ini && \
     ! grep -qE '^(beta1|beta2|eps|t_max|alpha|lr_decay) =' s.recipe.ini"
if "$NN" train "$MODEL" --config s.recipe.ini --optimizer adam --json > s2.json 2> s2.err &&
    python3 -c 'import json,math; r=[json.loads(l) for l in open("s2.json")]; assert r and all(math.isfinite(x["train_loss"]) for x in r)'; then
    pass "an SGD recipe reused with --optimizer adam trains"
else
    fail "an SGD recipe reused with --optimizer adam trains" "$(head -c 300 s2.err)"
fi
check "JSON learning rates are the shortest floats" grep -q '"lr":0.01,' s2.json
if "$NN" train "$MODEL" $SMALL --optimizer adamx > /dev/null 2> e.txt; then
    fail "an unknown --optimizer is a usage error"
else
    rc=$?; [ $rc -eq 2 ] && pass "an unknown --optimizer is a usage error (exit 2)" || fail "an unknown --optimizer exits 2" "exit $rc"
fi
if "$NN" train "$MODEL" $SMALL --schedule linear > /dev/null 2> e.txt; then
    fail "an unknown --schedule is a usage error"
else
    rc=$?; [ $rc -eq 2 ] && pass "an unknown --schedule is a usage error (exit 2)" || fail "an unknown --schedule exits 2" "exit $rc"
fi

# 3. invalid recipes: one line naming file:line, exit 2, nothing on stdout
bad() { # NAME TEXT WORD
    printf '%b' "$2" > bad.ini
    local out err rc
    out=$("$NN" train "$MODEL" --config bad.ini $SMALL 2> err.txt); rc=$?
    err=$(cat err.txt)
    if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ -z "$out" ] && [ "$(wc -l < err.txt)" -eq 1 ] &&
        grep -q "bad.ini" err.txt && grep -qi "$3" err.txt; then pass "bad recipe: $1"
    else fail "bad recipe: $1" "rc=$rc out='$out' err='$err'"; fi
}
bad "unknown key" "[optimizer]\nname = sgd\nlearning_rate = 0.1\n" "bad.ini:3.*unknown key 'learning_rate'"
bad "unknown section" "[optimiser]\nlr = 0.1\n" "unknown key"
bad "negative rate" "[optimizer]\nlr = -0.1\n" "bad.ini:2.*lr"
bad "not a number" "[train]\nepochs = many\n" "bad.ini:2.*epochs"
bad "syntax" "[train]\nepochs 5\n" "bad.ini:2"
bad "unknown optimizer" "[optimizer]\nname = adamax\n" "unknown optimizer 'adamax'"
bad "unknown schedule" "[schedule]\nname = linear_ramp\n" "unknown schedule"
bad "step schedule without step size" "[schedule]\nname = step\n" "step_size"
if "$NN" train "$MODEL" --config nope.ini > /dev/null 2> err.txt; then fail "missing recipe file fails"
else check "missing recipe file names it" grep -q "nope.ini" err.txt; fi
if "$NN" train "$MODEL" $SMALL --early-stop 2 > /dev/null 2> err.txt; then fail "--early-stop without --val fails"
else check "--early-stop without --val names --val" grep -q -- "--val" err.txt; fi

# 4. every option at once: kill -9 mid-run, resume, same bytes as a straight run
F="$SMALL --val 200 --optimizer adam --lr 0.003 --schedule plateau --plateau-patience 0 \
   --warmup-steps 5 --crop-pad 2 --hflip --erase-prob 0.3 --label-smoothing 0.05 \
   --clip-grad-norm 1 --accumulate 3 --early-stop 5 --epochs 3"
"$NN" train "$MODEL" $F --save ref.st > /dev/null 2>&1
"$NN" train "$MODEL" $F --save run.st --save-every 3 > /dev/null 2>&1 &
pid=$!
for _ in $(seq 3000); do [ -f run.st ] && break; sleep 0.02; done
sleep 0.3
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
"$NN" train "$MODEL" $F --save run.st --save-every 3 --resume run.st > /dev/null 2>&1
check "all options: kill -9 + resume gives the same checkpoint bytes" cmp ref.st run.st

# 5. every optimizer, each with a different schedule: an epoch-end resume
#    ends with the same bytes as a straight run
# (schedules whose horizon is the run get it fixed, as --epochs changes)
set -- "sgd cosine --t-max 3" "adam onecycle --total-steps 30" "adamw step --step-size 1 --gamma 0.5" \
       "rmsprop exponential --gamma 0.9" "adagrad multistep --milestones 1,2" \
       "sgd cosine_restarts --t0 1 --t-mult 2" "adamw constant" "sgd plateau --plateau-patience 0"
for combo in "$@"; do
    read -r opt sched extra <<< "$combo"
    G="--train-limit 600 --test-limit 100 --threads 2 --quiet --json --optimizer $opt \
       --lr 0.01 --schedule $sched $extra --warmup-steps 3"
    "$NN" train "$MODEL" $G --epochs 3 --save "s_$opt.st" > /dev/null 2>&1
    "$NN" train "$MODEL" $G --epochs 1 --save "r_$opt.st" > /dev/null 2>&1
    "$NN" train "$MODEL" $G --epochs 3 --save "r_$opt.st" --resume "r_$opt.st" > /dev/null 2>&1
    check "resume is bit-exact: $opt with $sched" cmp "s_$opt.st" "r_$opt.st"
    rm -f "s_$opt.st" "r_$opt.st"
done

# dropout masks are drawn from the seed and the step: resume reproduces them
printf 'input shape=1x28x28\nconv2d name=c1 out=8 kernel=3 pad=1\nrelu\nmaxpool size=2\nflatten\ndropout p=0.3\nlinear name=fc out=10\nsoftmax_ce\n' > drop.nn
D="--train-limit 600 --test-limit 100 --threads 2 --quiet --json"
"$NN" train drop.nn $D --epochs 2 --save d_ref.st > /dev/null 2>&1
"$NN" train drop.nn $D --epochs 1 --save d_run.st > /dev/null 2>&1
"$NN" train drop.nn $D --epochs 2 --save d_run.st --resume d_run.st > /dev/null 2>&1
check "resume is bit-exact with dropout" cmp d_ref.st d_run.st

# 6. early stopping stops, and says so
"$NN" train "$MODEL" --train-limit 600 --test-limit 100 --threads 2 --val 100 --epochs 10 \
    --early-stop 1 --min-delta 100 --json > es.json 2>/dev/null
check "early stopping ends the run after 2 epochs" test "$(wc -l < es.json)" -eq 2

# 7. gradient accumulation: 2 micro-batches of 32 = one batch of 64 (same
#    samples, same order), up to float rounding
"$NN" train "$MODEL" --train-limit 640 --test-limit 200 --threads 2 --no-shuffle --epochs 1 \
    --batch 64 --json > acc64.json 2>/dev/null
"$NN" train "$MODEL" --train-limit 640 --test-limit 200 --threads 2 --no-shuffle --epochs 1 \
    --batch 32 --accumulate 2 --json > acc32.json 2>/dev/null
check "accumulate 2 x 32 matches batch 64" python3 -c '
import json, sys
a = json.load(open("acc64.json")); b = json.load(open("acc32.json"))
assert a["step"] == b["step"] == 10, (a["step"], b["step"])
rel = abs(a["test_loss"] - b["test_loss"]) / a["test_loss"]
assert rel < 1e-4, rel
'

finish
