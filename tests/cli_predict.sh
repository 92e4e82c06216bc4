#!/usr/bin/env bash
# cli_predict.sh - `nnopt predict`: top-k classes of IDX and PNG images in
# eval mode; a PNG and the same image in an IDX file give the same answer;
# bad inputs are named.
. "$(dirname "${BASH_SOURCE[0]}")/lib_cli.sh" "$@" || exit 1

"$NN" train "$MODEL" --epochs 1 --train-limit 3000 --test-limit 100 --threads 2 --quiet \
    --save w.st > /dev/null 2>&1
IMAGES=$(ls "$DATA"/t10k-images-idx3-ubyte* | head -1)
"$NN" predict "$MODEL" --weights w.st "$IMAGES" --limit 4 --top 3 --json > idx.json 2> err.txt
check "IDX input: one JSON line per image" test "$(wc -l < idx.json)" -eq 4
check "top-3 probabilities are sorted and sum to at most 1" python3 -c '
import json
for l in open("idx.json"):
    t = json.loads(l)["top"]
    p = [c["probability"] for c in t]
    assert len(t) == 3 and p == sorted(p, reverse=True) and sum(p) <= 1 + 1e-6, p
    assert all("name" in c for c in t)
'
# the first test image as a PNG (written with zlib + struct only)
python3 - "$IMAGES" <<'PY'
import gzip, struct, sys, zlib
raw = open(sys.argv[1], "rb").read()
if raw[:2] == b"\x1f\x8b":
    raw = gzip.decompress(raw)
img = raw[16:16 + 784]
rows = b"".join(b"\x00" + img[r * 28:(r + 1) * 28] for r in range(28))
def chunk(t, b):
    return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xffffffff)
with open("first.png", "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
with open("small.png", "wb") as f:
    small = b"".join(b"\x00" + bytes(7) for _ in range(7))
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 7, 7, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(small)) + chunk(b"IEND", b""))
with open("broken.png", "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
PY
"$NN" predict "$MODEL" --weights w.st first.png --top 3 --json > png.json 2>/dev/null
# the IDX image alone too: a batch of one, as the PNG's (OpenBLAS's AVX2
# kernels round a 1-row product differently from a 4-row one)
"$NN" predict "$MODEL" --weights w.st "$IMAGES" --limit 1 --top 3 --json > idx1.json 2>/dev/null
check "a PNG and the same IDX image give the same classes" python3 -c '
import json
a = json.loads(open("png.json").readline())["top"]; b = json.loads(open("idx1.json").readline())["top"]
assert [c["class"] for c in a] == [c["class"] for c in b], (a, b)
assert all(abs(x["probability"] - y["probability"]) < 1e-6 for x, y in zip(a, b))
'
bad() { # NAME WORD ARGS...
    local name=$1 word=$2; shift 2
    if "$NN" predict "$MODEL" "$@" > out.txt 2> err.txt; then fail "$name" "exit 0"
    elif [ "$(wc -l < err.txt)" -eq 1 ] && grep -q -- "$word" err.txt && [ ! -s out.txt ]; then pass "$name"
    else fail "$name" "$(cat err.txt)"; fi
}
bad "missing image file" "nope.png" --weights w.st nope.png
bad "image of the wrong size" "small.png" --weights w.st small.png
bad "corrupt PNG" "broken.png" --weights w.st broken.png
bad "missing weights" "none.st" --weights none.st first.png
bad "no input" "INPUT" --weights w.st
finish
