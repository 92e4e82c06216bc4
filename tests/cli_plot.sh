#!/usr/bin/env bash
# cli_plot.sh - nnopt plot: training logs to one SVG chart.
#
# usage: bash tests/cli_plot.sh <path-to-nnopt> <source-dir>
#
# Checks: three hand-written logs (one with validation columns and an '&' in its
# name, one of a single epoch) plot to an SVG that parses as XML, names every
# run, and has one polyline per series with one point per epoch (markers for
# the single epoch); --json reports the runs and epochs; a log that repeats
# epochs after a resume keeps the last rows; a log written by a short real
# `nnopt train --log` plots (skipped without the data set); rsvg-convert, when
# installed, renders the SVG to a non-trivial PNG (skipped otherwise). Bad
# inputs (missing file, bad header, non-numeric field, short row, empty file,
# no --out, ...) exit non-zero with one stderr line naming the file or flag and
# leave no SVG behind. Prints one PASS/FAIL line per check; exits 1 if any failed.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1

HDR=epoch,step,train_loss,test_loss,test_accuracy,seconds,images_per_s
HDR_VAL=epoch,step,train_loss,test_loss,test_accuracy,val_loss,val_accuracy,seconds,images_per_s
mkdir -p logs
cat >logs/plain.csv <<EOF
$HDR
1,47,1.747191,0.989347,63.6000,3.382,887.2
2,94,0.802059,0.657737,73.4000,1.579,1899.5
3,141,0.634624,0.547468,80.0000,1.550,1935.9
EOF
cat >"logs/lr&val.csv" <<EOF
$HDR_VAL
1,47,1.486378,0.810557,63.6000,0.805091,66.0000,1.057,2838.2
2,94,0.641285,0.493878,81.0000,0.530478,78.4000,1.011,2967.2
3,141,0.505641,0.462250,83.2000,0.475502,80.4000,1.028,2918.8
4,188,0.417172,0.452925,85.8000,0.466798,82.8000,0.932,3220.0
5,235,0.390000,0.440000,86.1000,0.450000,83.0000,0.950,3100.0
EOF
printf '%s\n1,16,1.200000,1.000000,70.5000,1.000,100.0\n' "$HDR" >logs/single.csv

# check_svg FILE EPOCHS... : python3 checks FILE against the runs' epoch counts
# given as NAME=ROWS:HAS_VAL (polylines per run: 3 + 2 * HAS_VAL, one point per row).
check_svg() {
    python3 - "$@" <<'PY'
import sys, xml.dom.minidom
path, runs = sys.argv[1], sys.argv[2:]
doc = xml.dom.minidom.parse(path)
root = doc.documentElement
assert root.tagName == "svg", "root element is %s" % root.tagName
assert float(root.getAttribute("width")) > 0 and float(root.getAttribute("height")) > 0
texts = [n.firstChild.data for n in doc.getElementsByTagName("text") if n.firstChild]
lines = doc.getElementsByTagName("polyline")
want_lines, sizes = 0, []
for r in runs:
    name, spec = r.rsplit("=", 1)
    rows, val = map(int, spec.split(":"))
    assert name in texts, "run name %r not among the SVG's texts %r" % (name, texts)
    want_lines += 3 + 2 * val
    sizes += [rows] * (3 + 2 * val)
assert len(lines) == want_lines, "%d polylines, expected %d" % (len(lines), want_lines)
got = sorted(len(p.getAttribute("points").split()) for p in lines)
assert got == sorted(sizes), "points per polyline %r, expected %r" % (got, sorted(sizes))
singles = sizes.count(1)
circles = len(doc.getElementsByTagName("circle"))
assert circles >= singles, "%d markers for %d single-point series" % (circles, singles)
for t in ("loss", "accuracy", "epoch", "train", "test"):
    assert any(t in s for s in texts), "no text mentions %r" % t
PY
}

# ------------------------------------------------------------------ plots
if "$NN" plot logs/plain.csv "logs/lr&val.csv" logs/single.csv --out runs.svg >out.txt 2>err.txt
then pass "plot of three logs exits 0"
else fail "plot of three logs exits 0" "$(head -c 300 err.txt)"; fi
check "SVG parses as XML, names the runs, one polyline per series" \
    check_svg runs.svg plain=3:0 "lr&val=5:1" single=1:0
check "'&' in a run name is escaped" grep -qF 'lr&amp;val' runs.svg
check "--title is escaped" bash -c '"$0" plot logs/plain.csv --out t.svg --title "a <b> & \"c\"" >/dev/null &&
    grep -qF "a &lt;b&gt; &amp; &quot;c&quot;" t.svg && python3 -c "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])" t.svg' "$NN"
check "plot of a single one-epoch log" bash -c '"$0" plot logs/single.csv --out one.svg >/dev/null' "$NN"
check "single-epoch SVG draws its points" check_svg one.svg single=1:0

if "$NN" plot logs/plain.csv "logs/lr&val.csv" logs/single.csv --out j.svg --json >j.json 2>err.txt &&
    python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d == {"out": "j.svg", "runs": 3, "epochs": [3, 5, 1]}, d' j.json 2>err.txt
then pass "--json prints out, runs and epochs"
else fail "--json prints out, runs and epochs" "$(cat j.json err.txt | head -c 300)"; fi

# a run resumed from an earlier checkpoint appends epochs 2 and 3 again
printf '%s\n1,1,2,2,10,1,1\n2,2,1.5,1.5,20,1,1\n3,3,1.4,1.4,25,1,1\n2,2,1.6,1.6,21,1,1\n3,3,1.3,1.3,30,1,1\n' \
    "$HDR" >logs/resumed.csv
if "$NN" plot logs/resumed.csv --out r.svg --json >r.json 2>err.txt && grep -qF '"epochs":[3]' r.json
then pass "repeated epochs (resume) keep the last rows"
else fail "repeated epochs (resume) keep the last rows" "$(cat r.json err.txt | head -c 300)"; fi

if [ -f "$DATA/train-images-idx3-ubyte.gz" ] || [ -f "$DATA/train-images-idx3-ubyte" ]; then
    if "$NN" train "$MODEL" --data "$DATA" --epochs 2 --train-limit 1000 --test-limit 200 \
        --log real.csv --quiet --threads 2 >/dev/null 2>err.txt &&
        "$NN" plot real.csv --out real.svg >/dev/null 2>>err.txt
    then
        pass "log of a real 'nnopt train --log' run plots"
        check "real run's SVG" check_svg real.svg real=2:0
    else fail "log of a real 'nnopt train --log' run plots" "$(head -c 300 err.txt)"; fi
else
    echo "SKIP real training log: no Fashion-MNIST in $DATA"
fi

if command -v rsvg-convert >/dev/null; then
    if rsvg-convert runs.svg -o runs.png 2>err.txt && [ "$(head -c 4 runs.png | od -An -c | tr -d ' ')" = "211PNG" ] &&
        [ "$(wc -c <runs.png)" -gt 20000 ]
    then pass "rsvg-convert renders the SVG ($(wc -c <runs.png) bytes of PNG)"
    else fail "rsvg-convert renders the SVG" "$(head -c 300 err.txt; ls -l runs.png 2>&1)"; fi
else
    echo "SKIP rendering check: rsvg-convert not installed (Debian package librsvg2-bin)"
fi

# ------------------------------------------------------------------ bad inputs
# expect_error NAME NEEDLE... -- ARGS...
# Runs nnopt ARGS; checks exit code 1..123, empty stdout, one stderr line that
# contains every NEEDLE (case-insensitive fixed strings), and no bad.svg left.
expect_error() {
    local name=$1; shift
    local needles=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do needles+=("$1"); shift; done
    shift
    rm -f bad.svg
    timeout 60 "$NN" "$@" >out.txt 2>err.txt </dev/null
    local rc=$? why="" n
    if [ $rc -eq 0 ]; then why="exit code 0"
    elif [ $rc -ge 124 ]; then why="exit code $rc (timeout, signal or crash)"
    elif [ -s out.txt ]; then why="stdout not empty: $(head -c 200 out.txt | tr '\n' ' ')"
    elif [ "$(grep -c '' err.txt)" -ne 1 ]; then why="$(grep -c '' err.txt) lines on stderr, expected 1"
    elif [ -e bad.svg ]; then why="bad.svg was left behind"
    else
        for n in "${needles[@]}"; do
            grep -qiF -e "$n" err.txt || why="${why}stderr does not mention '$n'; "
        done
    fi
    if [ -z "$why" ]; then pass "$name"
    else
        fail "$name" "$why"
        echo "    command: nnopt $*"
        sed -n '1,5s/^/    stderr: /p' err.txt
    fi
}

printf 'a,b,c\n1,2,3\n' >bad_header.csv
printf '%s\n1,10,abc,1.0,70.5,1.0,100.0\n' "$HDR" >bad_number.csv
printf '%s\n1,10,1.0,70.5,1.0,100.0\n' "$HDR" >short_row.csv
printf '%s\n1,10,1.0,1.0,70.5,0.5,1.0,100.0\n' "$HDR" >long_row.csv
printf '%s\n1,10,1.0,1.0,170.5,1.0,100.0\n' "$HDR" >bad_accuracy.csv
printf '%s\n1,10,1.0,1.0,nan,1.0,100.0\n' "$HDR" >nan.csv
printf '%s\n' "$HDR" >header_only.csv
: >empty.csv

expect_error "missing file" "missing.csv" "cannot open" -- plot logs/plain.csv missing.csv --out bad.svg
expect_error "bad header" "bad_header.csv:1" "header" -- plot bad_header.csv --out bad.svg
expect_error "non-numeric field" "bad_number.csv:2" "train_loss" "abc" -- plot bad_number.csv --out bad.svg
expect_error "row with too few fields" "short_row.csv:2" "6 fields" -- plot short_row.csv --out bad.svg
expect_error "row with too many fields" "long_row.csv:2" "8 fields" -- plot long_row.csv --out bad.svg
expect_error "accuracy over 100" "bad_accuracy.csv:2" "test_accuracy" -- plot bad_accuracy.csv --out bad.svg
expect_error "NaN field" "nan.csv:2" "nan" -- plot nan.csv --out bad.svg
expect_error "header but no rows" "header_only.csv" "no epoch rows" -- plot header_only.csv --out bad.svg
expect_error "empty file" "empty.csv" "empty" -- plot empty.csv --out bad.svg
expect_error "a directory as log" "logs" -- plot logs --out bad.svg
expect_error "no --out" "--out" -- plot logs/plain.csv
expect_error "no log files" "LOG.csv" -- plot --out bad.svg
expect_error "--out is an input log" "logs/plain.csv" "overwrite" -- plot logs/plain.csv --out logs/plain.csv
expect_error "unwritable --out" "no_dir/x.svg" -- plot logs/plain.csv --out no_dir/x.svg
expect_error "unknown flag" "--frob" -- plot logs/plain.csv --out bad.svg --frob
check "plot --help exits 0 with a usage line" bash -c '"$0" plot --help | grep -q "usage: nnopt plot"' "$NN"
check "nnopt --help lists plot" bash -c '"$0" --help | grep -q "plot"' "$NN"

finish
