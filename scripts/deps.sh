#!/usr/bin/env bash
# Installs the Debian packages nnopt needs to build, test and train, if any is
# missing. Runs apt-get as root (directly or through sudo).
#   scripts/deps.sh --torch   also PyTorch and NumPy for /usr/bin/python3, which
#                             the scripts/torch_*.py interop scripts and the
#                             PyTorch fixture generators need
set -euo pipefail
PACKAGES=(build-essential cmake pkg-config zlib1g-dev libpng-dev libopenblas-dev libcjson-dev
          libinih-dev libsqlite3-dev sqlite3 dataset-fashion-mnist python3 librsvg2-bin
          clang libclang-rt-14-dev # clang + libFuzzer: scripts/fuzz.sh
          libopenmpi-dev openmpi-bin # data parallel: mpirun -np N nnopt train
          libpq-dev postgresql # search studies in PostgreSQL: tests/cli_search_pg.sh
          slurm-wlm iproute2 # srun and network namespaces: tests/cli_slurm.sh, cli_mpi_netns.sh
          chromium-headless-shell) # the search report rendered: tests/cli_report.sh
case "${1:-}" in
  --torch) PACKAGES+=(python3-torch python3-numpy) ;;
  "") ;;
  *) echo "usage: scripts/deps.sh [--torch]" >&2; exit 2 ;;
esac
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
