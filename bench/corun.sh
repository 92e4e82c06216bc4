#!/usr/bin/env bash
# Two nnopt trainings at once on this machine: how much of its solo speed
# each keeps, with the cores shared through the registry of nnopt processes
# (NNOPT_SHARE=on, the default: src/cli/share.c) and without it (off: each
# run takes every core).
#
#   bench/corun.sh                  # R=3 rounds, seed CNN, 10,240 images
#   R=5 LIMIT=20480 bench/corun.sh  # more rounds, longer epochs
#   MODES=on bench/corun.sh         # sharing only
#
# Each round, per mode: one run alone, then two identical runs started
# together (same binary, same real data: the first LIMIT Fashion-MNIST
# training images, batch 64, 3 epochs; no thread count given). A run's speed
# is its images/s over epochs 2 and 3 (the trainer's own timing of the batch
# loop: start-up, data loading and epoch 1's warm-up left out). Prints one
# CSV line per run (round, mode, solo/a/b, images/s, threads per epoch),
# then per mode the median solo speed and each concurrent run's median share
# of it. The issue's target: each run keeps at least 40% of its solo speed.
#
# Other load on the machine skews the numbers (2 cores): the 1-minute load
# average before each round is printed with it.
set -euo pipefail
cd "$(dirname "$0")/.."

R="${R:-3}"
LIMIT="${LIMIT:-10240}"
MODES="${MODES:-on off}"
MODEL="${MODEL:-models/seed_cnn.nn}"
DATA="${DATA:-/usr/share/datasets/fashion-mnist}"
case "$R" in ''|*[!0-9]*|0) echo "corun.sh: R must be a positive integer" >&2; exit 2 ;; esac
case "$LIMIT" in ''|*[!0-9]*|0) echo "corun.sh: LIMIT must be a positive integer" >&2; exit 2 ;; esac
if [ ! -x build/nnopt ]; then
    echo "corun.sh: build/nnopt absent, building with scripts/build.sh" >&2
    scripts/build.sh >&2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp build/nnopt "$tmp/nnopt"
rows="$tmp/rows.csv"

# run MODE OUT: one training, its JSON lines in OUT
run() {
    NNOPT_SHARE=$1 "$tmp/nnopt" train "$MODEL" --data "$DATA" --train-limit "$LIMIT" \
        --test-limit 256 --epochs 3 --batch 64 --json --quiet >"$2" 2>"$2.err"
}
# speed FILE: "images/s threads" of epochs 2..3 (threads: one per epoch, 1-2-2)
speed() {
    python3 -c '
import json, sys
e = [json.loads(l) for l in open(sys.argv[1])]
later = e[1:]
images = sum(x["images_per_s"] * x["seconds"] for x in later)
print("%.0f %s" % (images / sum(x["seconds"] for x in later), "-".join(str(x["threads"]) for x in e)))' "$1"
}

echo "round,mode,run,images_per_s,threads,load1_before" | tee "$rows"
for round in $(seq "$R"); do
    for mode in $MODES; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        run "$mode" "$tmp/solo.json"
        read -r ips thr < <(speed "$tmp/solo.json")
        echo "$round,$mode,solo,$ips,$thr,$load" | tee -a "$rows"
        run "$mode" "$tmp/a.json" & pa=$!
        run "$mode" "$tmp/b.json" & pb=$!
        wait "$pa" "$pb"
        for r in a b; do
            read -r ips thr < <(speed "$tmp/$r.json")
            echo "$round,$mode,$r,$ips,$thr,$load" | tee -a "$rows"
        done
    done
done

echo
python3 - "$rows" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for mode in dict.fromkeys(r["mode"] for r in rows):
    m = [r for r in rows if r["mode"] == mode]
    solo = statistics.median(float(r["images_per_s"]) for r in m if r["run"] == "solo")
    shares = {}
    for r in m:
        if r["run"] == "solo":
            continue
        s = [float(x["images_per_s"]) for x in m if x["run"] == "solo" and x["round"] == r["round"]][0]
        shares.setdefault(r["run"], []).append(float(r["images_per_s"]) / s)
    print("NNOPT_SHARE=%-3s solo %6.0f img/s; two at once, each run's share of its round's solo: "
          "a %.0f%%, b %.0f%% (medians of %d rounds)" % (
              mode, solo, 100 * statistics.median(shares["a"]), 100 * statistics.median(shares["b"]),
              len(shares["a"])))
EOF
