#!/usr/bin/env bash
# cli_interop.sh - PyTorch state_dicts saved by safetensors.torch.save_file
# work with `eval --weights` and `train --init` (batch norm's
# num_batches_tracked is I64 there), and nnopt writes the counters as I64 too.
# Uses the committed fixture tests/fixtures/st_torch_bn.safetensors (from
# scripts/make_st_fixtures.py); needs no PyTorch. tests/py_safetensors.sh does
# the same round trip through the safetensors package where it is installed.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1

TINY=$SRC/tests/fixtures/bn_tiny.nn
TORCH_ST=$SRC/tests/fixtures/st_torch_bn.safetensors

# header NAME FILE: prints the tensor NAME's header entry of a safetensors file
# as "dtype shape value" (stdlib only).
header() {
    python3 - "$1" "$2" <<'PY'
import json, struct, sys
name, path = sys.argv[1], sys.argv[2]
blob = open(path, "rb").read()
(n,) = struct.unpack("<Q", blob[:8])
e = json.loads(blob[8:8 + n])[name]
b, _ = e["data_offsets"]
raw = blob[8 + n + b:8 + n + b + 8]
value = struct.unpack("<q", raw)[0] if e["dtype"] == "I64" else struct.unpack("<f", raw[:4])[0]
print(e["dtype"], e["shape"], value)
PY
}

if "$NN" eval "$TINY" --weights "$TORCH_ST" --threads 2 --json > eval.json 2> err.txt &&
    python3 -c 'import json; a = json.load(open("eval.json"))["test_accuracy"]; assert 0 <= a <= 100' \
        2>> err.txt; then
    pass "eval --weights of a torch state_dict with I64 num_batches_tracked"
else
    fail "eval --weights of a torch state_dict with I64 num_batches_tracked" "$(head -c 300 err.txt)"
fi

# 2 steps of 64 images on top of the fixture's 3
if "$NN" train "$TINY" --init "$TORCH_ST" --epochs 1 --batch 64 --train-limit 128 --test-limit 100 \
    --threads 2 --quiet --save out.st > /dev/null 2> err.txt; then
    pass "train --init from a torch state_dict"
else
    fail "train --init from a torch state_dict" "$(head -c 300 err.txt)"
fi
check "the saved bn1.num_batches_tracked is an I64 scalar = 5" \
    test "$(header bn1.num_batches_tracked out.st 2>&1)" = "I64 [] 5"
check "the saved bn3.num_batches_tracked is an I64 scalar = 5" \
    test "$(header bn3.num_batches_tracked out.st 2>&1)" = "I64 [] 5"
check "parameters stay F32" test "$(header bn1.weight out.st 2>&1 | cut -d' ' -f1)" = F32
check "nnopt reads its own checkpoint back" \
    "$NN" eval "$TINY" --weights out.st --threads 2 --json

finish
