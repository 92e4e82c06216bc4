#!/usr/bin/env bash
# cli_tune.sh - `nnopt tune`: measures every setting, stores the fastest fp32
# one per batch size in the per-machine cache (NNOPT_TUNE_CACHE), replaces an
# entry when tuned again, and `nnopt train` uses the cached threads and
# kernels only when no --threads is given and the cache is on; bad flags give
# one-line errors.
#
# usage: bash tests/cli_tune.sh <path-to-nnopt> <source-dir>
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1
export NNOPT_TUNE_CACHE=$T/cache/nnopt/tune.tsv

"$NN" tune "$MODEL" --batches 16,32 --seconds 0.1 --json >tune.json 2>err.txt
rc=$?
[ $rc -eq 0 ] && pass "tune: exit 0" || fail "tune: exit 0" "exit $rc: $(head -c 300 err.txt)"
python3 - tune.json <<'EOF' && pass "tune --json: every setting measured, the best is the fastest fp32 one" || fail "tune --json"
import json, sys
d = json.load(open(sys.argv[1]))
assert [b["batch"] for b in d["batches"]] == [16, 32], d
for b in d["batches"]:
    fp32 = [s for s in b["settings"] if s["precision"] == "fp32"]
    assert fp32 and all(s["images_per_s"] > 0 for s in b["settings"])
    best = max(fp32, key=lambda s: s["images_per_s"])
    assert b["best"]["threads"] == best["threads"] and b["best"]["conv"] == best["conv"], b
    assert b["best"]["prefetch"] == best["prefetch"], b
    # the fastest setting of the default prefetch (auto: picked per layer),
    # measured once more with it on and once with it off for every layer
    auto = max((s for s in fp32 if s["prefetch"] == "auto"), key=lambda s: s["images_per_s"])
    forced = sorted(s["prefetch"] for s in fp32 if s["prefetch"] != "auto")
    assert forced == ["off", "on"], b
    assert all((s["threads"], s["conv"]) == (auto["threads"], auto["conv"])
               for s in fp32 if s["prefetch"] != "auto"), b
EOF
n=$(wc -l <"$NNOPT_TUNE_CACHE" 2>/dev/null || echo 0)
[ "$n" = 2 ] && pass "tune: one cache line per batch size" || fail "tune: cache lines" "$n"
awk -F'\t' 'NF != 9 || ($9 != "auto" && $9 != "on" && $9 != "off") {bad = 1} END {exit bad}' "$NNOPT_TUNE_CACHE" &&
    pass "tune: each cache line records the prefetch" || fail "tune: prefetch field" "$(cat "$NNOPT_TUNE_CACHE")"
NNOPT_PREFETCH=off "$NN" tune "$MODEL" --batches 8 --seconds 0.05 --json --no-save >pf.json 2>err.txt
python3 -c '
import json, sys
b = json.load(open(sys.argv[1]))["batches"][0]
assert b["settings"] and all(s["prefetch"] == "off" for s in b["settings"]), b
assert b["best"]["prefetch"] == "off", b
' pf.json && pass "tune: NNOPT_PREFETCH=off is kept, not tuned" || fail "tune: NNOPT_PREFETCH=off" "$(head -c 300 pf.json err.txt)"
"$NN" tune "$MODEL" --batches 32 --seconds 0.1 >/dev/null 2>&1
n=$(wc -l <"$NNOPT_TUNE_CACHE"); b32=$(grep -c "	32	" "$NNOPT_TUNE_CACHE")
[ "$n" = 2 ] && [ "$b32" = 1 ] && pass "tune again: the entry is replaced, not added" || fail "tune again" "$n lines, $b32 for batch 32"

# train uses the cache: pin the entry for batch 32 to 1 thread, direct, no prefetch
sed -i 's/^\(.*\)\t32\t[0-9]*\t[a-z]*\t/\1\t32\t1\tdirect\t/; s/\t[a-z]*$/\toff/' "$NNOPT_TUNE_CACHE"
TR=(--data "$DATA" --epochs 1 --train-limit 256 --test-limit 64 --batch 32)
"$NN" train "$MODEL" "${TR[@]}" >out.txt 2>err.txt
grep -q "tuned for this machine, model and batch (nnopt tune): 1 thread, direct convolutions, prefetch off" err.txt &&
    grep -q ", 1 threads," out.txt && pass "train: no --threads takes the tuned settings" ||
    fail "train: tuned settings" "$(cat err.txt out.txt | head -c 300)"
"$NN" train "$MODEL" "${TR[@]}" --threads 2 >out.txt 2>err.txt
! grep -q tuned err.txt && grep -q ", 2 threads," out.txt && pass "train: --threads wins over the cache" ||
    fail "train: --threads wins" "$(cat err.txt out.txt | head -c 300)"
NNOPT_TUNE_CACHE=off "$NN" train "$MODEL" "${TR[@]}" >out.txt 2>err.txt
! grep -q tuned err.txt && pass "train: NNOPT_TUNE_CACHE=off ignores the cache" || fail "train: cache off"
"$NN" train "$MODEL" "${TR[@]}" --batch 48 >out.txt 2>err.txt
! grep -q tuned err.txt && pass "train: an untuned batch size keeps the defaults" || fail "train: untuned batch"
# another model (the same layers written with parameters) hashes its expanded text
"$NN" info "$SRC/models/search_cnn.nn" --expand | grep -v '^#' >flat.nn
"$NN" train flat.nn "${TR[@]}" >out.txt 2>err.txt
! grep -q tuned err.txt && pass "train: another model's entry does not apply" || fail "train: another model"

check_error "error: bad --batches" "--batches" "$NN" tune "$MODEL" --batches 0,x
check_error "error: a missing model" "nosuch.nn" "$NN" tune nosuch.nn
mkdir ro && chmod 500 ro
if [ "$(id -u)" != 0 ]; then
    NNOPT_TUNE_CACHE=$T/ro/sub/tune.tsv check_error "error: an unwritable cache" "ro/sub" "$NN" tune "$MODEL" --batches 8 --seconds 0.05
fi
finish
