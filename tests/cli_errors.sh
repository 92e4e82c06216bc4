#!/usr/bin/env bash
# cli_errors.sh - every bad input to nnopt fails cleanly.
#
# usage: bash tests/cli_errors.sh <path-to-nnopt> <source-dir>
#
# For each bad command line, model file, data directory and safetensors file
# the command must exit non-zero without a signal (exit code < 124, i.e. no
# crash and no timeout), print nothing on stdout and exactly one line on stderr
# that names the file or flag at fault and the problem. Also: a diverging run
# (huge --lr) stops with a message naming the step and leaves the last
# checkpoint intact. Prints one PASS/FAIL line per check; exits 1 if any failed.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1

# expect_error NAME NEEDLE... -- ARGS...
# Runs nnopt ARGS; checks exit code 1..123, empty stdout, one stderr line that
# contains every NEEDLE (case-insensitive fixed strings; "a|b" means a or b).
expect_error() {
    local name=$1; shift
    local needles=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do needles+=("$1"); shift; done
    shift
    timeout 60 "$NN" "$@" >out.txt 2>err.txt </dev/null
    local rc=$? why=""
    local lines
    lines=$(grep -c '' err.txt)
    if [ $rc -eq 0 ]; then why="exit code 0"
    elif [ $rc -eq 124 ]; then why="timed out (60 s)"
    elif [ $rc -ge 124 ]; then why="exit code $rc (signal or crash)"
    elif [ -s out.txt ]; then why="stdout not empty: $(head -c 200 out.txt | tr '\n' ' ')"
    elif [ "$lines" -ne 1 ]; then why="$lines lines on stderr, expected 1"
    else
        local n alt ok
        for n in "${needles[@]}"; do
            ok=0
            IFS='|' read -r -a alts <<<"$n"
            for alt in "${alts[@]}"; do grep -qiF -e "$alt" err.txt && ok=1; done
            [ $ok -eq 1 ] || why="${why}stderr does not mention '$n'; "
        done
    fi
    if [ -z "$why" ]; then
        pass "$name"
    else
        fail "$name" "$why"
        echo "    command: nnopt $*"
        echo "    exit code: $rc"
        sed -n '1,5s/^/    stderr: /p' err.txt
    fi
}

# ------------------------------------------------------------------ command line
expect_error "unknown subcommand" "frobnicate" -- frobnicate
NNOPT_ALLREDUCE=ring expect_error "bad NNOPT_ALLREDUCE" "NNOPT_ALLREDUCE=ring" "auto or mpi" -- train "$MODEL"
NNOPT_HUGEPAGES=maybe expect_error "bad NNOPT_HUGEPAGES" "NNOPT_HUGEPAGES=maybe" "on or off" -- train "$MODEL"
expect_error "unknown flag (train)" "--frob" -- train "$MODEL" --frob
expect_error "unknown flag (eval)" "--frob" -- eval "$MODEL" --weights x.st --frob
expect_error "unknown flag (info)" "--frob" -- info "$MODEL" --frob
expect_error "stray argument (system)" "system" "unexpected argument" -- system extra
expect_error "bad thread count (system)" "--threads" -- system --threads -3
expect_error "missing flag value --epochs" "--epochs" -- train "$MODEL" --epochs
expect_error "missing flag value --weights" "--weights" -- eval "$MODEL" --weights
expect_error "missing flag value --data" "--data" -- train "$MODEL" --data
expect_error "flag without value takes none (--json=1)" "--json" -- train "$MODEL" --json=1
expect_error "--epochs 0" "--epochs" "'0'" -- train "$MODEL" --epochs 0
expect_error "--epochs abc" "--epochs" "abc" -- train "$MODEL" --epochs abc
expect_error "--epochs=abc" "--epochs" "abc" -- train "$MODEL" --epochs=abc
expect_error "--epochs 1.5" "--epochs" "1.5" -- train "$MODEL" --epochs 1.5
expect_error "--epochs overflow" "--epochs" "99999999999999999999" -- train "$MODEL" --epochs 99999999999999999999
expect_error "--batch -1" "--batch" "-1" -- train "$MODEL" --batch -1
expect_error "--batch 0 (eval)" "--batch" -- eval "$MODEL" --weights x.st --batch 0
expect_error "--lr nan" "--lr" "nan" -- train "$MODEL" --lr nan
expect_error "--lr -1" "--lr" "-1" -- train "$MODEL" --lr -1
expect_error "--lr empty" "--lr" -- train "$MODEL" --lr ""
expect_error "--threads 0" "--threads" "'0'" -- train "$MODEL" --threads 0
expect_error "--threads 0 (eval)" "--threads" -- eval "$MODEL" --weights x.st --threads 0
expect_error "--seed -5" "--seed" "-5" -- train "$MODEL" --seed -5
expect_error "--seed ' -5' (leading space)" "--seed" "-5" -- train "$MODEL" --seed " -5" \
    --train-limit 64 --test-limit 64 --epochs 1 --threads 2 --json
expect_error "--seed 2^64" "--seed" "18446744073709551616" -- train "$MODEL" --seed 18446744073709551616
expect_error "--momentum x" "--momentum" "'x'|\"x\"" -- train "$MODEL" --momentum x
expect_error "--weight-decay inf" "--weight-decay" "inf" -- train "$MODEL" --weight-decay inf
expect_error "--std 0" "--std" -- train "$MODEL" --std 0
expect_error "--batch 0 (info)" "--batch" -- info "$MODEL" --batch 0
expect_error "train without MODEL" "model" -- train
expect_error "info without MODEL" "model" -- info
expect_error "eval without --weights" "--weights" -- eval "$MODEL"
expect_error "extra positional argument" "extra" -- train "$MODEL" extra
expect_error "--init with --resume" "--init" "--resume" -- train "$MODEL" --init a.st --resume b.st

# No subcommand at all: a usage message on stderr (several lines), no stdout.
timeout 60 "$NN" >out.txt 2>err.txt </dev/null
rc=$?
if [ $rc -ge 1 ] && [ $rc -lt 124 ] && [ ! -s out.txt ] && grep -qi usage err.txt; then
    pass "no subcommand: usage on stderr, exit $rc"
else
    fail "no subcommand" "exit $rc, stdout $(wc -c <out.txt) bytes"
fi

# ------------------------------------------------------------------ small data set
# 300 real test images and labels as raw IDX files, used as both train and t10k,
# so that runs that only need some valid data stay fast.
python3 - "$DATA" <<'EOF' || { echo "FAIL cannot build small IDX files from $DATA"; exit 1; }
import gzip, struct, sys
d = sys.argv[1]
img = gzip.open(d + '/t10k-images-idx3-ubyte.gz').read()
lab = gzip.open(d + '/t10k-labels-idx1-ubyte.gz').read()
n = 300
open('img300', 'wb').write(img[:4] + struct.pack('>I', n) + img[8:16] + img[16:16 + n * 784])
open('lab300', 'wb').write(lab[:4] + struct.pack('>I', n) + lab[8:8 + n])
open('lab299', 'wb').write(lab[:4] + struct.pack('>I', n - 1) + lab[8:8 + n - 1])
bad = bytearray(lab[:8 + n]); bad[4:8] = struct.pack('>I', n); bad[8 + 12] = 37
open('lab37', 'wb').write(bad)
open('magic', 'wb').write(struct.pack('>I', 0x801) + struct.pack('>I', n) + img[8:16] + img[16:16 + n * 784])
open('img32', 'wb').write(img[:4] + struct.pack('>III', n, 32, 32) + bytes(n * 1024))
EOF

# mkdata DIR IMAGES-FILE LABELS-FILE [SUFFIX-FOR-IMAGES]: both prefixes get the files.
mkdata() {
    mkdir -p "$1"
    local p
    for p in train t10k; do
        cp "$2" "$1/$p-images-idx3-ubyte${4:-}"
        cp "$3" "$1/$p-labels-idx1-ubyte"
    done
}
mkdata good img300 lab300

# ------------------------------------------------------------------ model files
printf 'input shape=1x28x28\nconv2d name=c out=16 kernel\nflatten\nlinear out=10\nsoftmax_ce\n' >syntax.nn
printf 'input shape=1x28x28\nconv2d out=16 kernel=3 frob=1\nflatten\nlinear out=10\nsoftmax_ce\n' >unkkey.nn
printf 'input shape=1x28x28\nfrobnicate\nflatten\nlinear out=10\nsoftmax_ce\n' >unktype.nn
printf 'input shape=1x28x28\nconv2d out=16 kernel=40\nflatten\nlinear out=10\nsoftmax_ce\n' >bigkernel.nn
printf 'input shape=1x28x28\nmaxpool size=100\nflatten\nlinear out=10\nsoftmax_ce\n' >bigpool.nn
printf 'input shape=0x28x28\nflatten\nlinear out=10\nsoftmax_ce\n' >zeroshape.nn
printf 'input shape=1x28x28\nlinear out=10\nsoftmax_ce\n' >notflat.nn
printf 'input shape=1x28x28\nflatten\nlinear out=-5\nsoftmax_ce\n' >negout.nn
printf 'input shape=1x28x28\nflatten\nlinear out=10\n' >noloss.nn
printf 'input shape=1x28x28\nflatten in=nowhere\nlinear out=10\nsoftmax_ce\n' >badin.nn
printf 'input shape=1x28x28\nconv2d out=4 kernel=3 stride=0\nflatten\nlinear out=10\nsoftmax_ce\n' >stride0.nn
printf 'input shape=1x28x28\nflatten\nlinear out=10\nsoftmax_ce\n\0' >nul.nn
: >empty.nn
printf 'input shape=1x32x32\nflatten\nlinear out=10\nsoftmax_ce\n' >wronginput.nn
printf 'input shape=1x28x28\nflatten\nlinear name=fc out=5\nsoftmax_ce\n' >fewclasses.nn

expect_error "model: missing file (info)" "$T/missing.nn" -- info "$T/missing.nn"
expect_error "model: missing file (eval)" "$T/missing.nn" -- eval "$T/missing.nn" --weights x.st
expect_error "model: missing file (train)" "$T/missing.nn" -- train "$T/missing.nn" --data good --threads 2
expect_error "model: directory instead of file" "$T/good" -- info "$T/good"
expect_error "model: bad syntax" "syntax.nn:2" "kernel" -- info syntax.nn
expect_error "model: bad syntax (train)" "syntax.nn:2" -- train syntax.nn --data good --threads 2
expect_error "model: bad syntax (eval)" "syntax.nn:2" -- eval syntax.nn --weights x.st
expect_error "model: unknown key" "unkkey.nn:2" "frob" -- info unkkey.nn
expect_error "model: unknown layer type" "unktype.nn:2" "frobnicate" -- info unktype.nn
expect_error "model: kernel larger than input" "bigkernel.nn:2" "kernel" -- info bigkernel.nn
expect_error "model: kernel larger than input (train)" "bigkernel.nn:2" -- train bigkernel.nn --data good --threads 2
expect_error "model: pool larger than input" "bigpool.nn:2" -- info bigpool.nn
expect_error "model: zero input shape" "zeroshape.nn:1" "shape" -- info zeroshape.nn
expect_error "model: linear on unflattened input" "notflat.nn:2" "flat" -- info notflat.nn
expect_error "model: negative out" "negout.nn:3" "out" -- info negout.nn
expect_error "model: no loss layer" "noloss.nn" "loss|softmax_ce" -- info noloss.nn
expect_error "model: in= names no layer" "badin.nn:2" "nowhere" -- info badin.nn
expect_error "model: stride 0" "stride0.nn:2" "stride" -- info stride0.nn
expect_error "model: NUL byte" "nul.nn" -- info nul.nn
expect_error "model: empty file" "empty.nn" -- info empty.nn
expect_error "model: input does not match the images (train)" "wronginput.nn" "input" -- train wronginput.nn --data good --threads 2
expect_error "model: fewer classes than the labels (train)" "fewclasses.nn" "classes" -- train fewclasses.nn --data good --threads 2

# ------------------------------------------------------------------ data directories
gzip -c img300 >img300.gz
size=$(stat -c %s img300.gz)
head -c 50000 img300 >trunc.raw
head -c $((size / 2)) img300.gz >trunc.gz
head -c $((size - 4)) img300.gz >trunctail.gz
python3 - <<'EOF'
import random
hdr = open('img300.gz', 'rb').read()[:10]          # a valid gzip member header
r = random.Random(1)
open('corrupt.gz', 'wb').write(hdr + bytes(r.randrange(256) for _ in range(5000)))
b = bytearray(open('img300.gz', 'rb').read()); b[-6] ^= 0xFF  # CRC-32 no longer matches
open('badcrc.gz', 'wb').write(b)
EOF
: >empty.raw
cat img300 lab300 >trailing.raw
mkdata d_trunc trunc.raw lab300
mkdata d_truncgz trunc.gz lab300 .gz
mkdata d_trunctail trunctail.gz lab300 .gz
mkdata d_corrupt corrupt.gz lab300 .gz
mkdata d_crc badcrc.gz lab300 .gz
mkdata d_magic magic lab300
mkdata d_count img300 lab299
mkdata d_empty empty.raw lab300
mkdata d_trailing trailing.raw lab300
mkdata d_size img32 lab300
mkdata d_label img300 lab37
mkdir -p d_nolabels
cp img300 d_nolabels/train-images-idx3-ubyte
cp img300 d_nolabels/t10k-images-idx3-ubyte

# A weights file for eval: one short epoch on the small set.
if timeout 120 "$NN" train "$MODEL" --data good --epochs 1 --threads 2 --json --save w.st \
        >/dev/null 2>err.txt && [ -s w.st ]; then
    pass "setup: small checkpoint w.st"
else
    fail "setup: small checkpoint w.st" "$(head -c 300 err.txt)"
fi

expect_error "data: --data missing dir (train)" "$T/nodir" -- train "$MODEL" --data "$T/nodir" --threads 2
expect_error "data: --data missing dir (eval)" "$T/nodir" -- eval "$MODEL" --weights w.st --data "$T/nodir" --threads 2
# data_case NAME DIR FILE-PREFIX-IN-MESSAGE NEEDLE...: train reads train-*, eval t10k-*.
data_case() {
    local name=$1 dir=$2 kind=$3; shift 3
    expect_error "data: $name (train)" "$dir/train-$kind" "$@" -- train "$MODEL" --data "$dir" --threads 2 --epochs 1
    expect_error "data: $name (eval)" "$dir/t10k-$kind" "$@" -- eval "$MODEL" --weights w.st --data "$dir" --threads 2
}
data_case "truncated raw images" d_trunc images "truncated"
data_case "truncated .gz images" d_truncgz images "truncated"
data_case ".gz without its trailer" d_trunctail images "truncated"
data_case "corrupt .gz (valid header, garbage)" d_corrupt images "corrupt|invalid"
data_case ".gz with a bad CRC" d_crc images "corrupt|check|crc"
data_case "wrong magic" d_magic images "magic"
data_case "image and label counts differ" d_count images "300" "299"
data_case "empty images file" d_empty images "truncated|empty"
data_case "data after the stated images" d_trailing images "after|extra|trailing"
data_case "missing labels file" d_nolabels labels "no such file|not found|missing"
expect_error "data: 32x32 images for a 28x28 model (train)" "d_size" "32" -- train "$MODEL" --data d_size --threads 2
expect_error "data: 32x32 images for a 28x28 model (eval)" "d_size" "32" -- eval "$MODEL" --weights w.st --data d_size --threads 2
expect_error "data: label 37 for a 10-class model (train)" "d_label" "37|38" -- train "$MODEL" --data d_label --threads 2
expect_error "data: label 37 for a 10-class model (eval)" "d_label" "37" -- eval "$MODEL" --weights w.st --data d_label --threads 2

# ------------------------------------------------------------------ safetensors files
# st_variant SRC OP DST [KEY VALUE]: rewrites a checkpoint with json+struct only.
cat >stmut.py <<'EOF'
import json, struct, sys

def read(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop('__metadata__', None)
    data = b[8 + n:]
    return meta, {k: (v, data[v['data_offsets'][0]:v['data_offsets'][1]]) for k, v in h.items()}

def write(path, meta, tensors, shift=None):
    h, data = {}, b''
    if meta is not None:
        h['__metadata__'] = meta
    for k, (v, raw) in tensors.items():
        v = dict(v)
        v['data_offsets'] = [len(data), len(data) + len(raw)]
        h[k] = v
        data += raw
    if shift:   # move the tensor's range to just past the end of the data section
        h[shift]['data_offsets'] = [len(data), len(data) + len(tensors[shift][1])]
    hb = json.dumps(h, separators=(',', ':')).encode()
    hb += b' ' * (-len(hb) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(hb)) + hb + data)

src, op, dst = sys.argv[1:4]
meta, t = read(src)
shift = None
if op == 'drop':            # a parameter tensor is missing
    del t['fc2.bias']
elif op == 'shape':         # same element count, transposed shape
    v, raw = t['fc1.weight']
    t['fc1.weight'] = (dict(v, shape=v['shape'][::-1]), raw)
elif op == 'offsets':       # fc2.bias's byte range runs past the end of the file
    shift = 'fc2.bias'
elif op == 'extra':         # a tensor the model does not have
    t['extra.weight'] = ({'dtype': 'F32', 'shape': [2]}, struct.pack('<2f', 1.0, 2.0))
elif op == 'f16':           # a dtype this build does not read
    v, raw = t['fc2.bias']
    t['fc2.bias'] = (dict(v, dtype='F16', shape=[v['shape'][0] * 2]), raw)
elif op == 'weights':       # parameters only: no optimizer state, no metadata
    t = {k: x for k, x in t.items() if not k.startswith('optimizer.')}
    meta = None
elif op == 'meta':          # set one metadata value
    meta[sys.argv[4]] = sys.argv[5]
elif op != 'copy':
    sys.exit('stmut.py: unknown op ' + op)
write(dst, meta, t, shift)
EOF

# The resume checkpoint for the variants: real data, 2 epochs of 128 images.
if timeout 120 "$NN" train "$MODEL" --data "$DATA" --train-limit 128 --test-limit 64 --epochs 2 \
        --threads 2 --json --save ok.st >/dev/null 2>err.txt && [ -s ok.st ]; then
    pass "setup: resume checkpoint ok.st"
else
    fail "setup: resume checkpoint ok.st" "$(head -c 300 err.txt)"
fi
python3 stmut.py ok.st copy copy.st
if cmp -s ok.st copy.st; then
    pass "setup: python rewrite of a checkpoint is byte-identical"
else
    fail "setup: python rewrite of a checkpoint is byte-identical" "variants may differ in more than intended"
fi
for op in drop shape offsets extra f16 weights; do python3 stmut.py ok.st $op $op.st; done
python3 stmut.py ok.st meta beyond.st batch_in_epoch 9
python3 stmut.py ok.st meta evenrng.st rng_inc 4
python3 stmut.py ok.st meta version.st format_version 99
printf 'abc' >short.st
python3 -c 'import struct, sys; sys.stdout.buffer.write(struct.pack("<Q", 1000) + b"{}")' >hlen.st
python3 -c 'import struct, sys; h = b"{\"a\": [1, 2"; sys.stdout.buffer.write(struct.pack("<Q", len(h)) + h)' >json.st
python3 -c 'import struct, sys; h = b"[1, 2, 3]"; sys.stdout.buffer.write(struct.pack("<Q", len(h)) + h)' >array.st

# st_case NAME FILE NEEDLE...: the same bad file through eval --weights and train --init.
st_case() {
    local name=$1 file=$2; shift 2
    expect_error "safetensors: $name (eval --weights)" "$file" "$@" -- eval "$MODEL" --weights "$file" --threads 2
    expect_error "safetensors: $name (train --init)" "$file" "$@" -- train "$MODEL" --data good --init "$file" --threads 2 --epochs 1
}
st_case "nonexistent file" "$T/none.st" "no such file|cannot open"
st_case "file shorter than 8 bytes" short.st "8|short"
st_case "header length beyond the file" hlen.st "header"
st_case "header not JSON" json.st "JSON"
st_case "header a JSON array" array.st "object"
st_case "missing tensor" drop.st "fc2.bias"
st_case "wrong shape" shape.st "fc1.weight"
st_case "data_offsets beyond the file" offsets.st "fc2.bias" "data_offsets"
st_case "extra unknown tensor" extra.st "extra.weight"
st_case "F16 dtype" f16.st "fc2.bias" "F16"
st_case "unsupported format_version" version.st "format_version"
expect_error "safetensors: --resume from weights only" "weights.st" "resume|optimizer" -- \
    train "$MODEL" --data good --resume weights.st --threads 2 --epochs 3
expect_error "safetensors: --resume missing file" "$T/none.st" -- \
    train "$MODEL" --data good --resume "$T/none.st" --threads 2 --epochs 3
expect_error "safetensors: --resume from an even rng_inc" "evenrng.st" "rng_inc" -- \
    train "$MODEL" --data good --resume evenrng.st --threads 2 --epochs 3
expect_error "safetensors: --resume at a batch beyond the data" "beyond.st" "batch" -- \
    train "$MODEL" --data "$DATA" --train-limit 128 --resume beyond.st --threads 2 --epochs 3

# ------------------------------------------------------------------ writing files
expect_error "--log into a missing dir" "$T/nodir/log.csv" -- \
    train "$MODEL" --data good --log "$T/nodir/log.csv" --threads 2 --epochs 1 --json
# A --save path that cannot be written should fail before any training is done
# (nothing on stdout), not after the first epoch.
expect_error "--save into a missing dir" "$T/nodir/x.st" -- \
    train "$MODEL" --data good --save "$T/nodir/x.st" --threads 2 --epochs 1 --json

# ------------------------------------------------------------------ diverging training
# NaN loss: a huge --lr from an intact checkpoint must stop naming the step, exit
# non-zero and keep the checkpoint as it was.
NANF=(--data "$DATA" --train-limit 256 --test-limit 64 --threads 2 --seed 1 --json)
if timeout 120 "$NN" train "$MODEL" "${NANF[@]}" --epochs 1 --save ck.st >/dev/null 2>err.txt; then
    cp ck.st ck.orig
    expect_error "NaN loss after --resume stops and names the step" "step" "nan|inf" -- \
        train "$MODEL" "${NANF[@]}" --epochs 3 --resume ck.st --lr 1e6 --save ck.st
    if cmp -s ck.st ck.orig; then pass "NaN loss (--resume): checkpoint unchanged"
    else fail "NaN loss (--resume): checkpoint unchanged" "ck.st was rewritten"; fi
    expect_error "NaN loss after --init stops and names the step" "step" "nan|inf" -- \
        train "$MODEL" "${NANF[@]}" --epochs 3 --init ck.st --lr 1e6 --save ck.st
    if cmp -s ck.st ck.orig; then pass "NaN loss (--init): checkpoint unchanged"
    else fail "NaN loss (--init): checkpoint unchanged" "ck.st was rewritten"; fi
    if timeout 60 "$NN" eval "$MODEL" --weights ck.st --threads 2 --json >out.txt 2>err.txt; then
        pass "NaN loss: kept checkpoint still loads"
    else
        fail "NaN loss: kept checkpoint still loads" "$(head -c 300 err.txt)"
    fi
    if ls ck.st.tmp* >/dev/null 2>&1; then fail "NaN loss: no temporary files left" "$(ls ck.st.tmp*)"
    else pass "NaN loss: no temporary files left"; fi
else
    fail "setup: first epoch for the NaN checks" "$(head -c 300 err.txt)"
fi

# Divergence that the loss does not show: with --seed 3 and --lr 1e6 the first
# layers' weights become NaN while the loss stays finite. A run that ends with
# exit code 0 must not have saved non-finite parameters.
timeout 120 "$NN" train "$MODEL" --data "$DATA" --train-limit 256 --test-limit 64 --threads 2 \
    --seed 3 --lr 1e6 --epochs 3 --json --save div.st >out.txt 2>err.txt
rc=$?
if [ $rc -ne 0 ]; then
    if [ $rc -lt 124 ] && grep -qi step err.txt; then pass "diverging run (seed 3, lr 1e6) stops (exit $rc)"
    else fail "diverging run (seed 3, lr 1e6) stops" "exit $rc: $(head -c 300 err.txt)"; fi
else
    bad=$(python3 - div.st <<'EOF'
import json, math, struct, sys
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
out = []
for k, v in h.items():
    if k == '__metadata__' or k.startswith('optimizer.'):
        continue
    s, e = v['data_offsets']
    vals = struct.unpack('<%df' % ((e - s) // 4), b[8 + n + s:8 + n + e])
    bad = sum(1 for x in vals if not math.isfinite(x))
    if bad:
        out.append('%s %d/%d' % (k, bad, len(vals)))
print(', '.join(out))
EOF
)
    if [ -z "$bad" ]; then pass "diverging run (seed 3, lr 1e6) saved finite parameters"
    else fail "diverging run (seed 3, lr 1e6) exits 0 with non-finite parameters" "$bad"; fi
fi

finish
