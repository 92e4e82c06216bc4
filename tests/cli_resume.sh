#!/usr/bin/env bash
# cli_resume.sh - kill -9 in the middle of training, then --resume: the result
# must be bit for bit the run that was never interrupted.
#
# usage: bash tests/cli_resume.sh <path-to-nnopt> <source-dir>
#
# Reference: 3 epochs straight (--save ref.st). Interrupted: the same flags with
# --save ck/run.st --save-every 10, killed with SIGKILL at a random moment after
# the first checkpoint, resumed in the background and killed again in a later
# epoch while it writes a checkpoint, then resumed to the end. The checkpoint
# must load after every kill, the final run.st must hold the same tensors (and
# ideally be the same file) as ref.st, every epoch line printed on the way must
# match the reference's (except timings), and no temporary file may be left
# next to the checkpoint. Also: an epoch-end checkpoint resumed for one more
# epoch equals the straight run, and resuming a finished run changes nothing.
# A resume with another --batch, --accumulate or --train-limit is refused
# (exit 1, one line), and a checkpoint without those keys (older nnopt) still
# resumes exactly.
# Prints one PASS/FAIL line per check; exits 1 if any failed.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1
BG="" # a background nnopt, killed at exit
on_exit() { [ -n "$BG" ] && kill -9 "$BG" 2>/dev/null; }

FLAGS=(--data "$DATA" --train-limit 4000 --test-limit 500 --threads 2 --seed 7 --json)

# Compares two checkpoints: prints what differs, exits 1 if any tensor differs.
cat >stcmp.py <<'EOF'
import json, struct, sys

def load(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop('__metadata__', {})
    data = b[8 + n:]
    return meta, h, data

def floats(raw):
    return struct.unpack('<%df' % (len(raw) // 4), raw)

(ma, ha, da), (mb, hb, db) = load(sys.argv[1]), load(sys.argv[2])
what = sys.argv[3] if len(sys.argv) > 3 else 'all'
bad = []
for k in sorted(set(ha) | set(hb)):
    if what == 'params' and k.startswith('optimizer.'):
        continue
    if what == 'optimizer' and not k.startswith('optimizer.'):
        continue
    if k not in ha or k not in hb:
        bad.append('%s only in %s' % (k, sys.argv[1] if k in ha else sys.argv[2]))
        continue
    ea, eb = ha[k], hb[k]
    if ea['dtype'] != eb['dtype'] or ea['shape'] != eb['shape']:
        bad.append('%s: %s %s vs %s %s' % (k, ea['dtype'], ea['shape'], eb['dtype'], eb['shape']))
        continue
    ra = da[ea['data_offsets'][0]:ea['data_offsets'][1]]
    rb = db[eb['data_offsets'][0]:eb['data_offsets'][1]]
    if ra != rb:
        fa, fb = floats(ra), floats(rb)
        ndiff = sum(1 for x, y in zip(fa, fb) if x != y)
        md = max(abs(x - y) for x, y in zip(fa, fb))
        bad.append('%s: %d of %d values differ (max |diff| %g)' % (k, ndiff, len(fa), md))
if what == 'meta':
    bad = ['metadata %s: %r vs %r' % (k, ma.get(k), mb.get(k))
           for k in sorted(set(ma) | set(mb)) if ma.get(k) != mb.get(k)]
if what != 'meta' and not any(k for k in ha if (what != 'params' or not k.startswith('optimizer.'))
                              and (what != 'optimizer' or k.startswith('optimizer.'))):
    bad.append('no %s tensors in %s' % (what, sys.argv[1]))
print('; '.join(bad[:6]) + (' ...' if len(bad) > 6 else ''))
sys.exit(1 if bad else 0)
EOF

# meta FILE KEY: one metadata value of a checkpoint (from its JSON header).
meta() {
    head -c 4096 "$1" 2>/dev/null | grep -ao "\"$2\":\"[0-9]*\"" | head -1 | sed 's/.*:"\([0-9]*\)"/\1/'
}

# compare_ckpt LABEL A B: the checks on two checkpoints that should be equal.
compare_ckpt() {
    local label=$1 a=$2 b=$3 why
    if why=$(python3 stcmp.py "$a" "$b" params); then pass "$label: parameter tensors bit-identical"
    else fail "$label: parameter tensors bit-identical" "$why"; fi
    if why=$(python3 stcmp.py "$a" "$b" optimizer); then pass "$label: optimizer state bit-identical"
    else fail "$label: optimizer state bit-identical" "$why"; fi
    if why=$(python3 stcmp.py "$a" "$b" meta); then pass "$label: metadata identical"
    else fail "$label: metadata identical" "$why"; fi
    if cmp -s "$a" "$b"; then pass "$label: files byte-identical"
    else fail "$label: files byte-identical" "$(cmp "$a" "$b" 2>&1 | head -1)"; fi
}

# loads LABEL FILE: nnopt eval accepts the checkpoint.
loads() {
    if timeout 120 "$NN" eval "$MODEL" --data "$DATA" --weights "$2" --threads 2 --json >eval.out 2>eval.err; then
        pass "$1"
    else
        fail "$1" "$(head -c 300 eval.err)"
    fi
}

# ------------------------------------------------------------------ reference
timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --epochs 3 --save ref.st >ref.json 2>ref.err
rc=$?
if [ $rc -eq 0 ] && [ -s ref.st ] && [ "$(wc -l <ref.json)" -eq 3 ]; then pass "reference run (3 epochs)"
else fail "reference run (3 epochs)" "exit $rc: $(head -c 300 ref.err)"; exit 1; fi

# ------------------------------------------------------------------ kill -9, resume
# The interrupted run's checkpoint lives alone in ck/, so that anything else
# appearing there (a temporary file) is easy to see.
mkdir ck
CK=ck/run.st
shopt -s nullglob dotglob

# start_bg OUT ARGS...: nnopt train MODEL ARGS in the background (pid in BG).
start_bg() {
    local out=$1; shift
    "$NN" train "$MODEL" "$@" >"$out" 2>"$out.err" &
    BG=$!
}
# wait_step MIN: waits while BG runs until $CK holds a checkpoint past step MIN.
wait_step() {
    local n=0 step
    while kill -0 "$BG" 2>/dev/null && [ $n -lt 15000 ]; do
        step=$(meta "$CK" step)
        [ -n "$step" ] && [ "$step" -gt "$1" ] && return 0
        sleep 0.02
        n=$((n + 1))
    done
    return 1
}
# kill_bg: SIGKILL to BG; KILLED=1 if it was still running (exit code in BGRC).
kill_bg() {
    kill -9 "$BG" 2>/dev/null
    { wait "$BG"; } 2>/dev/null
    BGRC=$?
    BG=""
    if [ $BGRC -eq 137 ]; then KILLED=1; else KILLED=0; fi
}
# others: the files in ck/ besides run.st.
others() { local f=(ck/*); printf '%s ' "${f[@]}" | sed "s|$CK ||; s| $||"; }

RUNF=("${FLAGS[@]}" --epochs 3 --save "$CK" --save-every 10)

# Kill 1: a random moment after the first checkpoint (most likely mid-epoch 1).
killed1=0
for delay in 0.$((10 + RANDOM % 40)) 0.1 0.05 0; do
    rm -f ck/* run1.json
    start_bg run1.json "${RUNF[@]}"
    wait_step 0
    sleep "$delay"
    kill_bg
    [ $KILLED -eq 1 ] && { killed1=1; break; }
    echo "# the first run finished (exit $BGRC) before the kill after ${delay}s; retrying sooner"
done
step1=$(meta "$CK" step)
if [ $killed1 -eq 1 ] && [ -n "$step1" ]; then
    pass "kill -9 after ${delay}s (checkpoint at step $step1: epoch $(meta "$CK" epoch) done + $(meta "$CK" batch_in_epoch) batches)"
else
    fail "kill -9 during training" "the run always finished first (exit $BGRC), or no checkpoint"
fi
loads "checkpoint loads after the first kill" "$CK"

# Kill 2: resume, and once a later epoch has begun kill the run while it is
# writing a checkpoint (--save-every 1 makes it write after every step; how
# often it saves does not change the training). The checkpoint must survive,
# and no temporary file may outlive the final resume.
killed2=0 hit=""
if [ $killed1 -eq 1 ]; then
    next=$(( (step1 / 63 + 1) * 63 ))   # 4000 images / 64 = 63 steps per epoch
    : >run2.json
    for attempt in 1 2 3 4 5; do
        start_bg run2.part "${RUNF[@]}" --save-every 1 --resume "$CK"
        if wait_step "$next"; then
            # poll with builtins only until something besides run.st shows up
            while kill -0 "$BG" 2>/dev/null; do
                f=(ck/*)
                [ ${#f[@]} -gt 1 ] && break
            done
        fi
        kill_bg
        killed2=$KILLED
        hit=$(others)
        cat run2.part >>run2.json
        [ $killed2 -eq 0 ] && break
        [ -n "$hit" ] && break
        echo "# kill $attempt of the resumed run missed a checkpoint write; again"
    done
    if [ $killed2 -eq 1 ]; then
        pass "kill -9 of the resumed run (checkpoint at step $(meta "$CK" step): epoch $(meta "$CK" epoch) done + $(meta "$CK" batch_in_epoch) batches${hit:+; killed while writing, left: $hit})"
    elif [ "$BGRC" -eq 0 ]; then
        echo "# the resumed run finished before the second kill"
    else
        fail "kill -9 of the resumed run" "it exited by itself with $BGRC: $(head -c 300 run2.part.err)"
    fi
    loads "checkpoint loads after the second kill" "$CK"
fi

timeout 300 "$NN" train "$MODEL" "${RUNF[@]}" --resume "$CK" >run3.json 2>run3.err
rc=$?
if [ $rc -eq 0 ]; then pass "final --resume runs to the end"
else fail "final --resume runs to the end" "exit $rc: $(head -c 300 run3.err)"; fi
compare_ckpt "kill -9 + resume vs straight run" ref.st "$CK"

check_lines() {
    local why
    # (an unquoted here-document, for $PY_ROWS: no other $, ` or \ below)
    if why=$(python3 - "$@" <<EOF
$PY_ROWS
ref = {r['epoch']: r for r in rows(sys.argv[1])}
seen, bad = set(), []
for p in sys.argv[2:]:
    for r in rows(p):
        seen.add(r['epoch'])
        if ref.get(r['epoch']) != r:
            bad.append('%s: %r, reference %r' % (p, r, ref.get(r['epoch'])))
if seen != set(ref):
    bad.append('epochs printed %s, reference %s' % (sorted(seen), sorted(ref)))
print('; '.join(bad))
sys.exit(1 if bad else 0)
EOF
    ); then pass "epoch lines of the interrupted runs match the reference (timings aside)"
    else fail "epoch lines of the interrupted runs match the reference (timings aside)" "$why"; fi
}
lines=(ref.json run1.json)
[ -f run2.json ] && lines+=(run2.json)
lines+=(run3.json)
check_lines "${lines[@]}"

left=$(others)
if [ -z "$left" ]; then pass "no temporary files left next to the checkpoint after kill + resume"
else fail "no temporary files left next to the checkpoint after kill + resume" "$left"; fi
shopt -u nullglob dotglob

# ------------------------------------------------------------------ epoch-end resume
timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --epochs 2 --save a.st >a2.json 2>a2.err
rc1=$?
cp a.st e2.st # the epoch-2 checkpoint, for the checks further down
timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --epochs 3 --resume a.st --save a.st >a3.json 2>a3.err
rc2=$?
if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ "$(wc -l <a3.json)" -eq 1 ]; then
    pass "2 epochs, then --resume for the 3rd"
else
    fail "2 epochs, then --resume for the 3rd" "exit $rc1/$rc2: $(head -c 300 a2.err a3.err)"
fi
compare_ckpt "epoch-end resume vs straight run" ref.st a.st

# ------------------------------------------------------------------ other batch or data
# A resume with another batch or training set would not be exact: exit 1 and
# one line naming the checkpoint, what differs and both values; the
# checkpoint is left as it was.
# refused LABEL EXPECTED-LINE ARGS...: nnopt train MODEL ARGS --resume other.st.
refused() {
    local label=$1 want=$2
    shift 2
    cp e2.st other.st
    timeout 300 "$NN" train "$MODEL" "$@" --epochs 3 --resume other.st --save other.st \
        >other.out 2>other.err
    local rc=$?
    if [ $rc -eq 1 ] && [ "$(cat other.err)" = "$want" ] && [ ! -s other.out ] &&
        cmp -s e2.st other.st; then
        pass "$label"
    else
        fail "$label" "exit $rc: $(head -c 300 other.err)"
    fi
}
refused "--resume with another --batch is refused" \
    "nnopt: other.st: checkpoint was trained with batch 64; this run uses batch 32 (resume with the same --batch, or start a new run)" \
    "${FLAGS[@]}" --batch 32
refused "--resume with another --accumulate is refused" \
    "nnopt: other.st: checkpoint was trained with accumulate 1; this run uses accumulate 2 (resume with the same --accumulate, or start a new run)" \
    "${FLAGS[@]}" --accumulate 2
refused "--resume with another --train-limit is refused" \
    "nnopt: other.st: checkpoint was trained on 4000 training samples; this run has 3000 (resume with the same --data, --val and --train-limit, or start a new run)" \
    "${FLAGS[@]}" --train-limit 3000

# A checkpoint written before nnopt recorded the batch and the data (no
# batch, accumulate, train_samples or train_labels_hash metadata) still
# resumes, unchecked, and the run ends as the straight one (recording them).
cat >oldstyle.py <<'EOF'
import json, struct, sys
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
for k in ('batch', 'accumulate', 'train_samples', 'train_labels_hash'):
    del h['__metadata__'][k]
hb = json.dumps(h, separators=(',', ':')).encode()
hb += b' ' * (-len(hb) % 8)
open(sys.argv[2], 'wb').write(struct.pack('<Q', len(hb)) + hb + b[8 + n:])
EOF
if python3 oldstyle.py e2.st old.st 2>old.err && ! grep -q train_samples old.st; then
    timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --epochs 3 --resume old.st --save old.st \
        >old.json 2>old.err
    rc=$?
    if [ $rc -eq 0 ] && [ "$(wc -l <old.json)" -eq 1 ]; then
        pass "a checkpoint without the batch and data keys (older nnopt) resumes"
    else
        fail "a checkpoint without the batch and data keys (older nnopt) resumes" \
            "exit $rc: $(head -c 300 old.err)"
    fi
    compare_ckpt "older checkpoint resumed vs straight run" ref.st old.st
else
    fail "a checkpoint without the batch and data keys (older nnopt) resumes" \
        "cannot write it: $(head -c 300 old.err)"
fi

# Resuming a finished run trains nothing and leaves the checkpoint alone.
cp ref.st done.st
timeout 300 "$NN" train "$MODEL" "${FLAGS[@]}" --epochs 3 --resume done.st --save done.st >done.json 2>done.err
rc=$?
if [ $rc -eq 0 ] && [ ! -s done.json ] && cmp -s ref.st done.st; then
    pass "--resume of a finished run: exit 0, no epochs, checkpoint unchanged"
else
    fail "--resume of a finished run: exit 0, no epochs, checkpoint unchanged" \
        "exit $rc, $(wc -l <done.json) lines: $(head -c 200 done.err)"
fi

finish
