#!/usr/bin/env bash
# cli_bench.sh - `nnopt bench --json` says which precision it timed, and with
# --no-peak the figures it did not measure are null, not 0.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1

PEAKS='("sgemm_peak_gflops", "percent_of_peak", "fma_peak_gflops", "percent_of_fma_peak",
        "percent_of_fma_peak_min", "percent_of_fma_peak_max")'
SHORT=(--batch 4 --steps 1 --repeats 1 --warmup 0 --threads 2)

timeout 120 "$NN" bench "$MODEL" "${SHORT[@]}" --no-peak --json >np.json 2>np.err
check "bench --json --no-peak: precision fp32, every peak figure null" python3 -c '
import json
d = json.load(open("np.json"))
assert d["precision"] == "fp32", d
for k in '"$PEAKS"':
    assert k in d and d[k] is None, (k, d.get(k, "missing"))
assert d["images_per_s"] > 0 and d["gflops"] > 0 and d["layers"], d
'

timeout 120 "$NN" bench "$MODEL" "${SHORT[@]}" --json >p.json 2>p.err
check "bench --json: the peak figures are measured numbers" python3 -c '
import json
d = json.load(open("p.json"))
assert d["precision"] == "fp32", d
for k in '"$PEAKS"':
    assert isinstance(d[k], float) and d[k] > 0, (k, d[k])
'

timeout 120 "$NN" bench "$MODEL" "${SHORT[@]}" --precision bf16 --no-peak --json >bf.json 2>bf.err
check "bench --precision bf16 --json: precision bf16" python3 -c '
import json
assert json.load(open("bf.json"))["precision"] == "bf16"
'

timeout 120 "$NN" bench "$MODEL" "${SHORT[@]}" --no-peak >t.txt 2>t.err
check "bench text output names the precision" grep -q "^nnopt bench .*: fp32, batch 4" t.txt

# --data: the training set's first batches, cycled, as PyTorch's side gets them
timeout 120 "$NN" bench "$MODEL" "${SHORT[@]}" --no-peak --json --data "$DATA" >d.json 2>d.err
check "bench --data: real batches, 32 of them, named in the JSON" python3 -c '
import json, sys
d = json.load(open("d.json"))
assert d["data"] == sys.argv[1] and d["batches"] == 32 and d["images_per_s"] > 0, d
' "$DATA"
check "bench without --data: one random batch, data null" python3 -c '
import json
d = json.load(open("np.json"))
assert d["data"] is None and d["batches"] == 1, d
'
# the per-layer prefetch: picked by the max-pool layers after their trial
# steps (the warm-up and 3 on, 3 off), null for the others; forced by
# NNOPT_PREFETCH; named under the text table
PF=(--batch 4 --steps 1 --repeats 1 --warmup 7 --threads 2 --no-peak)
timeout 120 "$NN" bench "$SRC/models/seed_cnn.nn" "${PF[@]}" --json >pf.json 2>pf.err
check "bench --json: each max-pool layer's prefetch picked, forward and backward; none elsewhere" \
    python3 -c '
import json
d = json.load(open("pf.json"))
pools = [l for l in d["layers"] if l["type"] == "maxpool"]
assert pools and all(isinstance(p, bool) for l in pools for p in l["prefetch"]), d["layers"]
assert all(l["prefetch"] == [None, None] for l in d["layers"] if l["type"] != "maxpool"), d
'
NNOPT_PREFETCH=off timeout 120 "$NN" bench "$SRC/models/seed_cnn.nn" "${PF[@]}" >pft.txt 2>pft.err
check "bench with NNOPT_PREFETCH=off: the note under the table says off for every pool" \
    grep -q "^(software prefetch of the next plane, forward/backward: maxpool1 off/off, maxpool2 off/off)" pft.txt

mkdir -p nodata
timeout 60 "$NN" bench "$MODEL" "${SHORT[@]}" --data nodata >nd.out 2>nd.err
rc=$?
if [ $rc -eq 1 ] && [ "$(wc -l <nd.err)" -eq 1 ] && grep -q "nodata/train-images-idx3-ubyte" nd.err; then
    pass "bench --data on a directory without the training set: exit 1, one line naming the file"
else
    fail "bench --data on a directory without the training set: exit 1, one line naming the file" \
        "exit $rc: $(head -c 300 nd.err)"
fi

finish
