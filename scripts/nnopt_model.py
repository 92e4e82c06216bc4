"""The PyTorch module equivalent to an nnopt model file (docs/model-format.md).

    from nnopt_model import NnoptModel
    model = NnoptModel("models/resnet_small.nn")   # state_dict names = nnopt's

Layers are built in file order with nnopt's naming rules (a layer without
name= is called <type><n>, the input "input"), so parameters and buffers carry
the same names as in nnopt's checkpoints. forward() walks the graph like
nnopt does (each layer reads the previous one unless in= names others) and
returns the logits (the input of softmax_ce).

Model files with blocks (block/use/repeat) are expanded by nnopt itself
(`nnopt info MODEL --expand`; the binary is $NNOPT, else build/nnopt).
"""
import os
import re
import subprocess

from pydeps import require  # says how to install a missing module

require("torch")
import torch  # noqa: E402
from torch import nn  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pair(v, default):
    if v is None:
        return (default, default)
    parts = v.split("x")
    return (int(parts[0]), int(parts[-1]))


def model_lines(path):
    """The layer lines of a model file, its blocks expanded by nnopt."""
    with open(path) as f:
        text = f.read()
    if re.search(r"^\s*(block|use|repeat)\s", text, re.M):
        nnopt = os.environ.get("NNOPT", os.path.join(_REPO, "build", "nnopt"))
        text = subprocess.run([nnopt, "info", path, "--expand"], check=True,
                              capture_output=True, text=True).stdout
    return text.splitlines()


def parse(path):
    """[(type, name, [input names], {key: value})] of a model file."""
    layers, counts = [], {}
    for lineno, raw in enumerate(model_lines(path), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        op, *toks = line.split()
        kv = {}
        for t in toks:
            if "=" not in t:
                raise ValueError(f"{path}:{lineno}: expected key=value, found '{t}'")
            k, v = t.split("=", 1)
            kv[k] = v
        counts[op] = counts.get(op, 0) + 1
        name = kv.pop("name", "input" if op == "input" else f"{op}{counts[op]}")
        ins = kv.pop("in").split(",") if "in" in kv else ([layers[-1][1]] if layers else [])
        layers.append((op, name, ins, kv))
    return layers


class NnoptModel(nn.Module):
    def __init__(self, path):
        super().__init__()
        self.layers = parse(path)
        self.mods = {}
        shapes = {}
        for op, name, ins, kv in self.layers:
            src = shapes[ins[0]] if ins else None
            if op == "input":
                shapes[name] = [int(s) for s in kv["shape"].split("x")]
                continue
            if op == "conv2d":
                k, s, p = _pair(kv.get("kernel"), 1), _pair(kv.get("stride"), 1), _pair(kv.get("pad"), 0)
                dil = _pair(kv.get("dilation"), 1)
                out = int(kv["out"])
                m = nn.Conv2d(src[0], out, k, s, p, dilation=dil, groups=int(kv.get("groups", 1)),
                              bias=kv.get("bias", "1") == "1")
                shapes[name] = [out, (src[1] + 2 * p[0] - dil[0] * (k[0] - 1) - 1) // s[0] + 1,
                                (src[2] + 2 * p[1] - dil[1] * (k[1] - 1) - 1) // s[1] + 1]
            elif op in ("maxpool", "avgpool"):
                k = _pair(kv.get("size"), 1)
                s = _pair(kv["stride"], 1) if "stride" in kv else k
                p = _pair(kv.get("pad"), 0)
                m = nn.MaxPool2d(k, s, p) if op == "maxpool" else nn.AvgPool2d(k, s, p)
                shapes[name] = [src[0], (src[1] + 2 * p[0] - k[0]) // s[0] + 1,
                                (src[2] + 2 * p[1] - k[1]) // s[1] + 1]
            elif op == "gap":
                m = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
                shapes[name] = [src[0]]
            elif op == "flatten":
                m = nn.Flatten()
                n = 1
                for d in src:
                    n *= d
                shapes[name] = [n]
            elif op == "linear":
                out = int(kv["out"])
                m = nn.Linear(src[0], out, bias=kv.get("bias", "1") == "1")
                shapes[name] = [out]
            elif op == "batchnorm":
                bn = nn.BatchNorm2d if len(src) == 3 else nn.BatchNorm1d
                m = bn(src[0], eps=float(kv.get("eps", 1e-5)), momentum=float(kv.get("momentum", 0.1)))
                shapes[name] = list(src)
            elif op == "dropout":
                m = nn.Dropout(float(kv.get("p", 0.5)))
                shapes[name] = list(src)
            elif op in ("relu", "gelu", "silu", "sigmoid", "tanh", "leaky_relu", "relu6",
                        "hardswish"):
                m = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
                     "tanh": nn.Tanh, "relu6": nn.ReLU6, "hardswish": nn.Hardswish}.get(op, None)
                m = m() if m else nn.LeakyReLU(float(kv.get("slope", 0.01)))
                shapes[name] = list(src)
            elif op == "add":
                m = None
                shapes[name] = list(src)
            elif op == "concat":
                m = None
                shapes[name] = [sum(shapes[i][0] for i in ins)] + list(src[1:])
            elif op == "softmax_ce":
                m = None
                shapes[name] = list(src)
            else:
                raise ValueError(f"{path}: layer type '{op}' is not supported here")
            if m is not None:
                self.add_module(name, m)
                self.mods[name] = m
        self.input_shape = shapes[self.layers[0][1]]              # C, H, W
        self.num_classes = shapes[self.layers[-1][1]][0]          # softmax_ce's input

    def forward(self, x):
        out = {}
        for op, name, ins, _ in self.layers:
            if op == "input":
                out[name] = x
            elif op == "add":
                y = out[ins[0]]
                for i in ins[1:]:
                    y = y + out[i]          # left to right, as nnopt adds
                out[name] = y
            elif op == "concat":
                out[name] = torch.cat([out[i] for i in ins], dim=1)
            elif op == "softmax_ce":
                return out[ins[0]]
            else:
                out[name] = self.mods[name](out[ins[0]])
        return out[self.layers[-1][1]]
