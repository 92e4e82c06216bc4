#!/usr/bin/env bash
# cli_slurm.sh - data-parallel training launched by Slurm's srun: starts a
# throwaway one-node Slurm from Debian's slurm-wlm (munged, slurmctld and
# slurmd on their own socket, ports and folders under a temporary directory),
# then `srun -n 2 --mpi=pmix nnopt train`: the two tasks must form one MPI
# world (nnopt reads the step's size from Slurm's environment under PMIx), say
# so, give the 1-process x batch 64 losses within 1e-5 relative over 20 steps
# with batch 32 each, and end with bit-identical parameters. The daemons are
# stopped at exit.
#
# usage: bash tests/cli_slurm.sh <path-to-nnopt> <source-dir>
# Needs root, slurm-wlm (srun, slurmctld, slurmd, munged) and MPI; exits 77
# (skipped) otherwise.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1

for b in srun slurmctld slurmd munged sinfo; do
    command -v $b >/dev/null || { echo "SKIP $b not found (Debian's slurm-wlm: scripts/deps.sh)"; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "SKIP a private slurmd needs root"; exit 77; }
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" # as cli_mpi.sh

on_exit() { # stop the daemons and wait until they are gone
    local pids=() f p
    for f in ctld.pid d.pid munged.pid; do
        [ -f "$T/$f" ] && pids+=("$(cat "$T/$f")")
    done
    [ ${#pids[@]} -eq 0 ] && return
    kill "${pids[@]}" 2>/dev/null
    for _ in $(seq 1 30); do
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && break; p=""; done
        [ -z "$p" ] && return
        sleep 0.1
    done
    kill -9 "${pids[@]}" 2>/dev/null
}

# two free TCP ports for slurmctld and slurmd
read -r P1 P2 < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
H=$(hostname)
mkdir -p state spool munge && chmod 700 munge
head -c 1024 /dev/urandom >munge.key && chmod 600 munge.key
if ! munged --key-file="$T/munge.key" --socket="$T/munge.sock" --pid-file="$T/munged.pid" \
        --log-file="$T/munged.log" --seed-file="$T/munged.seed" -f 2>munge.err; then
    echo "SKIP munged does not start here: $(head -c 200 munge.err)"
    exit 77
fi
cat >slurm.conf <<EOF
ClusterName=nnopt$$
SlurmctldHost=$H
AuthType=auth/munge
AuthInfo=socket=$T/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$P1
SlurmdPort=$P2
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/ctld.pid
SlurmdPidFile=$T/d.pid
SlurmctldLogFile=$T/ctld.log
SlurmdLogFile=$T/d.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
NodeName=$H CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=$H Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
export SLURM_CONF=$T/slurm.conf
slurmctld -f "$SLURM_CONF" 2>ctld.err && slurmd -f "$SLURM_CONF" 2>d.err
idle=""
for _ in $(seq 1 60); do
    sinfo -h -o %T 2>/dev/null | grep -q idle && { idle=1; break; }
    sleep 0.5
done
if [ -z "$idle" ]; then
    echo "SKIP the private Slurm did not come up: $(tail -c 300 ctld.log d.log 2>/dev/null)"
    exit 77
fi
pass "a one-node Slurm is up (sinfo: idle)"

FLAGS=(--data "$DATA" --test-limit 1000 --threads 1 --seed 1 --json --train-limit 1280 --epochs 1)
"$NN" train "$MODEL" "${FLAGS[@]}" --batch 64 >one.json 2>one.err
timeout 300 srun -n 2 --mpi=pmix "$NN" train "$MODEL" "${FLAGS[@]}" --batch 32 >two.json 2>two.err
rc=$?
[ $rc -eq 0 ] && pass "srun -n 2 nnopt train (exit 0)" || fail "srun -n 2 nnopt train" "exit $rc: $(head -c 400 two.err)"
grep -q "data-parallel over 2 MPI ranks" two.err && pass "srun's two tasks train as one 2-rank world" ||
    fail "one 2-rank world" "$(head -c 300 two.err)"
python3 - one.json two.json <<'EOF' && pass "srun 2 x 32 = 1 x 64: losses within 1e-5 over 20 steps" || fail "srun 2 x 32 = 1 x 64"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) == 1 and a[0]["step"] == b[0]["step"] == 20, (a, b)
for k in ("train_loss", "test_loss"):
    d = abs(a[0][k] - b[0][k]) / abs(a[0][k])
    assert d <= 1e-5, "%s: %r vs %r" % (k, a[0][k], b[0][k])
EOF
grep -q "bit-identical on all 2 ranks" two.err && pass "parameters bit-identical on both ranks" ||
    fail "bit-identical parameters" "$(tail -c 300 two.err)"
finish
