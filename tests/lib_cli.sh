# lib_cli.sh - setup and reporting shared by the tests/cli_*.sh scripts.
# Sourced, never run (and not named cli_*.sh, so CMake does not register it):
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1
#
# Takes the script's arguments, <path-to-nnopt> <source-dir>, and sets
#   NN, SRC  both as absolute paths (exits 1 if NN is not an executable);
#   MODEL    the seed model, $SRC/models/seed_cnn.nn;
#   DATA     the Fashion-MNIST directory ($NN_TEST_DATA if set);
#   T        a fresh temporary directory, made the working directory and
#            removed at exit. A script that defines on_exit() has it called
#            first (e.g. to kill a background job).
# and defines pass, fail, check and finish, and PY_ROWS (below). Turns on
# set -u.
set -u

CLI_NAME=$(basename "$0" .sh)
NN=${1:?usage: $CLI_NAME.sh <path-to-nnopt> <source-dir>}
SRC=${2:?usage: $CLI_NAME.sh <path-to-nnopt> <source-dir>}
NN=$(realpath "$NN") && SRC=$(realpath "$SRC") || exit 1
[ -x "$NN" ] || { echo "FAIL $NN is not an executable"; exit 1; }
# shellcheck disable=SC2034 # MODEL and DATA are for the sourcing script
MODEL=$SRC/models/seed_cnn.nn
# shellcheck disable=SC2034
DATA=${NN_TEST_DATA:-/usr/share/datasets/fashion-mnist}
T=$(mktemp -d)
cli_exit() {
    if declare -F on_exit >/dev/null; then on_exit; fi
    rm -rf "$T"
}
trap cli_exit EXIT
trap 'exit 1' INT TERM
cd "$T" || exit 1

fails=0
checks=0
# pass NAME / fail NAME [WHY]: count one check and print its PASS/FAIL line.
pass() { checks=$((checks + 1)); echo "PASS $1"; }
fail() {
    checks=$((checks + 1)); fails=$((fails + 1))
    echo "FAIL $1${2:+: $2}"
}
# check NAME COMMAND...: PASS if the command succeeds; its output is the reason otherwise.
check() {
    local name=$1; shift
    local why
    if why=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(echo "$why" | head -c 400)"; fi
}
# check_error NAME WANT COMMAND...: PASS if the command fails with exactly one
# line on stderr that contains WANT.
check_error() {
    local name=$1 want=$2; shift 2
    local out rc
    out=$("$@" 2>&1 >/dev/null); rc=$?
    if [ $rc -ne 0 ] && [ "$(echo "$out" | wc -l)" = 1 ] && echo "$out" | grep -q -- "$want"; then pass "$name"
    else fail "$name" "exit $rc: $out"; fi
}
# finish: prints the summary line; its status (the script's last command) is 1
# if any check failed.
finish() {
    echo "$CLI_NAME: $((checks - fails)) of $checks checks passed"
    [ $fails -eq 0 ]
}

# PY_ROWS: Python source defining rows(path), the lines of an `nnopt train
# --json` output as dicts without the timing keys, to compare runs.
# shellcheck disable=SC2034
PY_ROWS='
import json, sys
def rows(p):
    out = []
    for l in open(p):
        o = json.loads(l)
        for k in ("seconds", "eval_seconds", "images_per_s"):
            o.pop(k, None)
        out.append(o)
    return out
'
