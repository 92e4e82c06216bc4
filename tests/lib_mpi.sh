# lib_mpi.sh - the comparisons the MPI tests make (tests/cli_mpi.sh,
# tests/cli_pipeline.sh). Sourced after lib_cli.sh, never run (and not named
# cli_*.sh, so CMake does not register it). Defines
#   PY_CLOSE   python3 -c "$PY_CLOSE" A.json B.json [TOL]: every epoch's train
#              loss of two `--json` runs within 1e-5 relative, same steps, and
#              its test loss within TOL (1e-5 unless given);
#   PY_PARAMS  python3 -c "$PY_PARAMS" A.st B.st [same]: every tensor of two
#              checkpoints within 1e-5 (optimizer state against its tensor's
#              largest value); "same": no difference at all;
#   rank_pid   rank_pid MPIRUN_PID RANK: the pid of that rank of the job mpirun
#              started (empty if it has not started yet).
# shellcheck disable=SC2034 # for the sourcing script
# rel_close A.json B.json [TOL]: every epoch's train loss within 1e-5
# relative, its test loss within TOL
PY_CLOSE='
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
tol = {"train_loss": 1e-5, "test_loss": float(sys.argv[3]) if len(sys.argv) > 3 else 1e-5}
assert len(a) == len(b) and a, "%d vs %d epochs" % (len(a), len(b))
for x, y in zip(a, b):
    assert x["step"] == y["step"], "steps %s vs %s" % (x["step"], y["step"])
    for k in ("train_loss", "test_loss"):
        d = abs(x[k] - y[k]) / abs(y[k])
        assert d <= tol[k], "epoch %s %s: %r vs %r (%.2g relative)" % (x["epoch"], k, x[k], y[k], d)
'
# the parameters of two safetensors checkpoints (optimizer state and all)
PY_PARAMS='
import json, struct, sys
mode = sys.argv[3] if len(sys.argv) > 3 else ""
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
# that are differences of gradients) against the largest of its tensor;
# a third argument "same": no difference at all
worst = 0.0
for k in a:
    big = max(abs(y) for y in b[k]) or 1.0
    for x, y in zip(a[k], b[k]):
        scale = big if k.startswith("optimizer.") else max(abs(y), 1e-3)
        worst = max(worst, abs(x - y) / scale)
assert worst <= (0.0 if mode == "same" else 1e-5), "largest relative difference %.3g" % worst
print("largest relative difference %.3g" % worst)
'

rank_pid() {
    local p
    for p in $(pgrep -P "$1"); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
            echo "$p"
            return
        fi
    done
}
