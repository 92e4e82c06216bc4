#!/usr/bin/env bash
# cli_mpi_netns.sh - data-parallel training across a network: 2 ranks in 2
# network namespaces (two "machines" with their own addresses, joined through
# veth pairs routed by the host), talking over TCP only (OpenMPI's btl tcp,self:
# no shared-memory transport), launched by mpirun through an rsh agent that
# enters the namespace, as ssh would enter another machine. Checks that each
# rank ran in its own namespace at its own address, that 2 ranks x batch 32
# give the 1-process x batch 64 losses within 1e-5 relative over 20 steps, and
# that the run says the parameters were bit-identical on both ranks.
#
# usage: bash tests/cli_mpi_netns.sh <path-to-nnopt> <source-dir>
# Needs root (ip netns) and mpirun; exits 77 (skipped) otherwise.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1

command -v mpirun >/dev/null || { echo "SKIP mpirun not found (scripts/deps.sh installs it)"; exit 77; }
command -v ip >/dev/null || { echo "SKIP ip (iproute2) not found"; exit 77; }
[ "$(id -u)" = 0 ] || { echo "SKIP network namespaces need root"; exit 77; }
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" # as cli_mpi.sh

# names and a subnet of this run's own, so that parallel runs do not collide
ID=$$
NS=(nnopt${ID}a nnopt${ID}b)
NET=10.$((100 + ID % 100)).$((ID / 100 % 250))
FORWARD=$(cat /proc/sys/net/ipv4/ip_forward)
on_exit() {
    for i in 0 1; do
        ip netns del "${NS[$i]}" 2>/dev/null
        ip link del "nv${ID}$i" 2>/dev/null
    done
    sysctl -qw net.ipv4.ip_forward="$FORWARD" 2>/dev/null
}
# host side 10.x.y.(4i+1), namespace side (4i+2), a /30 each
for i in 0 1; do
    h=$NET.$((4 * i + 1)); n=$NET.$((4 * i + 2))
    if ! { ip netns add "${NS[$i]}" &&
           ip link add "nv${ID}$i" type veth peer name eth0 netns "${NS[$i]}" &&
           ip addr add "$h/30" dev "nv${ID}$i" && ip link set "nv${ID}$i" up &&
           ip netns exec "${NS[$i]}" ip addr add "$n/30" dev eth0 &&
           ip netns exec "${NS[$i]}" ip link set eth0 up &&
           ip netns exec "${NS[$i]}" ip link set lo up &&
           ip netns exec "${NS[$i]}" ip route add default via "$h"; } 2>setup.err; then
        echo "SKIP cannot make network namespaces here: $(head -c 200 setup.err)"
        exit 77
    fi
done
sysctl -qw net.ipv4.ip_forward=1

# mpirun's rsh agent: the "host" is a namespace; the command comes as one
# string, as ssh passes it to the remote shell
cat >agent.sh <<'EOF'
#!/bin/sh
ns=$1; shift
exec ip netns exec "$ns" sh -c "$*"
EOF
chmod +x agent.sh
printf '%s slots=1\n%s slots=1\n' "${NS[0]}" "${NS[1]}" >hosts
# --mca rtc ^hwloc: each "node" daemon would write the hwloc topology into
# a shared-memory segment at a fixed address for its ranks; the two daemons
# of this one machine then collide there (orted crashed in
# hwloc_shmem_topology_write, about 1 run in 6, before any rank started)
MPI=(mpirun --allow-run-as-root --hostfile hosts -np 2 --mca plm_rsh_agent "$T/agent.sh"
     --mca btl tcp,self --mca btl_tcp_if_include "$NET.0/24" --mca oob_tcp_if_include "$NET.0/24"
     --mca rtc ^hwloc)

# where each rank runs
timeout 120 "${MPI[@]}" sh -c 'echo "$OMPI_COMM_WORLD_RANK $(ip netns identify $$) $(ip -o -4 addr show dev eth0 | awk "{print \$4}")"' \
    >where.txt 2>where.err
r0=$(grep '^0 ' where.txt); r1=$(grep '^1 ' where.txt)
if [ "$r0" = "0 ${NS[0]} $NET.2/30" ] && [ "$r1" = "1 ${NS[1]} $NET.6/30" ]; then
    pass "mpirun: rank 0 in ${NS[0]} ($NET.2), rank 1 in ${NS[1]} ($NET.6)"
else
    fail "mpirun: one rank per namespace" "$(cat where.txt where.err | head -c 400)"
fi

FLAGS=(--data "$DATA" --test-limit 1000 --threads 1 --seed 1 --json --train-limit 1280 --epochs 1)
"$NN" train "$MODEL" "${FLAGS[@]}" --batch 64 >one.json 2>one.err
timeout 300 "${MPI[@]}" "$NN" train "$MODEL" "${FLAGS[@]}" --batch 32 >two.json 2>two.err
rc=$?
[ $rc -eq 0 ] && pass "2 ranks over TCP train (exit 0)" || fail "2 ranks over TCP train" "exit $rc: $(head -c 400 two.err)"
python3 - one.json two.json <<'EOF' && pass "2 ranks x 32 over TCP = 1 x 64: losses within 1e-5 over 20 steps" || fail "2 ranks x 32 over TCP = 1 x 64"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) == 1 and a[0]["step"] == b[0]["step"] == 20, (a, b)
for k in ("train_loss", "test_loss"):
    d = abs(a[0][k] - b[0][k]) / abs(a[0][k])
    assert d <= 1e-5, "%s: %r vs %r" % (k, a[0][k], b[0][k])
EOF
# two machines: no shared memory between the ranks, so MPI carries the sums
grep -q "gradients averaged through MPI_Iallreduce" two.err &&
    pass "ranks on two machines average through MPI_Iallreduce" ||
    fail "MPI_Iallreduce across machines" "$(head -c 300 two.err)"
grep -q "bit-identical on all 2 ranks" two.err two.json 2>/dev/null &&
    pass "the parameters were bit-identical on both ranks" ||
    fail "bit-identical parameters" "$(tail -c 300 two.err)"
finish
