#!/usr/bin/env bash
# cli_pipeline.sh - pipeline-parallel training under mpirun (`train --stages`,
# docs/cluster.md "Pipeline and hybrid parallelism").
#
# usage: bash tests/cli_pipeline.sh <path-to-nnopt> <source-dir>
#
# Checks, on the seed CNN (no batch norm, no dropout) with SGD momentum, 20
# steps of batch 64:
# - 2 stages x 4 micro-batches, 1F1B and GPipe, give the losses and the
#   checkpoint of 1 process within 1e-5; both schedules give the same bytes;
# - 3 stages x 6 micro-batches (np 3) do too, and 2 micro-batches, and
#   gradient clipping (the global norm summed over the stages);
# - an uneven last batch (1283 images: 3 samples in 4 micro-batches, one
#   empty) still matches;
# - hybrid: np 4 --stages 2 (2 replicas of a 2-stage pipeline, batch 32 each)
#   gives the losses and checkpoint of np 2 data parallel at batch 32;
# - a pipeline checkpoint resumes as 1 process and a 1-process checkpoint
#   resumes as a pipeline, both ending like the straight run;
# - a residual model with batch norm (resnet_small) trains on 2 stages and
#   its ranks hold the same bytes after every epoch;
# - SIGTERM to one rank stops both at the same step with one checkpoint,
#   which resumes to the bytes of a straight run;
# - errors: --stages without mpirun, a world size not divisible by the
#   stages, --micro-batches without --stages, an unknown schedule,
#   --accumulate with --stages.
# Exits 77 (skipped) where mpirun is missing or nnopt was built without MPI.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1

command -v mpirun >/dev/null || { echo "SKIP mpirun not found (scripts/deps.sh installs it)"; exit 77; }
MPI=(mpirun --allow-run-as-root --oversubscribe)
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" # OpenMPI's own, as in cli_mpi.sh
FLAGS=(--data "$DATA" --test-limit 1000 --threads 1 --seed 1 --json)
# Winograd F(4x4, 3x3) (the default with AVX-512) rounds each of a tile's 16
# outputs differently, so on Fashion-MNIST's flat background the max-pool
# after the seed's conv2 sees near-ties that a 1e-8 difference in the weights
# (the all-reduce adds in another order) can flip, sending a gradient to the
# neighbouring pixel: after 20 steps one element 3.6e-4 apart (seed 1; seeds
# 2-4 within 3.7e-6; with avgpool in the max-pool's place, 8.3e-7). These
# checks are of the data-parallel machinery at 1e-5, so they run F(2x2, 3x3),
# which met them (1.3e-6).
export NNOPT_CONV=winograd2
"${MPI[@]}" -np 2 "$NN" train "$MODEL" "${FLAGS[@]}" --train-limit 64 --batch 32 --epochs 1 \
    --stages 2 >probe.out 2>probe.err
if grep -q "built without MPI" probe.err; then
    echo "SKIP this nnopt was built without MPI"
    exit 77
fi
. "$SRC/tests/lib_mpi.sh" # PY_CLOSE, PY_PARAMS, rank_pid

# run NAME NP ARGS...: `nnopt train` on NP ranks (1: no mpirun), --json to NAME.json
run() {
    local name=$1 np=$2; shift 2
    local pre=()
    [ "$np" -gt 1 ] && pre=("${MPI[@]}" -np "$np")
    timeout 300 "${pre[@]}" "$NN" train "$MODEL" "${FLAGS[@]}" "$@" >"$name.json" 2>"$name.err"
}

# ------------------------------------------------------------------ (a) 2 stages = 1 process
S=(--train-limit 1280 --batch 64 --epochs 1)
run one 1 "${S[@]}" --save one.st
run p1f1b 2 "${S[@]}" --stages 2 --micro-batches 4 --save p1f1b.st
check "2 stages, 1F1B, exit 0" grep -q "parameters bit-identical on all 2 ranks" p1f1b.err
check "rank 0 describes the pipeline (2 stages, 4 micro-batches, 1F1B)" \
    grep -q "pipeline over 2 MPI ranks: 2 stages (conv1\.\..* | .*\.\.softmax_ce1), 4 micro-batches, 1F1B" p1f1b.err
check "2 stages x 4 micro-batches, 1F1B: the losses of 1 process (20 steps, 1e-5)" \
    python3 -c "$PY_CLOSE" p1f1b.json one.json
check "2 stages, 1F1B: the checkpoint's tensors of 1 process (1e-5)" \
    python3 -c "$PY_PARAMS" p1f1b.st one.st
run pgpipe 2 "${S[@]}" --stages 2 --micro-batches 4 --pipeline gpipe --save pgpipe.st
check "2 stages x 4 micro-batches, GPipe: the losses of 1 process (1e-5)" \
    python3 -c "$PY_CLOSE" pgpipe.json one.json
check "GPipe and 1F1B: the same bytes (the same sums in the same order)" \
    python3 -c "$PY_PARAMS" pgpipe.st p1f1b.st same
run p3 3 "${S[@]}" --stages 3 --save p3.st
check "3 stages x 6 micro-batches (np 3): the losses and tensors of 1 process (1e-5)" \
    bash -c 'python3 -c "$1" p3.json one.json && python3 -c "$2" p3.st one.st' _ "$PY_CLOSE" "$PY_PARAMS"
run p2m 2 "${S[@]}" --stages 2 --micro-batches 2 --pipeline gpipe
check "2 stages x 2 micro-batches, GPipe: the losses of 1 process (1e-5)" \
    python3 -c "$PY_CLOSE" p2m.json one.json

run clip1 1 "${S[@]}" --clip-grad-norm 0.5
run clip2 2 "${S[@]}" --stages 2 --clip-grad-norm 0.5
check "--clip-grad-norm 0.5 on 2 stages (the norm summed over the stages): 1 process's losses" \
    python3 -c "$PY_CLOSE" clip2.json clip1.json
check "... and clipping changed the run (its losses differ from the unclipped one's)" \
    bash -c '! python3 -c "$1" clip1.json one.json 2>/dev/null' _ "$PY_CLOSE"

# ------------------------------------------------------------------ (b) an uneven last batch
run odd1 1 --train-limit 1283 --batch 64 --epochs 1
run odd2 2 --train-limit 1283 --batch 64 --epochs 1 --stages 2 --micro-batches 4
check "1283 images (last batch 3 in 4 micro-batches): 2 stages match 1 process" \
    python3 -c "$PY_CLOSE" odd2.json odd1.json

# ------------------------------------------------------------------ (c) hybrid
H=(--train-limit 1280 --batch 32 --epochs 1)
run dp2 2 "${H[@]}" --save dp2.st
run hy4 4 "${H[@]}" --stages 2 --save hy4.st
check "np 4 --stages 2 says: 2 data-parallel replicas, global batch 64" \
    grep -q "2 data-parallel replicas, global batch 64" hy4.err
check "hybrid np 4 --stages 2: the losses of np 2 data parallel (1e-5)" \
    python3 -c "$PY_CLOSE" hy4.json dp2.json
check "hybrid np 4 --stages 2: the checkpoint of np 2 (1e-5)" \
    python3 -c "$PY_PARAMS" hy4.st dp2.st
check "hybrid: the 4 ranks' parameters were bit-identical after every epoch" \
    grep -q "parameters bit-identical on all 4 ranks" hy4.err

# ------------------------------------------------------------------ (d) resume across layouts
R=(--train-limit 640 --batch 64)
run straight 1 "${R[@]}" --epochs 2 --save straight.st
run half1 1 "${R[@]}" --epochs 1 --save half1.st
run halfp 2 "${R[@]}" --epochs 1 --save halfp.st --stages 2
run rp1 1 "${R[@]}" --epochs 2 --resume halfp.st --save rp1.st
check "a 2-stage checkpoint resumes as 1 process and ends like the straight run (1e-5)" \
    python3 -c "$PY_PARAMS" rp1.st straight.st
run r1p 2 "${R[@]}" --epochs 2 --resume half1.st --save r1p.st --stages 2 --pipeline gpipe
check "a 1-process checkpoint resumes on 2 stages and ends like the straight run (1e-5)" \
    python3 -c "$PY_PARAMS" r1p.st straight.st

# ------------------------------------------------------------------ (e) residual + batch norm
MODEL=$SRC/models/resnet_small.nn run res 2 --train-limit 256 --batch 32 --epochs 1 --stages 2
check "resnet_small (skip connections, batch norm) trains on 2 stages, ranks the same bytes" \
    grep -q "parameters bit-identical on all 2 ranks" res.err

# ------------------------------------------------------------------ (f) a stop asked of one rank
# SIGTERM to rank 1 alone of a long 2-stage run: both ranks stop at the same
# step (they agree every 16 steps), write one checkpoint and exit; the
# checkpoint resumes to the bytes of a straight run.
on_exit() { [ -n "${KPID:-}" ] && kill -9 "$KPID" 2>/dev/null; }
"${MPI[@]}" -np 2 "$NN" train "$MODEL" "${FLAGS[@]}" --train-limit 1280 --batch 64 --epochs 1000 \
    --stages 2 --save stop.st >stop.json 2>stop.err &
KPID=$!
for _ in $(seq 1200); do [ -f stop.st ] && break; sleep 0.05; done
victim=$(rank_pid "$KPID" 1)
if [ -z "$victim" ]; then
    fail "found rank 1 of the running job" "$(head -c 300 stop.err)"
else
    kill -TERM "$victim"
    for _ in $(seq 300); do kill -0 "$KPID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$KPID" 2>/dev/null; then
        fail "SIGTERM to rank 1: the job ends within 30 s" "still running; $(tail -c 300 stop.err)"
        kill -9 "$KPID" 2>/dev/null
    fi
    wait "$KPID"
    check "SIGTERM to rank 1 alone: rank 0 stops too, saying why" \
        grep -q "stopped at step [0-9]* (epoch [0-9]*, batch [0-9]* of 20) because another rank was asked to stop; checkpoint written" stop.err
    check "... and rank 1 names the signal" grep -q "Terminated: stopped at step" stop.err
fi
KPID=
E=$(python3 -c '
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
m = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]
print(int(m["epoch"]) + 1)' stop.st 2>/dev/null)
if [ -z "$E" ]; then
    fail "the stopped run left a readable checkpoint" "$(ls -l stop.st 2>&1)"
else
    run sres 2 --train-limit 1280 --batch 64 --epochs "$E" --stages 2 --resume stop.st --save sres.st
    run sfull 2 --train-limit 1280 --batch 64 --epochs "$E" --stages 2 --save sfull.st
    check "the stopped run's checkpoint resumes to the straight run's bytes" \
        python3 -c "$PY_PARAMS" sres.st sfull.st same
fi

# ------------------------------------------------------------------ (g) errors
check_error "--stages without mpirun: one line naming the ranks needed" \
    "--stages 2 needs a multiple of 2 ranks" "$NN" train "$MODEL" "${FLAGS[@]}" --train-limit 64 --stages 2
run bad3 2 --train-limit 64 --stages 3
check "np 2 --stages 3 is refused naming the world size" \
    grep -q -- "--stages 3 needs a multiple of 3 ranks.*this run has 2" bad3.err
check_error "--micro-batches without --stages is refused" "need --stages 2 or more" \
    "$NN" train "$MODEL" "${FLAGS[@]}" --train-limit 64 --micro-batches 4
check_error "an unknown --pipeline schedule is refused" "expected 1f1b or gpipe" \
    "$NN" train "$MODEL" "${FLAGS[@]}" --train-limit 64 --stages 2 --pipeline zigzag
run badacc 2 --train-limit 128 --stages 2 --accumulate 2
check "--stages with --accumulate is refused" grep -q -- "--stages does not combine with --accumulate" badacc.err
run badm 2 --train-limit 128 --batch 4 --stages 2 --micro-batches 8
check "more micro-batches than samples in a batch is refused" grep -q "at most one per sample" badm.err

finish
