#!/usr/bin/env bash
# cli_mpi.sh - data-parallel training under mpirun (docs/usage.md, "Data-parallel
# training with MPI").
#
# usage: bash tests/cli_mpi.sh <path-to-nnopt> <source-dir>
#
# Checks, on the seed CNN (no batch norm, no dropout) with SGD momentum:
# 2 ranks x batch 32 for 20 steps give the same train and test loss as
# 1 process x batch 64 within 1e-5 relative, and a checkpoint whose parameters
# agree within 1e-5 relative (momentum within 1e-5 of its tensor's largest); the ranks' parameters are the same bytes after
# every epoch (the trainer checks it collectively and fails otherwise; rank 0
# says so at the end); rank 0 alone prints (one JSON line per epoch); a last
# global batch split unevenly (1283 images: 1 and 2) still matches; a 2-rank
# checkpoint resumes as 1 process x batch 64 and continues like the 1-process
# run, and as 1 process x batch 32 is refused naming the global batch.
# Exits 77 (skipped) where mpirun is missing or nnopt was built without MPI.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1

command -v mpirun >/dev/null || { echo "SKIP mpirun not found (scripts/deps.sh installs it)"; exit 77; }
MPI=(mpirun --allow-run-as-root --oversubscribe -np 2)
# Under AddressSanitizer, LeakSanitizer reports what OpenMPI (and the
# components it dlopens, whose frames it cannot name) keeps until exit; the
# ranks run without leak checks. The data-parallel code's own allocations are
# leak-checked in test_trainer, whose two ranks are two threads.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
FLAGS=(--data "$DATA" --test-limit 1000 --threads 1 --seed 1 --json)
"${MPI[@]}" "$NN" train "$MODEL" "${FLAGS[@]}" --train-limit 64 --batch 32 --epochs 1 \
    >probe.out 2>probe.err
if grep -q "built without MPI" probe.err; then
    echo "SKIP this nnopt was built without MPI"
    exit 77
fi

# rel_close A.json B.json: every epoch's train and test loss within 1e-5 relative
PY_CLOSE='
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) and a, "%d vs %d epochs" % (len(a), len(b))
for x, y in zip(a, b):
    assert x["step"] == y["step"], "steps %s vs %s" % (x["step"], y["step"])
    for k in ("train_loss", "test_loss"):
        d = abs(x[k] - y[k]) / abs(y[k])
        assert d <= 1e-5, "epoch %s %s: %r vs %r (%.2g relative)" % (x["epoch"], k, x[k], y[k], d)
'
# the parameters of two safetensors checkpoints (optimizer state and all)
PY_PARAMS='
import json, struct, sys
def tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for name, t in head.items():
        if name == "__metadata__": continue
        lo, hi = t["data_offsets"]
        out[name] = struct.unpack("<%df" % ((hi - lo) // 4), raw[8 + n + lo:8 + n + hi])
    return out
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
assert a.keys() == b.keys(), "tensor names differ"
# parameters element by element; optimizer state (momentum, small values
# that are differences of gradients) against the largest of its tensor
worst = 0.0
for k in a:
    big = max(abs(y) for y in b[k]) or 1.0
    for x, y in zip(a[k], b[k]):
        scale = big if k.startswith("optimizer.") else max(abs(y), 1e-3)
        worst = max(worst, abs(x - y) / scale)
assert worst <= 1e-5, "largest relative difference %.3g" % worst
print("largest relative difference %.3g" % worst)
'

# ------------------------------------------------------------------ (a) 2 x 32 = 1 x 64
timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --train-limit 1280 --batch 64 --epochs 1 \
    --save one.st >one.json 2>one.err || fail "1 process trains" "$(head -c 300 one.err)"
timeout 300 "${MPI[@]}" "$NN" train "$MODEL" "${FLAGS[@]}" --train-limit 1280 --batch 32 \
    --epochs 1 --save two.st >two.json 2>two.err
rc=$?
if [ $rc -eq 0 ]; then pass "mpirun -np 2 train exits 0"; else fail "mpirun -np 2 train exits 0" "exit $rc: $(head -c 300 two.err)"; fi
check "2 ranks x batch 32: the losses of 1 process x batch 64 (20 steps, 1e-5)" \
    python3 -c "$PY_CLOSE" two.json one.json
check "2 ranks x batch 32: the checkpoint's tensors of 1 process x batch 64 (1e-5)" \
    python3 -c "$PY_PARAMS" two.st one.st
check "rank 0 alone prints: one JSON line" test "$(wc -l <two.json)" -eq 1
check "rank 0 says it is data parallel over 2 ranks, global batch 64" \
    test "$(grep -c 'data-parallel over 2 MPI ranks, global batch 64' two.err)" -eq 1
check "the ranks' parameters were bit-identical after every epoch" \
    test "$(grep -c 'parameters bit-identical on all 2 ranks' two.err)" -eq 1

# ------------------------------------------------------------------ (b) an uneven last batch
timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --train-limit 1283 --batch 64 --epochs 1 \
    >odd1.json 2>odd1.err
timeout 300 "${MPI[@]}" "$NN" train "$MODEL" "${FLAGS[@]}" --train-limit 1283 --batch 32 \
    --epochs 1 >odd2.json 2>odd2.err
check "1283 images (last global batch 3, split 1 + 2): 2 ranks match 1 process" \
    python3 -c "$PY_CLOSE" odd2.json odd1.json

# ------------------------------------------------------------------ (c) resume at another world size
timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --train-limit 1280 --batch 64 --epochs 2 \
    >full.json 2>full.err
timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --train-limit 1280 --batch 64 --epochs 2 \
    --resume two.st >res.json 2>res.err
tail -n 1 full.json >full2.json
check "a 2-rank checkpoint resumes as 1 process x batch 64 and continues like it" \
    python3 -c "$PY_CLOSE" res.json full2.json
timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --train-limit 1280 --batch 32 --epochs 2 \
    --resume two.st >bad.json 2>bad.err
check "resuming it as 1 process x batch 32 is refused, naming batch 64" \
    grep -q "checkpoint was trained with batch 64; this run uses batch 32" bad.err
finish
