#!/bin/bash
# gpu_remote.sh - on the GPU machine, in a copy of the checkout that carries
# .gpu/ (scripts/gpu_bundle.sh): unpack the libraries, put the build and the
# data where the CTest files and gpu_check.sh look (the bundle's absolute
# paths are linked to this copy; needs root), find the machine's cuBLAS and
# cuDNN, and run scripts/gpu_check.sh --no-build. Its log folder goes to
# $OUT/gpu_check_logs.tgz when OUT is set.
set -u
cd "$(dirname "$0")/.."
R=$(pwd)
ROOT=$(cat .gpu/root) BUILD=$(cat .gpu/build_dir)
echo "gpu_remote: $R ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2))"
if [ "$(readlink -f "$ROOT")" != "$R" ]; then
    if [ -e "$ROOT" ]; then
        echo "gpu_remote: $ROOT (the bundle's checkout) exists and is not this one: run there" >&2
        exit 2
    fi
    mkdir -p "$(dirname "$ROOT")" && ln -s "$R" "$ROOT"
fi
if [ -e "$BUILD" ] && [ ! -L "$BUILD" ]; then
    echo "gpu_remote: $BUILD is a build of this machine's; the bundle would replace it" >&2
    exit 2
fi
rm -f "$BUILD" && ln -s .gpu/build "$BUILD"
DATA=/usr/share/datasets/fashion-mnist
if [ ! -e "$DATA/train-images-idx3-ubyte.gz" ] && [ ! -e "$DATA/train-images-idx3-ubyte" ]; then
    mkdir -p "$(dirname $DATA)" && rm -f $DATA && ln -s "$R/.gpu/data" $DATA
fi
mkdir -p /tmp/nnopt-libs && tar xJf .gpu/lib.tar.xz -C /tmp/nnopt-libs
CUBLAS=$(find /usr/local /opt /usr/lib -name 'libcublas.so.13*' 2>/dev/null | head -1)
CUDNN=$(find /usr/local /opt /usr/lib -name 'libcudnn.so.9*' 2>/dev/null | head -1)
echo "gpu_remote: cuBLAS ${CUBLAS:-not found}; cuDNN ${CUDNN:-not found (im2col + cuBLAS)}"
export LD_LIBRARY_PATH=/tmp/nnopt-libs/lib:$(dirname "${CUBLAS:-/x/x}"):$(dirname "${CUDNN:-/x/x}"):/usr/local/cuda/lib64:/tmp/nnopt-libs/lib/last
ldd "$BUILD/nnopt" | grep "not found"
BUILD=$BUILD STEP_TIMEOUT=${STEP_TIMEOUT:-150} scripts/gpu_check.sh --no-build "$@" >"$BUILD/gpu_check.out" 2>&1
rc=$?
L=$BUILD/gpu_check
grep -h -E "^FAIL|^convolutions" "$L/ctest.log" | head -40
for f in "$L"/*.err; do [ -s "$f" ] && { echo "== $f"; tail -3 "$f"; }; done
cp "$BUILD/gpu_check.out" "$L/"
[ -n "${OUT:-}" ] && tar czf "$OUT/gpu_check_logs.tgz" -C "$BUILD" gpu_check
cat "$BUILD/gpu_check.out"
exit $rc
