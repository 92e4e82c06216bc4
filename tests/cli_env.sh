#!/usr/bin/env bash
# cli_env.sh - nnopt's environment variables (NNOPT_ISA, NNOPT_CONV,
# NNOPT_LOADER), which main() reads and passes to the library as settings.
#
# usage: bash tests/cli_env.sh <path-to-nnopt> <source-dir>
#
# Checks: an unknown value stops every command before it starts, with exit
# code 2, nothing on stdout and one line on stderr naming the variable, its
# value and the values accepted; every accepted value runs; an empty value is
# the default; the settings reach the contexts (`system --json` reports the
# ISA and Winograd). Prints one PASS/FAIL line per check; exits 1 if any failed.
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

ISA_MSG="nnopt: NNOPT_ISA=avx2: expected generic, avx512, avx512bf16 or amx"
CONV_MSG="nnopt: NNOPT_CONV=fft: expected winograd or direct"
LOADER_MSG="nnopt: NNOPT_LOADER=threads: expected auto, thread or sync"
for cmd in "system" "info $MODEL" "train $MODEL --data $DATA --epochs 1" "bench $MODEL --steps 1"; do
    # shellcheck disable=SC2086 # the command and its arguments are split on purpose
    expect_reject NNOPT_ISA=avx2 "$ISA_MSG" $cmd
    # shellcheck disable=SC2086
    expect_reject NNOPT_CONV=fft "$CONV_MSG" $cmd
    # shellcheck disable=SC2086
    expect_reject NNOPT_LOADER=threads "$LOADER_MSG" $cmd
done
expect_reject NNOPT_ISA=GENERIC "nnopt: NNOPT_ISA=GENERIC: expected generic, avx512, avx512bf16 or amx" system

for assign in NNOPT_ISA=generic NNOPT_ISA=avx512 NNOPT_ISA=avx512bf16 NNOPT_ISA=amx NNOPT_ISA= \
              NNOPT_CONV=winograd NNOPT_CONV=direct NNOPT_CONV= \
              NNOPT_LOADER=auto NNOPT_LOADER=thread NNOPT_LOADER=sync NNOPT_LOADER=; do
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
check "the settings reach the context: NNOPT_ISA caps the kernels, NNOPT_CONV=direct turns Winograd off, empty = default" python3 -c '
import json
d, g, e, t, c = (json.load(open(f + ".json")) for f in ("default", "generic", "empty", "top", "direct"))
assert g["kernel_isa"] == "generic" and not g["winograd"], g
assert e == d, (e, d)
assert t == d, "a cap at the top (amx) changes nothing: %r vs %r" % (t, d)
assert c["kernel_isa"] == d["kernel_isa"] and not c["winograd"], c
'
finish
