#!/bin/bash
# gpu_bundle.sh - pack a CUDA build made here for a GPU machine that has the
# CUDA toolkit but not nnopt's -dev packages (no OpenBLAS, cJSON, inih, ...),
# such as a lent one that cannot install anything: the build's nnopt, peak,
# the GPU tests and their CTest files, the non-CUDA shared libraries they
# load (xz), and Fashion-MNIST, into .gpu/ (keep it out of git: add /.gpu/ to
# .git/info/exclude). There, scripts/gpu_remote.sh runs gpu_check.sh on it.
#
#   cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DNN_CUDA=ON && cmake --build build-gpu -j
#   scripts/gpu_bundle.sh            # then copy the checkout with .gpu/ over
#
# Environment: BUILD (default build-gpu), DATA (default
# /usr/share/datasets/fashion-mnist). cuBLAS and cuDNN are not packed (too
# large): the GPU machine's own are used.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
[ -x "$BUILD/nnopt" ] || { echo "gpu_bundle: $BUILD/nnopt is missing: build it first" >&2; exit 1; }
grep -q "NN_HAVE_CUDA" "$BUILD/CMakeFiles/nnopt_lib.dir/flags.make" 2>/dev/null ||
    { echo "gpu_bundle: $BUILD was configured without CUDA (-DNN_CUDA=ON)" >&2; exit 1; }
rm -rf .gpu/build .gpu/lib .gpu/data .gpu/lib.tar.xz
mkdir -p .gpu/build/tests .gpu/lib/last .gpu/data
cp "$BUILD/nnopt" "$BUILD/peak" "$BUILD/CTestTestfile.cmake" .gpu/build/
cp "$BUILD/tests/CTestTestfile.cmake" .gpu/build/tests/
for t in test_cuda_ops test_parity test_model test_trainer; do cp "$BUILD/tests/$t" .gpu/build/tests/; done
# the absolute paths the CTest files name, for gpu_remote.sh to recreate
echo "$(pwd)" >.gpu/root
echo "$BUILD" >.gpu/build_dir
# the shared libraries outside glibc and CUDA's large ones; libstdc++ and
# libgcc_s only as a fallback (the GPU machine's own are newer)
for b in "$BUILD/nnopt" "$BUILD/tests/test_cuda_ops"; do ldd "$b" | awk '/=> \//{print $3}'; done |
    sort -u | grep -v -E 'lib(c|m|dl|pthread|rt|resolv)\.so|ld-linux|libcublas' |
    while read -r l; do cp -L "$l" .gpu/lib/; done
mv .gpu/lib/libstdc++.so.6 .gpu/lib/libgcc_s.so.1 .gpu/lib/last/ 2>/dev/null || true
(cd .gpu && tar cJf lib.tar.xz lib && rm -rf lib)
cp "$DATA"/*-ubyte* .gpu/data/
du -sh .gpu
