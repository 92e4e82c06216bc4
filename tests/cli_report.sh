#!/usr/bin/env bash
# cli_report.sh - nnopt report: a search study to one HTML page and a Markdown summary.
#
# usage: bash tests/cli_report.sh <path-to-nnopt> <source-dir>
#
# The studies are written with the sqlite3 tool (no training, so the test takes
# seconds): the schema is read from src/search/study.c, the stored space
# maximizes validation accuracy and minimizes latency under a latency
# constraint, and 13 trials cover every state, with curves, an error holding
# markup and a study path holding '&'.
# Checks: exit 0 and a one-line summary; the page has a title, the study path
# (escaped), a generated-at time, five inline <svg> that parse as XML, unique
# ids, the Pareto-front legend, no scripts and no external resources; the best
# table holds the Pareto front (trials 5, 1, 9) and not the dominated trials;
# the failed trial's error is escaped; the Markdown has the summary, front and
# importance tables; --json parses and gives the counts, the best trials and
# the front; the study file is unchanged (read-only); a one-objective study
# lists every complete trial in its best table; an empty study still writes a
# page that says "no trials yet" (exit 0); a study made by a 6-trial `nnopt
# search` on 600 images reports (skipped without the data set); headless
# chromium, when installed, renders the page (skipped otherwise). Bad inputs
# (missing file, not SQLite, SQLite but not a study, no stored space, a
# directory) exit 1 with one stderr line naming the file and write nothing;
# usage errors exit 2.
# Prints one PASS/FAIL line per check; exits 1 if any failed.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1

command -v sqlite3 >/dev/null || { echo "FAIL sqlite3 (Debian package sqlite3) is needed to make the studies"; exit 1; }

# The schema as study.c creates it: its SCHEMA string literal, joined.
SCHEMA=$(python3 - "$SRC/src/search/study.c" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
m = re.search(r'SCHEMA\s*=\s*((?:\s*"(?:[^"\\]|\\.)*")+)\s*;', src)
if not m:
    sys.exit("no SCHEMA string in " + sys.argv[1])
print("".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1))))
PY
) || { echo "FAIL cannot read the schema from src/search/study.c"; exit 1; }

# make_study FILE OBJECTIVES: the schema and the settings, no trials.
make_study() {
    sqlite3 "$1" <<EOF
$SCHEMA
INSERT INTO settings VALUES('space', '[search]
model = models/seed_cnn.nn
objectives = $2
constraint = latency_ms <= 2.5
[optimizer]
lr = float 0.001 0.3 log
name = choice sgd adamw
[train]
batch = choice 32 64 128
');
INSERT INTO settings VALUES('space_path', '$SRC/search.space');
INSERT INTO settings VALUES('sampler', 'tpe');
INSERT INTO settings VALUES('pruner', 'asha');
EOF
}

# add_trials FILE: 13 trials in every state, with their epochs.
add_trials() {
    sqlite3 "$1" <<'EOF'
-- id, state, lr, name, batch, val_accuracy, latency_ms, params, train_seconds, test_accuracy, started, finished
CREATE TEMP TABLE t(id, state, lr, name, batch, va, lat, params, secs, test, started, finished, error);
INSERT INTO t VALUES
 (1,  'complete',  '0.01',   'sgd',   '64',  0.82, 1.2, 11000, 30.5, NULL,  1764000000, 1764000040, NULL),
 (2,  'complete',  '0.05',   'adamw', '128', 0.86, 2.0, 24000, 41.0, NULL,  1764000010, 1764000060, NULL),
 (3,  'pruned',    '0.2',    'sgd',   '32',  0.41, 1.1, 11000, 8.0,  NULL,  1764000045, 1764000055, NULL),
 (4,  'complete',  '0.003',  'adamw', '32',  0.88, 3.1, 52000, 60.0, NULL,  1764000060, 1764000130, NULL),
 (5,  'complete',  '0.02',   'adamw', '64',  0.87, 1.5, 18000, 35.0, 0.865, 1764000070, 1764000110, NULL),
 (6,  'pruned',    '0.15',   'sgd',   '128', 0.55, 1.4, 11000, 16.0, NULL,  1764000115, 1764000135, NULL),
 (7,  'infeasible','0.004',  'adamw', '32',  NULL, 4.0, 90000, NULL, NULL,  1764000140, 1764000141, NULL),
 (8,  'failed',    '0.3',    'sgd',   '64',  NULL, 1.0, 11000, NULL, NULL,  1764000142, 1764000150,
      '<script>alert(1)</script> non-finite loss & ''nan'''),
 (9,  'complete',  '0.008',  'sgd',   '128', 0.80, 0.9, 8000,  25.0, NULL,  1764000150, 1764000190, NULL),
 (10, 'stopped',   '0.03',   'adamw', '64',  NULL, 1.6, 18000, NULL, NULL,  1764000190, 1764000210, NULL),
 (11, 'running',   '0.012',  'sgd',   '32',  NULL, 1.2, 11000, NULL, NULL,  1764000215, NULL,       NULL),
 (12, 'complete',  '0.1',    'sgd',   '32',  0.75, 1.3, 11000, 28.0, NULL,  1764000200, 1764000245, NULL),
 (13, 'pruned',    '0.0015', 'adamw', '128', 0.38, 1.7, 24000, 9.0,  NULL,  1764000240, 1764000250, NULL);
INSERT INTO trials(id, state, config, bracket, val_accuracy, latency_ms, params, train_seconds,
                   test_accuracy, host, pid, started, finished, heartbeat, error)
  SELECT id, state, json_object('optimizer.lr', lr, 'optimizer.name', name, 'train.batch', batch),
         0, va, lat, params, secs, test, 'testhost', 1000 + id, started, finished,
         coalesce(finished, started), error FROM t;
-- epochs: complete trials 4, pruned ones 1 or 2, the failed one 1, stopped 2, running 1
CREATE TEMP TABLE e(trial, epochs);
INSERT INTO e VALUES (1,4),(2,4),(3,1),(4,4),(5,4),(6,2),(8,1),(9,4),(10,2),(11,1),(12,4),(13,1);
WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 4)
INSERT INTO epochs(trial, epoch, val_accuracy, val_loss, seconds)
  SELECT e.trial, n.k,
         coalesce(t.va, 0.5) * (0.7 + 0.3 * n.k / e.epochs) - (e.trial % 3) * 0.01,
         1.5 / n.k, 8.0 * n.k
  FROM e JOIN n ON n.k <= e.epochs JOIN t ON t.id = e.trial;
EOF
}

mkdir -p "a&b"
STUDY="a&b/study.db"
make_study "$STUDY" "maximize val_accuracy, minimize latency_ms" && add_trials "$STUDY" ||
    { echo "FAIL cannot make the test study with sqlite3"; exit 1; }
SUM_BEFORE=$(md5sum <"$STUDY")

# ------------------------------------------------------------------ a report
if "$NN" report "$STUDY" >out.txt 2>err.txt; then pass "report of a 13-trial study exits 0"
else fail "report of a 13-trial study exits 0" "$(head -c 300 err.txt)"; fi
check "it writes a&b/study.html and a&b/study.md" test -s "a&b/study.html" -a -s "a&b/study.md"
check "one line on stdout with the counts" bash -c \
    '[ "$(grep -c "" out.txt)" = 1 ] && grep -qF "13 trials (6 complete, 3 pruned, 1 infeasible, 1 failed, 1 stopped, 1 running)" out.txt'
check "nothing on stderr" test ! -s err.txt
[ "$(md5sum <"$STUDY")" = "$SUM_BEFORE" ] && pass "the study is unchanged" || fail "the study is unchanged"

# check_page HTML SVGS: python3 checks the page's structure.
check_page() {
    python3 - "$@" <<'PY'
import re, sys, xml.dom.minidom
path, want_svgs = sys.argv[1], int(sys.argv[2])
html = open(path, encoding="utf-8").read()
assert html.startswith("<!DOCTYPE html>"), "no doctype"
assert re.search(r"<title>nnopt report: [^<]+</title>", html), "no <title>"
assert "study.db" in html and "a&amp;b/study.db" in html, "study path missing or not escaped"
assert re.search(r"generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", html), "no generated-at time"
svgs = re.findall(r"<svg\b.*?</svg>", html, re.S)
assert len(svgs) == want_svgs, "%d <svg> elements, expected %d" % (len(svgs), want_svgs)
assert html.count("<svg") == want_svgs, "unclosed <svg>"
assert "<?xml" not in html, "an XML declaration inside the page"
for i, s in enumerate(svgs):
    doc = xml.dom.minidom.parseString(s)
    texts = [n.firstChild.data for n in doc.getElementsByTagName("text") if n.firstChild]
    assert doc.getElementsByTagName("title") or texts, "svg %d has no title" % (i + 1)
    assert len(texts) >= 3, "svg %d: %d texts, expected a title and axis labels" % (i + 1, len(texts))
ids = re.findall(r'\bid="([^"]*)"', html)
assert len(ids) == len(set(ids)), "duplicate ids: %r" % sorted(i for i in ids if ids.count(i) > 1)
for ref in re.findall(r"url\(#([^)]*)\)", html):
    assert ref in ids, "url(#%s) refers to no id" % ref
lower = html.lower()
assert "<script" not in lower, "a <script> in the page"
for bad in ("src=", "href=", "@import", "<link", "<img", "<iframe"):
    assert bad not in lower, "external resource or link: %r" % bad
assert re.sub(r'xmlns="http://www\.w3\.org/2000/svg"', "", html).find("http") < 0, "an http URL"
PY
}
check "page: title, path, time, 5 inline SVGs parse as XML, unique ids, no scripts or external resources" \
    check_page "a&b/study.html" 5

HTML="a&b/study.html"
check "the page has the Pareto-front legend" grep -qF ">Pareto front</text>" "$HTML"
check "every plot has its title and axis labels" python3 - "$HTML" <<'PY'
import sys
html = open(sys.argv[1], encoding="utf-8").read()
for t in ("validation accuracy (%) against latency per image (ms)", "best validation accuracy (%) so far",
          "learning curves: validation accuracy per epoch", "where pruned trials stopped (3 pruned)",
          "parameter importance for val_accuracy", ">trial id<", ">epoch<", ">epochs trained<",
          "time since the first trial started", ">parameter<", "fraction of the variance"):
    assert t in html, "missing %r" % t
PY
check "the best table is the Pareto front 5, 1, 9 (not the dominated 2, 4, 12)" python3 - "$HTML" <<'PY'
import re, sys
html = open(sys.argv[1], encoding="utf-8").read()
best = re.search(r'<table class="best">(.*?)</table>', html, re.S).group(1)
head = re.findall(r"<th\b[^>]*>(.*?)</th>", best)
rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", best)[1:]]
ids = [r[0] for r in rows]
assert ids == ["5", "1", "9"], "front rows %r, expected 5, 1, 9" % ids
for h in ("trial", "val acc % \u2191", "latency ms \u2193", "test acc %", "params", "train s",
          "optimizer.lr", "optimizer.name", "train.batch"):
    assert h in head, "no column %r in %r" % (h, head)
r5 = dict(zip(head, rows[0]))
assert r5["val acc % \u2191"] == "87.00" and r5["test acc %"] == "86.50", r5
assert r5["optimizer.name"] == "adamw" and r5["train.batch"] == "64" and r5["optimizer.lr"] == "0.02", r5
PY
check "summary: states, sampler, pruner, space path, wall time, best" python3 - "$HTML" <<'PY'
import re, sys
html = open(sys.argv[1], encoding="utf-8").read()
s = re.search(r'<table class="summary">(.*?)</table>', html, re.S).group(1)
rows = dict(re.findall(r"<tr><td>(.*?)</td><td[^>]*>(.*?)</td></tr>", s))
want = {"trials": "13", "complete": "6", "pruned": "3", "infeasible": "1", "failed": "1",
        "stopped": "1", "running": "1", "sampler": "tpe", "pruner": "asha",
        "wall time spanned": "4 min 10 s"}
for k, v in want.items():
    assert rows.get(k) == v, "%s is %r, expected %r" % (k, rows.get(k), v)
assert rows["space file"].endswith("/search.space"), rows["space file"]
assert "#5" in rows["best trials"] and "#9" in rows["best trials"], rows["best trials"]
PY
check "the failed trial's error is escaped" bash -c \
    'grep -qF "&lt;script&gt;alert(1)&lt;/script&gt; non-finite loss &amp; &#39;nan&#39;" "a&b/study.html"'
check "importance table lists every parameter" python3 - "$HTML" <<'PY'
import re, sys
html = open(sys.argv[1], encoding="utf-8").read()
t = re.search(r'<table class="importance">(.*?)</table>', html, re.S).group(1)
rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", t)[1:]]
assert sorted(r[0] for r in rows) == ["optimizer.lr", "optimizer.name", "train.batch"], rows
for r in rows:
    v = float(r[2])
    assert 0 <= v <= 1 and r[4] == "5", r
PY

MD="a&b/study.md"
check "Markdown: summary, Pareto front and importance tables" python3 - "$MD" <<'PY'
import re, sys
md = open(sys.argv[1], encoding="utf-8").read()
for h in ("# Search report: ", "## Summary", "## Pareto front", "## Parameter importance", "## Failed trials"):
    assert h in md, "no %r" % h
assert "| item | value |" in md and "| complete | 6 |" in md and "| sampler | tpe |" in md
front = md.split("## Pareto front")[1].split("##")[0]
rows = re.findall(r"^\| (\d+) \| ", front, re.M)
assert rows == ["5", "1", "9"], rows
assert "<script>" not in md and "&lt;script&gt;" in md, "error not escaped in the Markdown"
assert "http" not in md, "a link in the Markdown"
PY

# ------------------------------------------------------------------ --json
if "$NN" report "$STUDY" --json --out j.html --markdown j.md >j.json 2>err.txt &&
    python3 -m json.tool j.json >/dev/null 2>>err.txt &&
    python3 - j.json 2>>err.txt <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["trials"] == 13 and d["html"] == "j.html" and d["markdown"] == "j.md", d
assert d["states"] == {"complete": 6, "pruned": 3, "infeasible": 1, "failed": 1, "stopped": 1,
                       "running": 1}, d["states"]
assert d["sampler"] == "tpe" and d["pruner"] == "asha", d
assert [o["metric"] for o in d["objectives"]] == ["val_accuracy", "latency_ms"], d["objectives"]
assert [t["id"] for t in d["pareto_front"]] == [5, 1, 9], d["pareto_front"]
assert [t["id"] for t in d["best"]] == [5, 2, 1, 9, 12], [t["id"] for t in d["best"]]
t5 = d["pareto_front"][0]
assert t5["config"] == {"optimizer.lr": "0.02", "optimizer.name": "adamw", "train.batch": "64"}, t5
assert t5["test_accuracy"] == 0.865 and t5["val_loss"] is None and t5["epochs"] == 4, t5
assert abs(d["wall_seconds"] - 250) < 1e-6, d["wall_seconds"]
assert len(d["importance"]) == 3, d["importance"]
PY
then pass "--json prints one object: counts, best trials, Pareto front"
else fail "--json prints one object: counts, best trials, Pareto front" "$(cat j.json err.txt | head -c 400)"; fi
check "--out and --markdown are written" test -s j.html -a -s j.md

# ------------------------------------------------------------------ one objective
make_study one.db "maximize val_accuracy" && add_trials one.db || fail "make a one-objective study"
if "$NN" report one.db >/dev/null 2>err.txt && python3 - one.html <<'PY' 2>>err.txt
import re, sys
html = open(sys.argv[1], encoding="utf-8").read()
assert "<h2>Best trials</h2>" in html
best = re.search(r'<table class="best">(.*?)</table>', html, re.S).group(1)
ids = [re.findall(r"<td[^>]*>(.*?)</td>", r)[0] for r in re.findall(r"<tr>(.*?)</tr>", best)[1:]]
# every feasible complete trial by accuracy; trial 4 breaks the latency constraint
assert ids == ["5", "2", "1", "9", "12"], ids
assert len(re.findall(r"<svg\b", html)) == 5
assert ">Pareto front</text>" in html and "validation accuracy (%) against latency per image (ms)" in html
# the latency constraint (2.5 ms) as a dashed line in the trade-off plot, with its legend key
fig = re.search(r'<figure id="tradeoff">(.*?)</figure>', html, re.S).group(1)
assert ">constraint bound</text>" in fig, "no constraint legend"
assert re.search(r'<polyline[^>]*stroke-dasharray="8,5"', fig), "no dashed constraint line"
PY
then pass "one objective: the best table lists every feasible complete trial, best first"
else fail "one objective: the best table lists every feasible complete trial, best first" "$(head -c 300 err.txt)"; fi

# ------------------------------------------------------------------ no trials
make_study empty.db "maximize val_accuracy, minimize latency_ms" || fail "make an empty study"
if "$NN" report empty.db >out.txt 2>err.txt && grep -qF "no trials yet" out.txt &&
    grep -qF "no trials yet" empty.html && grep -qF "no trials yet" empty.md &&
    [ "$(grep -c "<svg" empty.html)" = 0 ]
then pass "a study with no trials: exit 0, the page says 'no trials yet'"
else fail "a study with no trials: exit 0, the page says 'no trials yet'" "$(cat out.txt err.txt | head -c 300)"; fi

# ------------------------------------------------------------------ a real search
# A study written by `nnopt search` itself (a few seconds of training on 600
# images), so that the report and the search agree on what a study holds.
if [ -f "$DATA/train-images-idx3-ubyte.gz" ] || [ -f "$DATA/train-images-idx3-ubyte" ]; then
    cat >real.space <<EOF
[search]
model = $SRC/models/search_cnn.nn
val = 300
train_limit = 600
objectives = maximize val_accuracy, minimize latency_ms
[model]
C1 = int 4 8 log
FC = choice 32 64
[optimizer]
name = choice sgd adamw
lr = float 0.001 0.1 log
[train]
epochs = 2
batch = choice 32 64
threads = 1
EOF
    if timeout 300 "$NN" search real.space --data "$DATA" --trials 6 --study real.study >search.txt 2>&1 &&
        "$NN" report real.study --json >real.json 2>err.txt && python3 - real.json real.html <<'PY' 2>>err.txt
import json, re, sys, xml.dom.minidom
d = json.load(open(sys.argv[1]))
assert d["trials"] == 6 and sum(d["states"].values()) == 6, d["states"]
assert d["states"]["complete"] >= 1 and d["pareto_front"], d
for t in d["pareto_front"]:
    assert t["state"] == "complete" and t["epochs"] == 2 and 0 < t["val_accuracy"] <= 1, t
    assert set(t["config"]) >= {"model.C1", "model.FC", "optimizer.name", "optimizer.lr", "train.batch"}, t
html = open(sys.argv[2], encoding="utf-8").read()
svgs = re.findall(r"<svg\b.*?</svg>", html, re.S)
assert len(svgs) == 5, len(svgs)
for s in svgs:
    xml.dom.minidom.parseString(s)
PY
    then pass "report of a study made by 'nnopt search' (6 trials)"
    else fail "report of a study made by 'nnopt search'" "$(tail -c 300 search.txt; head -c 300 err.txt)"; fi
else
    echo "SKIP report of a real search: no Fashion-MNIST in $DATA"
fi

# ------------------------------------------------------------------ rendering
CHROME=$(command -v chromium || command -v chromium-headless-shell || command -v chromium-browser || true)
if [ -n "$CHROME" ]; then
    if timeout 120 "$CHROME" --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --window-size=1280,5200 --screenshot="$T/page.png" "file://$T/a&b/study.html" \
        >/dev/null 2>err.txt && [ "$(head -c 4 page.png | od -An -c | tr -d ' ')" = "211PNG" ] &&
        [ "$(wc -c <page.png)" -gt 50000 ]
    then pass "headless chromium renders the page ($(wc -c <page.png) bytes of PNG)"
    else fail "headless chromium renders the page" "$(tail -c 300 err.txt; ls -l page.png 2>&1)"; fi
    if [ -n "${NN_REPORT_PNG:-}" ] && [ -f page.png ]; then cp page.png "$NN_REPORT_PNG"; fi
else
    echo "SKIP rendering check: no headless chromium (Debian package chromium or chromium-headless-shell)"
fi

# ------------------------------------------------------------------ bad inputs
# expect_error NAME RC NEEDLE... -- ARGS...
# Runs nnopt ARGS; checks exit code RC, empty stdout, one stderr line that
# contains every NEEDLE (case-insensitive fixed strings), and no bad.html or
# bad.md left.
expect_error() {
    local name=$1 want=$2; shift 2
    local needles=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do needles+=("$1"); shift; done
    shift
    rm -f bad.html bad.md
    timeout 60 "$NN" "$@" >out.txt 2>err.txt </dev/null
    local rc=$? why="" n
    if [ $rc -ne "$want" ]; then why="exit code $rc, expected $want"
    elif [ -s out.txt ]; then why="stdout not empty: $(head -c 200 out.txt | tr '\n' ' ')"
    elif [ "$(grep -c '' err.txt)" -ne 1 ]; then why="$(grep -c '' err.txt) lines on stderr, expected 1"
    elif [ -e bad.html ] || [ -e bad.md ]; then why="bad.html or bad.md was left behind"
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

printf 'epoch,step\n1,2\n' >not_sqlite.db
sqlite3 other.db 'CREATE TABLE runs(id INTEGER PRIMARY KEY, loss REAL); INSERT INTO runs VALUES(1, 0.5);'
sqlite3 nospace.db "$SCHEMA INSERT INTO settings VALUES('sampler', 'tpe');"
mkdir -p adir
expect_error "missing file" 1 "missing.db" "no such study" -- report missing.db --out bad.html --markdown bad.md
expect_error "not an SQLite file" 1 "not_sqlite.db" "not a" -- report not_sqlite.db --out bad.html --markdown bad.md
expect_error "SQLite file that is not a study" 1 "other.db" "study" -- report other.db --out bad.html --markdown bad.md
expect_error "study without a stored space" 1 "nospace.db" "no space" -- report nospace.db --out bad.html --markdown bad.md
expect_error "a directory" 1 "adir" -- report adir --out bad.html --markdown bad.md
expect_error "no STUDY" 2 "STUDY" -- report
expect_error "two STUDY files" 2 "unexpected argument" -- report one.db empty.db
expect_error "unknown flag" 2 "--frob" -- report one.db --frob
expect_error "--out is the study" 2 "one.db" "overwrite" -- report one.db --out one.db
expect_error "--out and --markdown the same" 2 "same" -- report one.db --out x.txt --markdown x.txt
expect_error "unwritable --out" 1 "no_dir/x.html" -- report one.db --out no_dir/x.html --markdown bad.md
check "report --help exits 0 with a usage line" bash -c '"$0" report --help | grep -q "usage: nnopt report"' "$NN"

finish
