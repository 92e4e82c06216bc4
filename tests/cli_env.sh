#!/usr/bin/env bash
# cli_env.sh - nnopt's environment variables (NNOPT_ISA, NNOPT_CONV,
# NNOPT_LOADER, NNOPT_BACKEND, NNOPT_HUGEPAGES), which main() reads and
# passes to the library as settings.
#
# usage: bash tests/cli_env.sh <path-to-nnopt> <source-dir>
#
# Checks: an unknown value stops every command before it starts, with exit
# code 2, nothing on stdout and one line on stderr naming the variable, its
# value and the values accepted; every accepted value runs; an empty value is
# the default; the settings reach the contexts (`system --json` reports the
# ISA, Winograd, the backend and the huge pages); `system --measure`
# measures the other OpenBLAS kernels unless OPENBLAS_CORETYPE pins one;
# OpenMP's threads spin briefly (GOMP_SPINCOUNT=10000, set before libgomp
# loads its settings, which it does once per process) unless
# NNOPT_SPIN=default or the user set a policy.
# Prints one PASS/FAIL line per check;
# exits 1 if any failed.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1

# expect_reject VAR=VALUE WANT ARGS...: nnopt ARGS under VAR=VALUE exits 2
# with stdout empty and stderr exactly the line WANT.
expect_reject() {
    local assign=$1 want=$2; shift 2
    env "$assign" timeout 60 "$NN" "$@" >out.txt 2>err.txt </dev/null
    local rc=$? why=""
    if [ $rc -ne 2 ]; then why="exit code $rc, expected 2"
    elif [ -s out.txt ]; then why="stdout not empty: $(head -c 200 out.txt | tr '\n' ' ')"
    elif [ "$(cat err.txt)" != "$want" ]; then why="stderr: $(head -c 300 err.txt)"
    fi
    if [ -z "$why" ]; then pass "$assign nnopt $1 is refused"; else fail "$assign nnopt $1 is refused" "$why"; fi
}

ISA_MSG="nnopt: NNOPT_ISA=sse4: expected generic, avx2, avx512, avx512bf16 or amx"
CONV_MSG="nnopt: NNOPT_CONV=fft: expected winograd, winograd2 or direct"
LOADER_MSG="nnopt: NNOPT_LOADER=threads: expected auto, thread or sync"
BACKEND_MSG="nnopt: NNOPT_BACKEND=cuda: expected cpu or guard"
for cmd in "system" "info $MODEL" "train $MODEL --data $DATA --epochs 1" "bench $MODEL --steps 1"; do
    # shellcheck disable=SC2086 # the command and its arguments are split on purpose
    expect_reject NNOPT_ISA=sse4 "$ISA_MSG" $cmd
    # shellcheck disable=SC2086
    expect_reject NNOPT_CONV=fft "$CONV_MSG" $cmd
    # shellcheck disable=SC2086
    expect_reject NNOPT_LOADER=threads "$LOADER_MSG" $cmd
    # shellcheck disable=SC2086
    expect_reject NNOPT_BACKEND=cuda "$BACKEND_MSG" $cmd
done
expect_reject NNOPT_ISA=GENERIC "nnopt: NNOPT_ISA=GENERIC: expected generic, avx2, avx512, avx512bf16 or amx" system
expect_reject NNOPT_HUGEPAGES=yes "nnopt: NNOPT_HUGEPAGES=yes: expected on or off" system

for assign in NNOPT_ISA=generic NNOPT_ISA=avx2 NNOPT_ISA=avx512 NNOPT_ISA=avx512bf16 NNOPT_ISA=amx NNOPT_ISA= \
              NNOPT_CONV=winograd NNOPT_CONV=direct NNOPT_CONV= \
              NNOPT_LOADER=auto NNOPT_LOADER=thread NNOPT_LOADER=sync NNOPT_LOADER= \
              NNOPT_BACKEND=cpu NNOPT_BACKEND=guard NNOPT_BACKEND= \
              NNOPT_HUGEPAGES=on NNOPT_HUGEPAGES=off NNOPT_HUGEPAGES=; do
    if env "$assign" timeout 60 "$NN" system --json >"ok.json" 2>ok.err; then
        pass "$assign is accepted"
    else
        fail "$assign is accepted" "$(head -c 300 ok.err)"
    fi
done

timeout 60 "$NN" system --json >default.json 2>/dev/null
NNOPT_ISA=generic timeout 60 "$NN" system --json >generic.json 2>/dev/null
NNOPT_ISA= timeout 60 "$NN" system --json >empty.json 2>/dev/null
NNOPT_ISA=amx NNOPT_CONV=winograd timeout 60 "$NN" system --json >top.json 2>/dev/null
NNOPT_CONV=direct timeout 60 "$NN" system --json >direct.json 2>/dev/null
NNOPT_BACKEND=guard timeout 60 "$NN" system --json >guard.json 2>/dev/null
NNOPT_HUGEPAGES=off timeout 60 "$NN" system --json >nohuge.json 2>/dev/null
check "the settings reach the context: NNOPT_ISA caps the kernels, NNOPT_CONV=direct turns Winograd off, NNOPT_BACKEND picks the backend, NNOPT_HUGEPAGES=off the huge pages, empty = default" python3 -c '
import json, os
d, g, e, t, c, b, h = (json.load(open(f + ".json")) for f in ("default", "generic", "empty", "top", "direct", "guard", "nohuge"))
assert d["backend"] == "cpu" and b["backend"] == "guard", (d, b)
assert d["huge_pages"] is True and h["huge_pages"] is False, (d, h)
thp = "/sys/kernel/mm/transparent_hugepage/enabled"
want = open(thp).read().split("[")[1].split("]")[0] if os.path.exists(thp) else ""
assert d["thp_mode"] == want, (d["thp_mode"], want)
assert g["kernel_isa"] == "generic" and not g["winograd"], g
assert e == d, (e, d)
assert t == d, "a cap at the top (amx) changes nothing: %r vs %r" % (t, d)
assert c["kernel_isa"] == d["kernel_isa"] and not c["winograd"], c
'
# OPENBLAS_CORETYPE (unset here first: the machine's environment may pin
# one): unset, `system --measure` also measures every other
# OpenBLAS kernel set the CPU runs (in runs of itself with the variable set)
# and names the fastest; set, it pins the kernels and only those are measured.
env -u OPENBLAS_CORETYPE timeout 120 "$NN" system --measure --json >measure.json 2>measure.err
# pinned to the kernels OpenBLAS chose itself, which this CPU surely runs
own=$(python3 -c 'import json; print(json.load(open("measure.json"))["openblas_core"])')
OPENBLAS_CORETYPE=$own timeout 120 "$NN" system --measure --json >pinned.json 2>pinned.err
check "system --measure: sgemm with each OpenBLAS kernel set, the fastest named; none when pinned" python3 -c '
import json
m, p = json.load(open("measure.json")), json.load(open("pinned.json"))
flags = open("/proc/cpuinfo").read().split("\nflags")[1].split("\n")[0].split()
avx512 = all(f in flags for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"))
want = {"Haswell"} if "avx2" in flags and "fma" in flags else set()
if avx512:
    want.add("SkylakeX")
    if "avx512_bf16" in flags:
        want.add("Cooperlake")
by = m.get("sgemm_gflops_by_core")
if not want - {m["openblas_core"]}:
    assert by is None, by
else:
    assert by is not None, m
    assert set(by) == want | {m["openblas_core"]}, (sorted(by), sorted(want))
    assert by[m["openblas_core"]] == m["sgemm_gflops"], m
    assert all(v is not None and v > 0 for v in by.values()), by
    assert by[m["sgemm_fastest_core"]] == max(by.values()), m
assert p["openblas_core"] == m["openblas_core"], (p, m)
assert "sgemm_gflops_by_core" not in p and p["sgemm_gflops"] > 0, p
'
# The spin libgomp took, as it prints its settings (once per process that
# loads it: a restart after libgomp's set-up would print twice).
spins() { env "$@" OMP_DISPLAY_ENV=verbose "$NN" --version 2>&1 | grep -o "GOMP_SPINCOUNT = '[0-9]*'" | tr '\n' ' '; }
check "OpenMP spins briefly: libgomp's one set-up reads GOMP_SPINCOUNT 10000" \
    test "$(spins NNOPT_SPIN=)" = "GOMP_SPINCOUNT = '10000' "
check "NNOPT_SPIN=default keeps libgomp's spin, a user's GOMP_SPINCOUNT is kept, OMP_WAIT_POLICY too" \
    bash -c 'test "$1" = "GOMP_SPINCOUNT = '"'"'300000'"'"' " && test "$2" = "GOMP_SPINCOUNT = '"'"'5'"'"' " && test "$3" != "GOMP_SPINCOUNT = '"'"'10000'"'"' "' _ \
    "$(spins NNOPT_SPIN=default)" "$(spins GOMP_SPINCOUNT=5)" "$(spins OMP_WAIT_POLICY=passive)"

finish
