#!/usr/bin/python3
"""Generate tests/fixtures/layers_<op>.txt: PyTorch forward outputs and input
gradients of the layers leaky_relu, gelu, silu, sigmoid, tanh, avgpool, gap,
relu6, hardswish, conv2d with dilation, depthwise and 1x1 conv2d, and add
and concat of several inputs;
and tests/fixtures/model_registry.txt: one training step's loss, logits and
parameter gradients of tests/fixtures/model_registry.nn (every one of those
new layer kinds in one graph).

tests/test_layers.c and tests/test_registry.c run the same with libnnopt and
compare. Inputs are not stored: Python and C derive them from the uint32 hash
of scripts/make_parity_fixture.py (all arithmetic wrapping mod 2^32):

    hash32(x):   x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16
    value(s, i) = hash32((i ^ hash32(s)) & 0xffffffff)
    u(s, i)     = float32(value(s, i) >> 8) / 16777216           (exact in float32)

Input element i (row-major N, C, H, W) is float32(float32(2 u(xs, i) - 1) * scale)
with scale a float32; the upstream gradient dy (the output's shape) is
float32(2 u(gs, i) - 1). Each case is

    case <n> <CxHxW> <xs> <scale> <gs> | <model-file layer line>
    y <count> <values...>        forward output, row-major
    dx <count> <values...>       gradient of sum(y * dy) with respect to x

with values printed %.9g (float32 round-trips). Layers with parameters add

    dw <count> <values...>       gradient of the weight (PyTorch layout)
    db <count> <values...>       gradient of the bias

for the weight signed(xs + 100, ., 0.5) and the bias signed(xs + 101, ., 0.5).
Layers of m inputs (add, concat) list the inputs' shapes separated by commas,
input k being signed(xs + k, ., scale), and write dx0 .. dx<m-1> instead of dx.

model_registry.txt holds 'case <n> <xs> <scale> <ls> <ps>' with the input
signed(xs, ., scale), labels value(ls, i) % classes, and parameter tensor j (in
the model's order, weight before bias) signed(ps + j, ., 0.3); then 'loss 1 v',
'logits <count> ...' and per parameter 'grad <name> <count> ...' of the mean
cross-entropy. Run with Debian's torch (/usr/bin/python3), float32, one thread:

    env -u OPENBLAS_CORETYPE /usr/bin/python3 scripts/make_layer_fixtures.py [-o DIR] [OP ...]

(OP: the fixtures to write, e.g. relu6 or model_registry; all by default).
The stored values came from OpenBLAS's own kernel choice (unpinned); a pin
such as OPENBLAS_CORETYPE=Haswell changes the last bits of the 1x1 cases.
"""

import argparse
import os
import sys

from pydeps import require  # says how to install a missing module

require("numpy", "torch")
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nnopt_model import NnoptModel  # noqa: E402

# op -> list of (n, (C, H, W), xs, scale, gs, layer line)
CASES = {
    "leaky_relu": [(2, (3, 4, 5), 11, 3.0, 12, "leaky_relu"),
                   (1, (2, 3, 5), 13, 3.0, 14, "leaky_relu slope=0.2")],
    "gelu": [(2, (3, 4, 5), 21, 4.0, 22, "gelu")],
    "silu": [(2, (3, 4, 5), 31, 6.0, 32, "silu")],
    "sigmoid": [(2, (3, 4, 5), 41, 8.0, 42, "sigmoid")],
    "tanh": [(2, (3, 4, 5), 51, 3.0, 52, "tanh")],
    "avgpool": [(1, (2, 7, 9), 61, 2.0, 62, "avgpool size=3 stride=2 pad=1"),
                (2, (1, 5, 7), 63, 2.0, 64, "avgpool size=2"),
                (1, (2, 5, 6), 65, 2.0, 66, "avgpool size=3x2 stride=1x2 pad=1x0")],
    "gap": [(3, (4, 5, 3), 71, 2.0, 72, "gap"),
            (2, (3, 1, 1), 73, 2.0, 74, "gap")],
    "relu6": [(2, (3, 4, 5), 81, 9.0, 82, "relu6")],
    "hardswish": [(2, (3, 4, 5), 91, 6.0, 92, "hardswish")],
    "conv2d_dilation": [(2, (3, 9, 8), 111, 2.0, 112, "conv2d out=4 kernel=3 dilation=2"),
                        (1, (4, 9, 10), 113, 2.0, 114,
                         "conv2d out=6 kernel=3x2 stride=2x1 pad=2x3 dilation=2x3 groups=2"),
                        (3, (2, 6, 7), 115, 2.0, 116,
                         "conv2d out=3 kernel=2 pad=1 dilation=3 bias=0")],
    # the two halves of a depthwise-separable block: depthwise (groups = C =
    # K, conv2d_depthwise.c) and 1x1 stride 1 (conv2d.c's pointwise GEMMs);
    # the last two take the AVX-512 1x1 kernels (C % 16, K % 8), the second
    # strided as ResNet's projections
    "conv2d_separable": [(2, (6, 9, 11), 161, 2.0, 162,
                          "conv2d out=6 kernel=3 stride=2 pad=1 groups=6"),
                         (3, (4, 7, 7), 163, 2.0, 164, "conv2d out=4 kernel=3 pad=1 groups=4 bias=0"),
                         (1, (3, 10, 9), 165, 2.0, 166,
                          "conv2d out=3 kernel=5 stride=2 pad=2 groups=3"),
                         (2, (8, 5, 7), 167, 2.0, 168, "conv2d out=12 kernel=1"),
                         (1, (6, 4, 4), 169, 2.0, 170, "conv2d out=6 kernel=1 groups=2 bias=0"),
                         (2, (16, 5, 7), 171, 2.0, 172, "conv2d out=24 kernel=1"),
                         (2, (32, 7, 9), 173, 2.0, 174,
                          "conv2d out=16 kernel=1 stride=2 bias=0")],
}

# layers of several inputs: op -> list of (n, [(C, H, W), ...], xs, scale, gs, layer line)
MERGE_CASES = {
    "add": [(2, [(3, 4, 5)] * 3, 121, 2.0, 122, "add"),
            (3, [(2, 3, 3)] * 8, 123, 2.0, 124, "add"),
            (2, [(6,)] * 4, 125, 2.0, 126, "add")],
    "concat": [(2, [(3, 4, 5), (1, 4, 5), (2, 4, 5)], 131, 2.0, 132, "concat"),
               (1, [(1, 2, 3)] * 8, 133, 2.0, 134, "concat"),
               (3, [(4,), (2,), (5,)], 135, 2.0, 136, "concat")],
}

# the whole-model fixture: (n, xs, scale, ls, ps)
MODEL_CASE = (3, 141, 2.0, 142, 143)


def hash32(x):
    """The uint32 hash above, element-wise on a numpy uint32 array (wraps mod 2^32)."""
    x = np.asarray(x, dtype=np.uint32).copy()
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def uniform(stream, n):
    """u(s, i) for i in 0..n-1 as float32 in [0, 1) with 24 bits."""
    idx = np.arange(n, dtype=np.uint64) & np.uint64(0xFFFFFFFF)
    v = hash32(idx.astype(np.uint32) ^ hash32(np.uint32(stream)))
    return (v >> np.uint32(8)).astype(np.float32) / np.float32(16777216.0)


def signed(stream, n, scale):
    """float32(float32(2u - 1) * scale) for i in 0..n-1."""
    return (np.float32(2.0) * uniform(stream, n) - np.float32(1.0)) * np.float32(scale)


def value(stream, n):
    """value(s, i) for i in 0..n-1 as uint32."""
    idx = (np.arange(n, dtype=np.uint64) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return hash32(idx ^ hash32(np.uint32(stream)))


def pair(v):
    a, _, b = v.partition("x")
    return (int(a), int(b or a))


def module(line):
    """The torch module of a model-file layer line."""
    op, *kv = line.split()
    keys = dict(k.split("=") for k in kv)
    if op == "leaky_relu":
        return torch.nn.LeakyReLU(float(keys.get("slope", 0.01)))
    if op == "gelu":
        return torch.nn.GELU()
    if op == "silu":
        return torch.nn.SiLU()
    if op == "sigmoid":
        return torch.nn.Sigmoid()
    if op == "tanh":
        return torch.nn.Tanh()
    if op == "avgpool":
        size = pair(keys["size"])
        return torch.nn.AvgPool2d(size, stride=pair(keys.get("stride", keys["size"])),
                                  padding=pair(keys.get("pad", "0")))
    if op == "gap":
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    if op == "relu6":
        return torch.nn.ReLU6()
    if op == "hardswish":
        return torch.nn.Hardswish()
    raise ValueError(op)


def conv_module(line, c):
    """torch.nn.Conv2d of a conv2d layer line on c input channels."""
    keys = dict(k.split("=") for k in line.split()[1:])
    return torch.nn.Conv2d(c, int(keys["out"]), pair(keys["kernel"]),
                           stride=pair(keys.get("stride", "1")),
                           padding=pair(keys.get("pad", "0")),
                           dilation=pair(keys.get("dilation", "1")),
                           groups=int(keys.get("groups", "1")),
                           bias=keys.get("bias", "1") == "1")


def header(name, what):
    return ("# %s - generated by scripts/make_layer_fixtures.py; do not edit.\n"
            "# PyTorch %s float32, 1 thread. Inputs from the uint32 hash described in\n"
            "# the script. %s\n" % (name, torch.__version__, what))


def shape_str(shape):
    return "x".join(str(d) for d in shape)


def single_input(op, cases):
    text = header("layers_%s.txt" % op,
                  "Per case: 'case <n> <CxHxW> <xs> <scale> <gs> | <layer>',\n"
                  "# then the forward output y and the input gradient dx for upstream dy.")
    if op.startswith("conv2d"):
        text = text.rstrip("\n") + " Then dw and db.\n"
    for n, (c, h, w), xs, scale, gs, line in cases:
        x = torch.from_numpy(signed(xs, n * c * h * w, scale).reshape(n, c, h, w))
        x.requires_grad_(True)
        if line.startswith("conv2d"):
            m = conv_module(line, c)
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(
                    signed(xs + 100, m.weight.numel(), 0.5).reshape(m.weight.shape)))
                if m.bias is not None:
                    m.bias.copy_(torch.from_numpy(signed(xs + 101, m.bias.numel(), 0.5)))
        else:
            m = module(line)
        y = m(x)
        dy = torch.from_numpy(signed(gs, y.numel(), 1.0).reshape(y.shape))
        y.backward(dy)
        text += "case %d %dx%dx%d %d %.9g %d | %s\n" % (n, c, h, w, xs, scale, gs, line)
        text += values("y", y) + values("dx", x.grad)
        if line.startswith("conv2d"):
            text += values("dw", m.weight.grad)
            if m.bias is not None:
                text += values("db", m.bias.grad)
    return text


def merge(op, cases):
    text = header("layers_%s.txt" % op,
                  "Per case: 'case <n> <shape>,<shape>,... <xs> <scale> <gs> | <layer>',\n"
                  "# input k from stream xs + k; then y and dx0, dx1, ... for upstream dy.")
    for n, shapes, xs, scale, gs, line in cases:
        xs_t = []
        for k, shape in enumerate(shapes):
            numel = int(np.prod(shape))
            t = torch.from_numpy(signed(xs + k, n * numel, scale).reshape((n,) + shape))
            xs_t.append(t.requires_grad_(True))
        if op == "add":
            y = xs_t[0]
            for t in xs_t[1:]:
                y = y + t
        else:
            y = torch.cat(xs_t, dim=1)
        dy = torch.from_numpy(signed(gs, y.numel(), 1.0).reshape(y.shape))
        y.backward(dy)
        text += "case %d %s %d %.9g %d | %s\n" % (n, ",".join(shape_str(s) for s in shapes), xs,
                                                  scale, gs, line)
        text += values("y", y)
        for k, t in enumerate(xs_t):
            text += values("dx%d" % k, t.grad)
    return text


def model_registry(fixtures):
    n, xs, scale, ls, ps = MODEL_CASE
    model = NnoptModel(os.path.join(fixtures, "model_registry.nn"))
    with torch.no_grad():
        for j, (_, p) in enumerate(model.named_parameters()):
            p.copy_(torch.from_numpy(signed(ps + j, p.numel(), 0.3).reshape(p.shape)))
    numel = int(np.prod(model.input_shape))
    x = torch.from_numpy(signed(xs, n * numel, scale).reshape([n] + list(model.input_shape)))
    labels = torch.from_numpy((value(ls, n) % np.uint32(model.num_classes)).astype(np.int64))
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    text = header("model_registry.txt",
                  "model_registry.nn, 'case <n> <xs> <scale> <ls> <ps>',\n"
                  "# then the mean cross-entropy, the logits and every parameter's gradient.")
    text += "case %d %d %.9g %d %d\n" % (n, xs, scale, ls, ps)
    text += values("loss", loss.reshape(1)) + values("logits", logits)
    for name, p in model.named_parameters():
        text += "grad %s " % name + values("", p.grad).lstrip()
    return text


def values(tag, a):
    a = a.detach().numpy().astype(np.float32).ravel()
    return "%s %d %s\n" % (tag, a.size, " ".join("%.9g" % float(v) for v in a))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("-o", "--out-dir", default=os.path.normpath(os.path.join(here, "..", "tests", "fixtures")))
    ap.add_argument("ops", nargs="*", help="fixtures to write (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    fixtures = os.path.normpath(os.path.join(here, "..", "tests", "fixtures"))
    jobs = {op: (lambda op=op, c=c: single_input(op, c)) for op, c in CASES.items()}
    jobs.update({op: (lambda op=op, c=c: merge(op, c)) for op, c in MERGE_CASES.items()})
    jobs["model_registry"] = lambda: model_registry(fixtures)
    for op in args.ops or jobs:
        if op not in jobs:
            ap.error("unknown fixture '%s' (expected one of %s)" % (op, ", ".join(jobs)))
        text = jobs[op]()
        name = op + ".txt" if op.startswith("model_") else "layers_%s.txt" % op
        path = os.path.join(args.out_dir, name)
        with open(path, "w") as f:
            f.write(text)
        print("wrote %s (%d bytes)" % (path, len(text)))


if __name__ == "__main__":
    main()
