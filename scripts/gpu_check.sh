#!/bin/bash
# gpu_check.sh - every check of the CUDA backend in one go, on a machine with
# an NVIDIA GPU (issue 19): configures and builds a release build with
# NN_CUDA=ON, runs every GPU test (ctest -R cuda: each op and optimizer
# against the CPU, the seed CNN's SGD losses, the parity, model and trainer
# tests on the GPU), resumes a checkpoint across devices both ways, measures
# the GPU's limits (FMA peak, cuBLAS fp32 and bf16 GEMMs) and times `nnopt
# bench` on it (seed CNN, ResNet-20, conv_heavy, mobilenet_small, wide_cnn;
# fp32 and bf16) beside PyTorch on the same GPU and batches where python3
# has a CUDA torch, trains the seed CNN for 5 epochs on the GPU (process
# start to final test accuracy) and on the CPU for the accuracy to compare,
# and prints a summary table with the issue's goals (MET / MISS). About 3
# minutes on one H200 with 16 cores.
#
#   scripts/gpu_check.sh [--quick] [--no-build] [--tests-only]
#       --quick:    no CPU training run
#       --tests-only: the GPU tests (ctest) and nothing after them
#       --no-build: use the nnopt already built in $BUILD (configured with
#                   NN_CUDA=ON elsewhere, e.g. on a machine with the -dev
#                   packages, and copied here with its shared libraries:
#                   scripts/gpu_bundle.sh packs it, scripts/gpu_remote.sh
#                   unpacks it on the GPU machine and runs this)
#
# Environment: BUILD (default build-gpu), DATA (Fashion-MNIST's directory,
# default /usr/share/datasets/fashion-mnist), JOBS (default: all cores),
# CUDA_ARCH (default 90: H100/H200). Exits 1 at once, saying so, where there
# is no GPU; else 0 only if every check passed.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build-gpu}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
JOBS=${JOBS:-$(nproc)}
CUDA_ARCH=${CUDA_ARCH:-90}
QUICK=0
BUILD_IT=1
TESTS_ONLY=0
for a in "$@"; do
    case $a in
    --quick) QUICK=1 ;;
    --no-build) BUILD_IT=0 ;;
    --tests-only) TESTS_ONLY=1 ;;
    *) echo "gpu_check: unknown option '$a' (--quick, --no-build, --tests-only)" >&2; exit 2 ;;
    esac
done
# every step has a time limit: a hang costs its step, not the whole check
T=${STEP_TIMEOUT:-240}
START=$(date +%s)

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi -L fails): nothing to check" >&2
    exit 1
fi
GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
echo "gpu_check: $GPU"

ROWS=()   # "check|result|figure"
FAILED=0
# PASS/FAIL: checks (any FAIL makes the exit status 1); MET/MISS: the
# issue's speed goals, reported; INFO: figures; SKIP: not run here
row() { ROWS+=("$1|$2|$3"); case $2 in PASS|INFO|SKIP|MET|MISS) ;; *) FAILED=1 ;; esac; }
elapsed() { echo $(( $(date +%s) - START )); }
LOGDIR=$BUILD/gpu_check
summary() {
    echo
    echo "gpu_check summary ($GPU; $(elapsed) s; logs in $LOGDIR)"
    printf '%-52s %-6s %s\n' check result figure
    printf '%-52s %-6s %s\n' ----- ------ ------
    for r in "${ROWS[@]}"; do
        IFS='|' read -r a b c <<<"$r"
        printf '%-52s %-6s %s\n' "$a" "$b" "$c"
    done
}

# 1. build
mkdir -p "$BUILD"
t0=$(date +%s)
if [ $BUILD_IT = 0 ]; then
    if [ -x "$BUILD/nnopt" ]; then
        row "build (prebuilt $BUILD/nnopt)" PASS "not rebuilt"
    else
        row "build (prebuilt $BUILD/nnopt)" FAIL "--no-build but $BUILD/nnopt is missing"
        summary
        exit 1
    fi
elif cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DNN_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" >"$BUILD/configure.log" 2>&1 &&
    cmake --build "$BUILD" -j"$JOBS" >"$BUILD/build.log" 2>&1; then
    row "build (release, NN_CUDA=ON, sm_$CUDA_ARCH)" PASS "$(( $(date +%s) - t0 )) s"
else
    tail -30 "$BUILD/configure.log" "$BUILD/build.log" >&2
    row "build (release, NN_CUDA=ON, sm_$CUDA_ARCH)" FAIL "see $BUILD/build.log"
    summary
    exit 1
fi
mkdir -p "$LOGDIR"
NNOPT=$ROOT/$BUILD/nnopt

# 2. every GPU test; a skip here means the GPU was not usable: a failure
(cd "$BUILD" && ctest -R cuda --output-on-failure --timeout "$T") >"$LOGDIR/ctest.log" 2>&1
while read -r name status secs; do
    case $status in
    Passed) row "ctest $name" PASS "$secs s" ;;
    *) row "ctest $name" FAIL "$status (see $LOGDIR/ctest.log)" ;;
    esac
done < <(sed -nE 's/^ *[0-9]+\/[0-9]+ Test +#[0-9]+: ([^ ]+) \.+ *\**([A-Za-z]+).* ([0-9.]+) sec$/\1 \2 \3/p' \
             "$LOGDIR/ctest.log")
grep -E "seed CNN step|FAIL" "$LOGDIR/ctest.log" | head -20
if [ $TESTS_ONLY = 1 ]; then
    summary
    exit $FAILED
fi

have_data=0
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || [ -f "$DATA/train-images-idx3-ubyte" ] && have_data=1

# 3. checkpoints across devices: 1 epoch on one device, resumed for a 2nd on the other
if [ $have_data = 1 ]; then
    small=(--data "$DATA" --train-limit 4096 --test-limit 1000 --quiet)
    for pair in "cuda cpu" "cpu cuda"; do
        set -- $pair
        st=$LOGDIR/resume_$1_$2.st
        if timeout "$T" "$NNOPT" train models/seed_cnn.nn "${small[@]}" --device "$1" --epochs 1 --save "$st" \
                >"$LOGDIR/resume_$1.log" 2>&1 &&
            timeout "$T" "$NNOPT" train models/seed_cnn.nn "${small[@]}" --device "$2" --epochs 2 \
                --resume "$st" >"$LOGDIR/resume_$1_$2.log" 2>&1; then
            row "checkpoint from $1 resumed on $2" PASS "$(tail -1 "$LOGDIR/resume_$1_$2.log" | cut -c1-60)"
        else
            row "checkpoint from $1 resumed on $2" FAIL "see $LOGDIR/resume_$1_$2.log"
        fi
    done
else
    row "checkpoints across devices" SKIP "no data in $DATA"
fi

# 4. benchmarks on the GPU (the bench command trains through the backend),
# on the first 32 real batches cycled where the data is there, against the
# GPU's limits (measured by the first bench) and PyTorch on the same GPU
jget() { # file key -> the first number under "key" in a JSON file
    grep -o "\"$2\": *[0-9.]*" "$1" | head -1 | cut -d: -f2 | tr -d ' '
}
bench_data=()
[ $have_data = 1 ] && bench_data=(--data "$DATA")
bench() { # name model batch precision -> sets IPS
    local out=$LOGDIR/bench_$1_$3_$4.json
    IPS=
    if timeout "$T" "$NNOPT" bench "$2" --device cuda --batch "$3" --precision "$4" \
            --repeats 3 "${bench_data[@]}" --no-peak --json \
            >"$out" 2>"$LOGDIR/bench_$1_$3_$4.err"; then
        IPS=$(jget "$out" images_per_s)
        row "bench $1 (batch $3, $4)" INFO "${IPS:-?} images/s, $(jget "$out" ms_per_step) ms/step"
    else
        row "bench $1 (batch $3, $4)" FAIL "see $LOGDIR/bench_$1_$3_$4.err"
    fi
}
target() { # what value goal
    if awk -v v="${2:-0}" -v g="$3" 'BEGIN { exit !(v >= g) }'; then row "$1" MET "$2 (>= $3)"
    else row "$1" MISS "${2:-?} (goal $3)"; fi
}
# the GPU's limits: FMA peak, cuBLAS fp32 and bf16 GEMMs
peak_out=$LOGDIR/peaks.json
if timeout "$T" "$NNOPT" bench models/seed_cnn.nn --device cuda --steps 5 --repeats 1 --json \
        >"$peak_out" 2>"$LOGDIR/peaks.err"; then
    row "GPU limits (GFLOP/s)" INFO "fp32 FMA $(jget "$peak_out" fma_peak_gflops), sgemm $(jget "$peak_out" sgemm_peak_gflops), bf16 GEMM $(jget "$peak_out" bf16_gemm_peak_gflops)"
else
    row "GPU limits" FAIL "see $LOGDIR/peaks.err"
fi
BF16_PEAK=$(jget "$peak_out" bf16_gemm_peak_gflops)
bench seed_cnn models/seed_cnn.nn 64 fp32;   target "seed CNN batch 64 fp32 images/s" "$IPS" 100000
bench resnet20 models/resnet20.nn 128 fp32
bench resnet20 models/resnet20.nn 128 bf16;  target "ResNet-20 batch 128 bf16 images/s" "$IPS" 20000
bench conv_heavy models/conv_heavy.nn 64 fp32
bench conv_heavy models/conv_heavy.nn 64 bf16
bench mobilenet_small models/mobilenet_small.nn 64 fp32
bench wide_cnn models/wide_cnn.nn 64 fp32
# each convolution's path (cuDNN or im2col + cuBLAS) is timed at planning and
# the faster kept; the same benches with every layer on one path, to compare
for m in seed_cnn:64 resnet20:128 wide_cnn:64; do
    for path in cudnn im2col; do
        name=${m%%:*} b=${m##*:}
        out=$LOGDIR/bench_${name}_${b}_fp32_$path.json
        if NNOPT_CUDA_CONV=$path timeout "$T" "$NNOPT" bench "models/$name.nn" --device cuda \
                --batch "$b" --repeats 3 "${bench_data[@]}" --no-peak --json >"$out" 2>/dev/null; then
            row "bench $name (batch $b, fp32), every conv $path" INFO "$(jget "$out" images_per_s) images/s"
        else
            row "bench $name (batch $b, fp32), every conv $path" FAIL "NNOPT_CUDA_CONV=$path"
        fi
    done
done
# conv_heavy's convolution layers (their FLOPs over their forward + backward
# time, casts to and from bf16 included) against the bf16 GEMM peak
f=$LOGDIR/bench_conv_heavy_64_bf16.json
if [ -s "$f" ] && [ -n "$BF16_PEAK" ] && command -v python3 >/dev/null; then
    share=$(python3 - "$f" "$BF16_PEAK" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); peak = float(sys.argv[2])
fl = t = 0.0
for l in d["layers"]:
    if l["type"] == "conv2d":
        fl += l["forward_gflops"] * l["forward_ms"] + l["backward_gflops"] * l["backward_ms"]
        t += l["forward_ms"] + l["backward_ms"]
print("%.1f" % (100.0 * fl / t / peak if t > 0 else 0.0))
PY
)
    target "conv_heavy bf16 convolutions, % of bf16 GEMM peak" "$share" 40
fi
# PyTorch on the same GPU and batches (eager; bf16 = torch.autocast)
if command -v python3 >/dev/null && python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    torch_bench() { # name model batch amp(fp32|bf16) nnopt-images/s
        local out=$LOGDIR/torch_$1_$3_$4.json amp=()
        [ "$4" = bf16 ] && amp=(--amp bf16)
        if NNOPT=$NNOPT timeout "$T" python3 bench/torch_model_bench.py "$2" --device cuda --batch "$3" \
                --repeats 3 "${bench_data[@]}" "${amp[@]}" >"$out" 2>"$LOGDIR/torch_$1_$3_$4.err"; then
            local t=$(jget "$out" images_per_s)
            row "PyTorch $(python3 -c 'import torch; print(torch.__version__)') $1 (batch $3, $4)" INFO \
                "$t images/s; nnopt/PyTorch $(awk -v a="${5:-0}" -v b="${t:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }')x"
        else
            row "PyTorch $1 (batch $3, $4)" INFO "failed: see $LOGDIR/torch_$1_$3_$4.err"
        fi
    }
    torch_bench seed_cnn models/seed_cnn.nn 64 fp32 "$(jget $LOGDIR/bench_seed_cnn_64_fp32.json images_per_s)"
    torch_bench resnet20 models/resnet20.nn 128 fp32 "$(jget $LOGDIR/bench_resnet20_128_fp32.json images_per_s)"
    torch_bench resnet20 models/resnet20.nn 128 bf16 "$(jget $LOGDIR/bench_resnet20_128_bf16.json images_per_s)"
    torch_bench conv_heavy models/conv_heavy.nn 64 bf16 "$(jget $LOGDIR/bench_conv_heavy_64_bf16.json images_per_s)"
else
    row "PyTorch comparison" SKIP "no python3 with a CUDA torch"
fi

# 5. the seed CNN: 5 epochs on the GPU, process start to final accuracy
train_acc() { # device log -> "accuracy seconds"
    local t0=$(date +%s.%N)
    timeout "$T" "$NNOPT" train models/seed_cnn.nn --data "$DATA" --device "$1" --epochs 5 --json >"$2" 2>&1 || return 1
    local t1=$(date +%s.%N)
    local acc=$(grep -o '"test_accuracy":[0-9.]*' "$2" | tail -1 | cut -d: -f2)
    echo "$acc $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
}
if [ $have_data = 1 ]; then
    if r=$(train_acc cuda "$LOGDIR/train_cuda.log"); then
        read -r gacc gsec <<<"$r"
        row "train seed CNN 5 epochs on cuda" PASS "test accuracy $gacc, ${gsec} s process start to end"
        epochs=$(grep -o '"seconds": *[0-9.]*\|"eval_seconds": *[0-9.]*' "$LOGDIR/train_cuda.log" |
                 awk -F: '{ s += $2 } END { printf "%.2f", s }')
        row "  of which epochs (train + test)" INFO "$epochs s; the rest: start, data, planning"
        if awk -v s="$gsec" 'BEGIN { exit !(s <= 5.0) }'; then row "5 epochs in <= 5 s" MET "${gsec} s"
        else row "5 epochs in <= 5 s" MISS "${gsec} s"; fi
        if [ $QUICK = 0 ]; then
            if r=$(train_acc cpu "$LOGDIR/train_cpu.log"); then
                read -r cacc csec <<<"$r"
                ok=$(awk -v g="$gacc" -v c="$cacc" 'BEGIN { d = g - c; if (d < 0) d = -d; print (d <= 0.3) }')
                row "seed CNN accuracy: cuda vs cpu (+-0.3 pt)" "$([ "$ok" = 1 ] && echo PASS || echo FAIL)" \
                    "cuda $gacc, cpu $cacc (${csec} s on the CPU)"
            else
                row "train seed CNN 5 epochs on cpu" FAIL "see $LOGDIR/train_cpu.log"
            fi
        fi
    else
        row "train seed CNN 5 epochs on cuda" FAIL "see $LOGDIR/train_cuda.log"
    fi
else
    row "train seed CNN 5 epochs" SKIP "no data in $DATA"
fi

summary
exit $FAILED
