#!/usr/bin/env bash
# cli_train.sh - nnopt train / eval / info on real Fashion-MNIST subsets.
#
# usage: bash tests/cli_train.sh <path-to-nnopt> <source-dir>
#
# Checks: --json output is JSON lines only, with the documented keys, a falling
# train loss and > 60 % test accuracy after 3 epochs; --log writes a CSV with a
# header and one row per epoch (matching the JSON); `info` counts 206922
# parameters and its --json parses; every --help exits 0 with a usage text;
# `eval` of a saved checkpoint reproduces the last epoch's test accuracy; runs
# are deterministic for a seed and --threads 2, and the seed matters;
# --precision bf16 trains (deterministically, within 3 points of fp32) and
# other precisions are one-line errors; `info --expand` of a model with
# blocks is a model file with the same layers.
# Prints one PASS/FAIL line per check; exits 1 if any failed.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1

# ------------------------------------------------------------------ (a) JSON lines
FLAGS=(--data "$DATA" --train-limit 3000 --test-limit 1000 --epochs 3 --threads 2 --seed 1)
timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --json --log log.csv >a.json 2>a.err
rc=$?
if [ $rc -eq 0 ]; then pass "train --json exits 0"; else fail "train --json exits 0" "exit $rc: $(head -c 300 a.err)"; fi

check "train --json: stdout is JSON lines only" python3 -c '
import json, sys
lines = open("a.json").read().splitlines()
assert lines, "no output"
for i, l in enumerate(lines, 1):
    try:
        o = json.loads(l)
    except ValueError as e:
        sys.exit("line %d is not JSON (%s): %r" % (i, e, l[:120]))
    assert isinstance(o, dict), "line %d is not an object" % i
'
check "train --json: 3 lines with epoch, train_loss, test_loss, test_accuracy, seconds, images_per_s" python3 -c '
import json, math
rows = [json.loads(l) for l in open("a.json")]
assert len(rows) == 3, "%d lines, expected 3" % len(rows)
for i, r in enumerate(rows, 1):
    for k in ("epoch", "train_loss", "test_loss", "test_accuracy", "seconds", "images_per_s"):
        assert k in r, "line %d lacks %s" % (i, k)
        assert isinstance(r[k], (int, float)) and math.isfinite(r[k]), "line %d: %s = %r" % (i, k, r[k])
    assert r["epoch"] == i, "line %d has epoch %r" % (i, r["epoch"])
    assert 0 <= r["test_accuracy"] <= 100, r
    assert r["seconds"] >= 0 and r["images_per_s"] >= 0, r
'
check "train --json: train_loss falls from epoch 1 to 3" python3 -c '
import json
rows = [json.loads(l) for l in open("a.json")]
a, b = rows[0]["train_loss"], rows[-1]["train_loss"]
assert b < a, "train_loss %g -> %g" % (a, b)
'
check "train --json: test accuracy after 3 epochs > 60%" python3 -c '
import json
acc = [json.loads(l) for l in open("a.json")][-1]["test_accuracy"]
assert acc > 60, "test_accuracy %g" % acc
'
if [ ! -s a.err ]; then pass "train --json: nothing on stderr"; else fail "train --json: nothing on stderr" "$(head -c 200 a.err)"; fi

# ------------------------------------------------------------------ (b) --log CSV
check "train --log: CSV header and one row per epoch, same numbers as --json" python3 -c '
import csv, json
rows = list(csv.DictReader(open("log.csv")))
js = [json.loads(l) for l in open("a.json")]
assert len(rows) == 3, "%d rows, expected 3" % len(rows)
for k in ("epoch", "train_loss", "test_loss", "test_accuracy", "seconds", "images_per_s"):
    assert k in rows[0], "header lacks %s: %s" % (k, list(rows[0]))
for i, (r, j) in enumerate(zip(rows, js), 1):
    assert int(r["epoch"]) == i, r
    for k in ("train_loss", "test_loss", "test_accuracy"):
        assert abs(float(r[k]) - j[k]) <= 1e-6 * max(1, abs(j[k])), "epoch %d %s: csv %s, json %r" % (i, k, r[k], j[k])
'

# ------------------------------------------------------------------ (c) info
timeout 60 "$NN" info "$MODEL" >info.txt 2>info.err
rc=$?
if [ $rc -eq 0 ] && grep -qw 206922 info.txt; then pass "info: 206922 parameters in total"
else fail "info: 206922 parameters in total" "exit $rc: $(grep -i total info.txt | head -2)"; fi
timeout 60 "$NN" info "$MODEL" --json >info.json 2>info.err
check "info --json parses, total_params 206922, layer params add up" python3 -c '
import json
o = json.load(open("info.json"))
assert o["total_params"] == 206922, o["total_params"]
assert sum(l["params"] for l in o["layers"]) == 206922
'

# A model path with a quote and a backslash must still give valid JSON.
cp "$MODEL" 'odd"name\.nn'
timeout 60 "$NN" info 'odd"name\.nn' --json >odd.json 2>odd.err
check "info --json escapes the model path" python3 -c '
import json
o = json.load(open("odd.json"))
assert o["model"] == "odd\"name\\.nn", o["model"]
'

# ------------------------------------------------------------------ (d) --help
for cmd in "" train eval info bench system; do
    # shellcheck disable=SC2086
    timeout 60 "$NN" $cmd --help >help.txt 2>help.err
    rc=$?
    if [ $rc -eq 0 ] && grep -qi usage help.txt && [ ! -s help.err ]; then
        pass "nnopt ${cmd:+$cmd }--help: exit 0, usage on stdout"
    else
        fail "nnopt ${cmd:+$cmd }--help: exit 0, usage on stdout" "exit $rc, $(wc -l <help.txt) lines"
    fi
done

# ------------------------------------------------------------------ (e) eval = last epoch
# eval always reads the whole t10k set of --data, so both commands get a data
# directory whose test set is the first 1000 real test images.
mkdir -p sub
ln -s "$DATA/train-images-idx3-ubyte.gz" sub/train-images-idx3-ubyte.gz
ln -s "$DATA/train-labels-idx1-ubyte.gz" sub/train-labels-idx1-ubyte.gz
python3 - "$DATA" <<'EOF'
import gzip, struct, sys
d, n = sys.argv[1], 1000
img = gzip.open(d + '/t10k-images-idx3-ubyte.gz').read()
lab = gzip.open(d + '/t10k-labels-idx1-ubyte.gz').read()
open('sub/t10k-images-idx3-ubyte', 'wb').write(img[:4] + struct.pack('>I', n) + img[8:16] + img[16:16 + n * 784])
open('sub/t10k-labels-idx1-ubyte', 'wb').write(lab[:4] + struct.pack('>I', n) + lab[8:8 + n])
EOF
timeout 300 "$NN" train "$MODEL" --data sub --train-limit 2000 --test-limit 1000 --epochs 2 --threads 2 \
    --json --save e.st >e.json 2>e.err
rc=$?
if [ $rc -eq 0 ] && [ -s e.st ]; then pass "train --save writes a checkpoint"
else fail "train --save writes a checkpoint" "exit $rc: $(head -c 300 e.err)"; fi
timeout 60 "$NN" eval "$MODEL" --data sub --weights e.st --threads 2 --json >eval.json 2>eval.err
rc=$?
if [ $rc -eq 0 ]; then pass "eval --json exits 0"; else fail "eval --json exits 0" "exit $rc: $(head -c 300 eval.err)"; fi
check "eval: same test accuracy (and loss) as the last training epoch" python3 -c '
import json
t = [json.loads(l) for l in open("e.json")][-1]
e = json.load(open("eval.json"))
assert e.get("samples", 1000) == 1000, e
assert e["test_accuracy"] == t["test_accuracy"], "eval %r, train %r" % (e["test_accuracy"], t["test_accuracy"])
assert abs(e["test_loss"] - t["test_loss"]) <= 1e-5, "eval loss %r, train loss %r" % (e["test_loss"], t["test_loss"])
'
timeout 60 "$NN" eval "$MODEL" --data sub --weights e.st --threads 2 >eval.txt 2>eval.err
acc=$(python3 -c 'import json; print("%.2f" % [json.loads(l) for l in open("e.json")][-1]["test_accuracy"])')
if grep -qF "$acc" eval.txt; then pass "eval (text): prints the accuracy $acc"
else fail "eval (text): prints the accuracy $acc" "$(head -c 200 eval.txt)"; fi

# ------------------------------------------------------------------ (e2) the final line
# The closing "final test accuracy" line gives the last epoch's figures when
# the run keeps its weights (without evaluating them again), and the best
# epoch's after early stopping went back to that epoch's weights.
FIN=(--data "$DATA" --train-limit 2000 --test-limit 1000 --threads 2)
timeout 300 "$NN" train "$MODEL" "${FIN[@]}" --epochs 2 >fin.txt 2>fin.err
timeout 300 "$NN" train "$MODEL" "${FIN[@]}" --val 500 --epochs 4 --early-stop 1 --min-delta 100 \
    >fin_es.txt 2>fin_es.err
cat >final_line.py <<'PY'
import re, sys
text, which = open(sys.argv[1]).read(), int(sys.argv[2])
epochs = re.findall(r"^epoch \d+/\d+  .*?test_loss (\S+)  test_acc (\S+)%", text, re.M)
final = re.search(r"^final test accuracy (\S+)% \(test loss (\S+)\)", text, re.M)
assert epochs and final, "no epoch or final line in: %r" % text[-300:]
want = epochs[which]
assert (final.group(1), final.group(2)) == (want[1], want[0]), (final.groups(), want)
PY
check "train (text): the final line repeats the last epoch's accuracy and loss" \
    python3 final_line.py fin.txt -1
check "train (text): after early stopping the final line is the best (first) epoch's" \
    python3 final_line.py fin_es.txt 0
check "train (text): early stopping ended the run after 2 epochs" \
    test "$(grep -c '^epoch ' fin_es.txt)" -eq 2

# ------------------------------------------------------------------ (f) determinism
timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --json >f1.json 2>f1.err
timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --json --seed 2 >f2.json 2>f2.err
check "same seed, --threads 2: identical JSON except timings" python3 -c "$PY_ROWS"'
a, b = rows("a.json"), rows("f1.json")
assert len(a) == 3 and a == b, "first run %r\nsecond run %r" % (a, b)
'
check "different --seed: different train_loss" python3 -c "$PY_ROWS"'
a, b = rows("a.json"), rows("f2.json")
assert len(b) == 3, "%d lines" % len(b)
assert a[0]["train_loss"] != b[0]["train_loss"], "seed 1 and seed 2 both give %r" % a[0]["train_loss"]
'

# ------------------------------------------------------------------ (g) --precision bf16
# same data and seed as (a): bf16 convolutions train as well as fp32 (within 3
# points after 3 epochs here) and a bf16 run is deterministic too
timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --json --precision bf16 >g1.json 2>g1.err
timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --json --precision bf16 >g2.json 2>g2.err
check "train --precision bf16: 3 epochs, accuracy within 3 points of fp32, deterministic" python3 -c "$PY_ROWS"'
a, g1, g2 = rows("a.json"), rows("g1.json"), rows("g2.json")
assert len(g1) == 3, "%d lines: %s" % (len(g1), open("g1.err").read()[:300])
assert g1 == g2, "two bf16 runs differ: %r %r" % (g1[-1], g2[-1])
assert g1 != a, "bf16 gave exactly the fp32 results: bf16 is not in use"
assert abs(g1[-1]["test_accuracy"] - a[-1]["test_accuracy"]) <= 3.0, (g1[-1], a[-1])
'
"$NN" train "$MODEL" --precision fp16 >h.out 2>h.err
rc=$?
if [ $rc -eq 2 ] && grep -q "precision must be fp32 or bf16, got 'fp16'" h.err && [ "$(wc -l <h.err)" -eq 1 ]; then
    pass "train --precision fp16: one-line error, exit 2"
else fail "train --precision fp16: one-line error, exit 2" "exit $rc: $(head -c 200 h.err)"; fi
"$NN" bench "$MODEL" --precision half --steps 1 >h.out 2>h.err
rc=$?
if [ $rc -eq 2 ] && grep -q "precision must be fp32 or bf16" h.err; then pass "bench --precision half: exit 2"
else fail "bench --precision half: exit 2" "exit $rc: $(head -c 200 h.err)"; fi
timeout 120 "$NN" bench "$MODEL" --batch 8 --steps 2 --repeats 3 --warmup 1 --json >bj.json 2>bj.err
check "bench --json: the median share of the FMA peak lies within its repeats' range" python3 -c '
import json
d = json.load(open("bj.json"))
lo, mid, hi = d["percent_of_fma_peak_min"], d["percent_of_fma_peak"], d["percent_of_fma_peak_max"]
assert 0 < lo <= mid <= hi, (lo, mid, hi)
assert d["images_per_s"] > 0 and d["layers"], d
'
NNOPT_CONV=direct timeout 120 "$NN" bench "$MODEL" --batch 8 --steps 1 --repeats 1 --warmup 0 --no-peak --json >bd.json 2>bd.err
check "bench --json names each conv layer's kernels; NNOPT_CONV=direct turns Winograd off" python3 -c '
import json
kinds = {"winograd", "winograd4", "direct", "rows", "im2col"}
for f, allowed in (("bj.json", kinds), ("bd.json", kinds - {"winograd", "winograd4"})):
    convs = [l for l in json.load(open(f))["layers"] if l["type"] == "conv2d"]
    assert convs and all(l["kernel"] in allowed for l in convs), (f, convs)
'

# ------------------------------------------------------------------ (h) info --expand
# the expanded text of a model with blocks is a model file with the same layers
"$NN" info "$SRC/models/resnet20.nn" --expand >flat.nn 2>x.err
"$NN" info "$SRC/models/resnet20.nn" | tail -n +2 >i1.txt
"$NN" info flat.nn 2>x.err | tail -n +2 >i2.txt
if [ -s i1.txt ] && cmp -s i1.txt i2.txt && ! grep -qE '^(block|use|repeat)' flat.nn; then
    pass "info --expand: a flat model file with the same layers as models/resnet20.nn"
else fail "info --expand: a flat model file with the same layers as models/resnet20.nn" "$(diff i1.txt i2.txt | head -5; head -c 200 x.err)"; fi

# ------------------------------------------------------------------ system
# what nnopt uses here: one JSON object whose kernels and OpenBLAS core agree
# with the text form
timeout 60 "$NN" system --json >sys.json 2>sys.err
rc=$?
if [ $rc -eq 0 ] && [ ! -s sys.err ] &&
   python3 -c 'import json,sys; d=json.load(open("sys.json")); sys.exit(0 if d["threads"] >= 1 and d["kernel_isa"] in ("generic","avx2","avx512","avx512bf16","amx") and d["openblas_core"] else 1)'; then
    pass "system --json: threads, kernel ISA and OpenBLAS core"
else fail "system --json: threads, kernel ISA and OpenBLAS core" "exit $rc: $(head -c 300 sys.json sys.err)"; fi
core=$(python3 -c 'import json; print(json.load(open("sys.json"))["openblas_core"])' 2>/dev/null)
if timeout 60 "$NN" system 2>/dev/null | grep -q "^openblas   core $core"; then
    pass "system (text): names the same OpenBLAS core ($core)"
else fail "system (text): names the same OpenBLAS core ($core)" "$("$NN" system 2>&1 | head -5)"; fi
# Winograd: on where the kernels are AVX-512, off under NNOPT_CONV=direct or NNOPT_ISA=generic
NNOPT_CONV=direct timeout 60 "$NN" system --json >sysd.json 2>/dev/null
NNOPT_ISA=generic timeout 60 "$NN" system --json >sysg.json 2>/dev/null
check "system --json: winograd on with AVX-512 kernels, off under NNOPT_CONV=direct and NNOPT_ISA=generic" python3 -c '
import json
d, dd, dg = (json.load(open(f)) for f in ("sys.json", "sysd.json", "sysg.json"))
assert d["winograd"] == (d["kernel_isa"] != "generic"), d
assert dd["winograd"] is False and dg["winograd"] is False, (dd, dg)
'

finish
