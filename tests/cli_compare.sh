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
if "$NN" compare "$SRC/models/nope.nn" $LIM --out x.svg > /dev/null 2> err.txt; then
    fail "missing model fails"
else
    check "missing model is named" grep -q "nope.nn" err.txt
fi
finish
