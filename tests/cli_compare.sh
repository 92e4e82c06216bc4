#!/usr/bin/env bash
# cli_compare.sh - `nnopt compare`: the table, JSON rows that agree with
# `nnopt train` on the same recipe, and an SVG plot that parses and renders.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1

RES=$SRC/models/resnet_small.nn
LIM="--train-limit 1000 --test-limit 300 --threads 2"

if "$NN" compare "$MODEL" "$RES" $LIM --out cmp.svg > table.txt 2> err.txt; then
    pass "compare runs on two models"
else
    fail "compare runs on two models" "$(cat err.txt)"
fi
check "table has a row per model" bash -c "grep -q '^seed_cnn ' table.txt && grep -q '^resnet_small ' table.txt"
check "plot is well-formed XML" python3 -c 'import sys, xml.dom.minidom; xml.dom.minidom.parse("cmp.svg")'
check "plot labels both models" bash -c "grep -q seed_cnn cmp.svg && grep -q resnet_small cmp.svg"
if command -v rsvg-convert > /dev/null; then
    check "plot renders to PNG" bash -c "rsvg-convert cmp.svg -o cmp.png && [ \$(stat -c %s cmp.png) -gt 5000 ]"
else
    echo "SKIP plot renders to PNG: rsvg-convert is not installed"
fi

# same data, recipe, batch and seed as nnopt train: the same accuracy
"$NN" compare "$RES" $LIM --json --out j.svg > c.json 2>/dev/null
"$NN" train "$RES" $LIM --epochs 1 --json --quiet > t.json 2>/dev/null
check "compare's accuracy equals nnopt train's" python3 -c '
import json
c = json.load(open("c.json")); t = json.load(open("t.json"))
assert abs(c["test_accuracy"] - t["test_accuracy"]) < 1e-9, (c["test_accuracy"], t["test_accuracy"])
for k in ("params", "flops", "activation_bytes", "seconds_per_epoch", "latency_ms_batch1",
          "latency_ms_batch256"):
    assert c[k] > 0, k
'
# the trainer's recipe options, several seeds, kept checkpoints and logs, and
# n/a for batch-256 latency on a test set of 100
mkdir keep
if "$NN" compare "$MODEL" --train-limit 300 --test-limit 100 --threads 2 --optimizer adam --lr 0.002 \
    --seeds 2 --save-dir keep --json --out s.svg > s.json 2> s.err; then
    check "--seeds 2: mean and spread, batch-256 latency null on 100 test images" python3 -c '
import json
c = json.load(open("s.json"))
assert c["seeds"] == 2 and c["test_accuracy_sd"] >= 0 and c["latency_ms_batch256"] is None, c
'
    check "--save-dir keeps each seed's checkpoint and log" bash -c \
        "[ -s keep/seed_cnn.seed1.st ] && [ -s keep/seed_cnn.seed2.st ] && [ \$(wc -l < keep/seed_cnn.seed2.csv) -eq 2 ]"
    # seed 2's checkpoint is what nnopt train writes with the same recipe and seed
    "$NN" train "$MODEL" --train-limit 300 --test-limit 100 --threads 2 --optimizer adam --lr 0.002 \
        --epochs 1 --seed 2 --save t2.st --quiet > /dev/null 2>&1
    check "a kept checkpoint equals nnopt train's with that seed" cmp keep/seed_cnn.seed2.st t2.st
else
    fail "compare with recipe options, --seeds and --save-dir" "$(head -c 300 s.err)"
fi
# --params sets the model's parameters, as in nnopt train and info
"$NN" compare "$SRC/models/search_cnn.nn" --params C1=8,FC=64 --train-limit 300 --test-limit 100 \
    --threads 2 --json --out p.svg > p.json 2>/dev/null
"$NN" info "$SRC/models/search_cnn.nn" --params C1=8,FC=64 --json > p_info.json 2>/dev/null
check "--params reaches the model compare trains" python3 -c '
import json
c = json.load(open("p.json")); i = json.load(open("p_info.json"))
assert c["params"] == i["total_params"] and c["params"] < 206922, (c["params"], i["total_params"])
'
"$NN" compare "$MODEL" --train-limit 300 --test-limit 100 --threads 2 --out n.svg > n.txt 2>/dev/null
check "the table says n/a for an unmeasured latency" grep -q "n/a" n.txt
if "$NN" compare "$SRC/models/nope.nn" $LIM --out x.svg > /dev/null 2> err.txt; then
    fail "missing model fails"
else
    check "missing model is named" grep -q "nope.nn" err.txt
fi
finish
