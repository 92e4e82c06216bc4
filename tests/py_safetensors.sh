#!/usr/bin/env bash
# py_safetensors.sh - the round trip through the real `safetensors` package
# (registered by tests/CMakeLists.txt, not a cli_*.sh, so that it can skip):
#   1. a batch-norm model's state_dict (tests/fixtures/bn_tiny.nn built by
#      scripts/nnopt_model.py, 2 training-mode batches: num_batches_tracked 2,
#      int64) saved by safetensors.torch.save_file starts `nnopt train --init`;
#   2. nnopt's checkpoint loads with safetensors.torch.load_file: every
#      num_batches_tracked int64 and 2 + the 16 steps nnopt took, the rest
#      float32, and load_state_dict(strict=True) into the same module takes it;
#   3. PyTorch (scripts/torch_eval_checkpoint.py) and `nnopt eval` agree on the
#      checkpoint's test accuracy within 0.05 points.
# Exits 77 (ctest's SKIP_RETURN_CODE) when no Python here has torch, numpy and
# safetensors: $SRC/.venv/bin/python, else /usr/bin/python3 (scripts/pydeps.py
# prints the commands that install them).
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1

PY=
for p in "$SRC/.venv/bin/python" /usr/bin/python3; do
    if [ -x "$p" ] && "$p" -c 'import numpy, torch, safetensors.torch' 2>/dev/null; then PY=$p; break; fi
done
if [ -z "$PY" ]; then
    echo "SKIP: no Python with numpy, torch and safetensors ($SRC/.venv/bin/python, /usr/bin/python3)"
    exit 77
fi
echo "python: $PY"
TINY=$SRC/tests/fixtures/bn_tiny.nn
export NN_SCRIPTS=$SRC/scripts NNOPT=$NN

check "save_file writes a torch BN state_dict" "$PY" - "$TINY" init.st <<'PY'
import os, sys
sys.path.insert(0, os.environ["NN_SCRIPTS"])
import torch
from safetensors.torch import save_file
from nnopt_model import NnoptModel
torch.manual_seed(1)
model = NnoptModel(sys.argv[1])
model.train()
with torch.no_grad():
    for _ in range(2):
        model(torch.randn(8, *model.input_shape))
state = model.state_dict()
assert state["bn1.num_batches_tracked"].dtype == torch.int64
save_file(state, sys.argv[2])
PY

# 16 steps, enough to move the accuracy off one class's 10%
if "$NN" train "$TINY" --init init.st --epochs 1 --batch 64 --lr 0.1 --train-limit 1024 \
    --test-limit 100 --threads 2 --quiet --save out.st > /dev/null 2> err.txt; then
    pass "nnopt train --init takes it and saves"
else
    fail "nnopt train --init takes it and saves" "$(head -c 300 err.txt)"
fi

check "load_file reads nnopt's checkpoint: int64 counters = 18, float32 rest, strict load" \
    "$PY" - "$TINY" out.st <<'PY'
import os, sys
sys.path.insert(0, os.environ["NN_SCRIPTS"])
import torch
from safetensors.torch import load_file
from nnopt_model import NnoptModel
state = {k: v for k, v in load_file(sys.argv[2]).items() if not k.startswith("optimizer.")}
counters = {k: v for k, v in state.items() if k.endswith(".num_batches_tracked")}
assert len(counters) == 3, sorted(counters)
for k, v in counters.items():
    assert v.dtype == torch.int64 and v.dim() == 0 and int(v) == 18, (k, v)
for k, v in state.items():
    assert k in counters or v.dtype == torch.float32, (k, v.dtype)
model = NnoptModel(sys.argv[1])
model.load_state_dict(state, strict=True)
assert int(model.bn2.num_batches_tracked) == 18
PY

nn_acc=$("$NN" eval "$TINY" --weights out.st --threads 2 --json 2>&1 |
    python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["test_accuracy"])' 2>&1)
pt_acc=$("$PY" "$SRC/scripts/torch_eval_checkpoint.py" out.st --model "$TINY" --data "$DATA" \
    --threads 2 --json 2>&1 | python3 -c 'import json, sys; print(json.loads(sys.stdin.read().splitlines()[-1])["test_accuracy"])' 2>&1)
check "PyTorch and nnopt agree on the test accuracy (nnopt $nn_acc, PyTorch $pt_acc)" \
    python3 -c 'import sys; a, b = map(float, sys.argv[1:]); assert abs(a - b) <= 0.05 + 1e-9' \
    "$nn_acc" "$pt_acc"

finish
