#!/usr/bin/env bash
# One training epoch of the seed CNN, nnopt vs PyTorch, on this machine in one run.
#
#   bench/seed_epoch.sh [RAW.csv]          # R=3 repetitions, 2 threads
#   R=5 bench/seed_epoch.sh out.csv        # more repetitions
#   THREADS=1 bench/seed_epoch.sh          # the 1-thread comparison
#
# Runs R repetitions alternating nnopt, torch, nnopt, torch, ... so that both
# see the same machine conditions. Each repetition is a fresh process training
# one epoch (60,000 images, batch 64, SGD lr 0.01 momentum 0.9) and evaluating
# the 10,000 test images:
#   nnopt: build/nnopt train models/seed_cnn.nn --epochs 1 --threads T --json --quiet
#   torch: OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=CORE /usr/bin/python3 bench/torch_seed_epoch.py --threads T
# where CORE is the OpenBLAS kernel set nnopt uses (nnopt system): Debian's
# PyTorch links the same OpenBLAS, and gets the same kernels where OpenBLAS's
# own choice is older than the CPU.
# Reported per run: the process's own train seconds and images/s (batch loop
# only), test accuracy, eval seconds, and the wall time of the whole process
# (date +%s.%N around it: start-up, data loading, training and evaluation).
# Prints a table of medians and the nnopt/torch images/s ratio; with an
# argument, also writes the raw rows there as CSV.
#
# build/nnopt is built with scripts/build.sh if absent, then copied to a
# temporary directory so every repetition runs the same binary even if the
# build directory is rebuilt meanwhile. Other load on the machine skews the
# numbers badly (2 cores). For every run the script records the 1-minute
# load average and how busy the CPUs were over the second before it
# (busy_pct_before, from /proc/stat; 100 = all cores busy), and, during the
# run, the CPU time the machine spent on everything except the measured
# process, divided by the run's wall time (other_cores: 0 = a quiet machine,
# 1 = one core's worth of other work). WAIT_IDLE=S waits up to about S
# seconds before each run for a second with the CPUs under 10% busy.
# The table shows medians and also the best run (most images/s) of each side,
# which is the steadier figure when other processes interfere.
set -euo pipefail
cd "$(dirname "$0")/.."

R="${R:-3}"
THREADS="${THREADS:-2}"
CSV="${1:-}"
PY=/usr/bin/python3

case "$R" in ''|*[!0-9]*|0) echo "seed_epoch.sh: R must be a positive integer" >&2; exit 2 ;; esac
case "$THREADS" in ''|*[!0-9]*|0) echo "seed_epoch.sh: THREADS must be a positive integer" >&2; exit 2 ;; esac
[ -x "$PY" ] || { echo "seed_epoch.sh: $PY not found (Debian's python3 with PyTorch)" >&2; exit 1; }
if [ ! -x build/nnopt ]; then
    echo "seed_epoch.sh: build/nnopt absent, building with scripts/build.sh" >&2
    scripts/build.sh >&2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp build/nnopt "$tmp/nnopt"
rows="$tmp/rows.csv"
BLAS_CORE="$("$tmp/nnopt" system --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["openblas_core"])')"
echo "rep,impl,version,threads,seconds,images_per_s,test_accuracy,eval_seconds,wall_seconds,load1_before,busy_pct_before,cpu_seconds,other_cores" >"$rows"
WAIT_IDLE="${WAIT_IDLE:-0}"
TIMEFORMAT='%U %S'

# cpu_busy: percent of all CPU time not idle/iowait over the next second.
cpu_busy() {
    local a b tot=0 idle i
    a=($(head -n1 /proc/stat)); sleep 1; b=($(head -n1 /proc/stat))
    for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
    idle=$((b[4] - a[4] + b[5] - a[5]))
    if [ "$tot" -gt 0 ]; then echo $(( (100 * (tot - idle) + tot / 2) / tot )); else echo 0; fi
}

nnopt_version="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src include 2>/dev/null || echo +dirty)"
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "# threads $THREADS, repetitions $R, nnopt $nnopt_version (sha256 $(sha256sum "$tmp/nnopt" | cut -c1-12)), loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# OpenBLAS kernels: $BLAS_CORE for both (nnopt system)"

# run_one REP IMPL: runs one process, appends one CSV row, echoes a progress line to stderr.
run_one() {
    local rep="$1" impl="$2" load busy t0 t1 out waited=0
    busy="$(cpu_busy)"
    while [ "$busy" -ge 10 ] && [ "$waited" -lt "$WAIT_IDLE" ]; do
        busy="$(cpu_busy)"; waited=$((waited + 1))
    done
    load="$(cut -d' ' -f1 /proc/loadavg)"
    local s0 s1 rc=0
    s0="$(head -n1 /proc/stat)"
    t0="$(date +%s.%N)"
    if [ "$impl" = nnopt ]; then
        { time "$tmp/nnopt" train models/seed_cnn.nn --epochs 1 --threads "$THREADS" --json --quiet \
              >"$tmp/out" 2>"$tmp/err"; } 2>"$tmp/time" || rc=$?
    else
        { time OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE="$BLAS_CORE" "$PY" bench/torch_seed_epoch.py --epochs 1 --threads "$THREADS" \
              >"$tmp/out" 2>"$tmp/err"; } 2>"$tmp/time" || rc=$?
    fi
    t1="$(date +%s.%N)"
    s1="$(head -n1 /proc/stat)"
    if [ "$rc" -ne 0 ]; then
        echo "seed_epoch.sh: $impl run $rep failed (exit $rc):" >&2; cat "$tmp/err" >&2; exit 1
    fi
    "$PY" - "$rep" "$impl" "$nnopt_version" "$THREADS" "$t0" "$t1" "$load" "$busy" \
        "$(cat "$tmp/time")" "$s0" "$s1" "$(getconf CLK_TCK)" "$tmp/out" >>"$rows" <<'EOF'
import json, sys
rep, impl, nver, threads, t0, t1, load, busy, tm, s0, s1, hz, out = sys.argv[1:]
j = json.loads(open(out).read().strip().splitlines()[-1])
ver = j.get("version", nver)
wall = float(t1) - float(t0)
user, system = map(float, tm.split()[-2:])          # TIMEFORMAT='%U %S'
a, b = [list(map(int, s.split()[1:9])) for s in (s0, s1)]
d = [y - x for x, y in zip(a, b)]
busy_s = (sum(d) - d[3] - d[4]) / float(hz)          # all but idle and iowait
other = max(0.0, busy_s - user - system) / wall if wall > 0 else 0.0
print(",".join(str(v) for v in (rep, impl, ver, threads, j["seconds"], j["images_per_s"],
                                 j["test_accuracy"], j["eval_seconds"], "%.3f" % wall, load, busy,
                                 "%.2f" % (user + system), "%.2f" % other)))
EOF
    echo "  rep $rep $(tail -n1 "$rows")" >&2
}

for rep in $(seq 1 "$R"); do
    run_one "$rep" nnopt
    run_one "$rep" torch
done

"$PY" - "$rows" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
med, best = {}, {}
print("%-6s %-13s %4s %14s %10s %15s %7s %10s %12s | %12s %10s" % (
    "impl", "version", "runs", "train_s/epoch", "images/s", "process_wall_s", "eval_s",
    "test_acc%", "other_cores", "best_train_s", "best_img/s"))
for impl in ("nnopt", "torch"):
    rs = [r for r in rows if r["impl"] == impl]
    m = lambda k: statistics.median(float(r[k]) for r in rs)
    b = max(rs, key=lambda r: float(r["images_per_s"]))
    med[impl], best[impl] = m("images_per_s"), float(b["images_per_s"])
    print("%-6s %-13s %4d %14.3f %10.1f %15.3f %7.3f %10s %12.2f | %12.3f %10.1f" % (
        impl, rs[0]["version"], len(rs), m("seconds"), m("images_per_s"), m("wall_seconds"),
        m("eval_seconds"), "%.2f" % m("test_accuracy"), m("other_cores"), float(b["seconds"]),
        best[impl]))
print("images/s ratio nnopt/torch: median %.2f, best %.2f" % (
    med["nnopt"] / med["torch"], best["nnopt"] / best["torch"]))
print("(medians over the runs; best = the run with the most images/s; other_cores = CPU used by"
      " other processes during a run, in cores)")
EOF
echo "# loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "$CSV" ]; then
    cp "$rows" "$CSV"
    echo "# raw rows: $CSV"
fi
