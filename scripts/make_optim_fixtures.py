#!/usr/bin/python3
"""Generate tests/fixtures/optim_*.txt: 30 steps of each torch.optim optimizer on a tiny CNN.

tests/test_optim.c repeats every run with libnnopt and compares the per-step
losses, the final parameters and the final optimizer state. Weights and data
come from the exact uint32 hash of scripts/make_parity_fixture.py (imported
from there), so nothing but statistics is stored:

  model   input 1x8x8 -> conv1 (4 out, 3x3, pad 1) -> relu -> maxpool 2 ->
          flatten -> fc1 (64 -> 10) -> softmax cross-entropy (mean)
  params  conv1.weight, conv1.bias, fc1.weight, fc1.bias use streams 1..4:
          float32(float32(2u - 1) * bound), bound = float32(1 / sqrt(fan_in))
  data    step t uses batch b = t % 4 of 16 samples: sample j, pixel k (0..63)
          has byte value(1000 + b, j*64 + k) >> 24, normalized in float32 as
          (byte / 255 - 0.2860) / 0.3530; label value(2000 + b, j) % 10

Every hyperparameter is rounded to float32 before PyTorch sees it, so that
libnnopt (which stores them as float) computes the same double-precision
scalars (bias corrections, 1 - beta, ...). Each fixture's "config" line lists
them with %.9g; the C test builds its nn_optim_config from that line.

optim_defaults.txt records torch.optim's constructor defaults, which the C
test compares with nn_optim_defaults.

optim_bitexact.txt checks the update rules bit for bit: every case runs 5
steps on one flat tensor of 1031 parameters (an odd size, so that vector
kernels have a tail), p_i = 2 u(11, i) - 1, with gradients
g_i = (2 u(20 + t, i) - 1) * 2^-(i % 16) at step t (exact in float32), and
the FNV-1a 64 hash of the final parameters' and each state's float32 bytes
(little-endian) is stored, with their float64 sums.

Run with Debian's torch (/usr/bin/python3), float32, one thread:

    /usr/bin/python3 scripts/make_optim_fixtures.py [-o DIR]
"""

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pydeps import require  # noqa: E402  (says how to install a missing module)

require("numpy", "torch")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from make_parity_fixture import param_line, uniform, value  # noqa: E402

STEPS = 30
BATCH = 16
NUM_BATCHES = 4
SIDE = 8
PIXELS = SIDE * SIDE
DATA_STREAM, LABEL_STREAM = 1000, 2000
PARAM_ORDER = ["conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias"]


def f32(v):
    """v rounded to float32, as a Python float."""
    return float(np.float32(v))


# (fixture name, nnopt kind, torch options). Options use nnopt's field names;
# betas are split into beta1/beta2.
CASES = [
    ("sgd_nesterov", "sgd", dict(lr=0.05, momentum=0.9, nesterov=1)),
    ("sgd_dampening_wd", "sgd", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("adam", "adam", dict(lr=0.01)),
    ("adam_amsgrad_wd", "adam", dict(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6,
                                     weight_decay=0.01, amsgrad=1)),
    ("adamw", "adamw", dict(lr=0.01)),
    ("adamw_amsgrad", "adamw", dict(lr=0.01, weight_decay=0.1, amsgrad=1)),
    ("rmsprop", "rmsprop", dict(lr=0.001)),
    ("rmsprop_centered_momentum_wd", "rmsprop", dict(lr=0.001, alpha=0.9, momentum=0.9,
                                                     centered=1, weight_decay=0.01)),
    ("adagrad", "adagrad", dict(lr=0.05)),
    ("adagrad_decay_wd_init", "adagrad", dict(lr=0.05, lr_decay=0.01, weight_decay=0.01,
                                              initial_accumulator_value=0.1)),
]

# Fields each kind uses, in the order the config line lists them.
FIELDS = {
    "sgd": ["lr", "momentum", "dampening", "weight_decay", "nesterov"],
    "adam": ["lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad"],
    "adamw": ["lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad"],
    "rmsprop": ["lr", "alpha", "eps", "weight_decay", "momentum", "centered"],
    "adagrad": ["lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"],
}
CLASSES = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}
BOOL_FIELDS = {"nesterov", "amsgrad", "centered"}


class TinyCNN(torch.nn.Module):
    """The nnopt model text in tests/test_optim.c."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc1 = torch.nn.Linear(4 * (SIDE // 2) ** 2, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        return self.fc1(torch.flatten(x, 1))


def init_params(model):
    params = dict(model.named_parameters())
    assert list(params) == PARAM_ORDER, list(params)
    with torch.no_grad():
        for s, name in enumerate(PARAM_ORDER, start=1):
            w = getattr(model, name.split(".")[0]).weight
            fan_in = int(np.prod(w.shape[1:]))
            bound = np.float32(1.0 / math.sqrt(fan_in))
            p = params[name]
            vals = (np.float32(2.0) * uniform(s, p.numel()) - np.float32(1.0)).astype(np.float32)
            p.copy_(torch.from_numpy((vals * bound).astype(np.float32).reshape(p.shape)))


def batch(t):
    """Step t's batch: x (B, 1, 8, 8) float32 normalized, labels (B,) int64."""
    b = t % NUM_BATCHES
    k = np.arange(BATCH * PIXELS, dtype=np.uint64)
    byte = (value(DATA_STREAM + b, k) >> np.uint32(24)).astype(np.float32)
    x = (byte / np.float32(255.0) - np.float32(0.2860)) / np.float32(0.3530)
    assert x.dtype == np.float32
    labels = value(LABEL_STREAM + b, np.arange(BATCH, dtype=np.uint64)) % np.uint32(10)
    return (torch.from_numpy(x.reshape(BATCH, 1, SIDE, SIDE)),
            torch.from_numpy(labels.astype(np.int64)))


def full_options(kind, opts):
    """opts completed with torch's defaults, every float rounded to float32."""
    dummy = torch.zeros(1, requires_grad=True)
    d = dict(CLASSES[kind]([dummy], lr=1.0).defaults)
    if "betas" in d:
        d["beta1"], d["beta2"] = d.pop("betas")
    out = {}
    for f in FIELDS[kind]:
        v = opts.get(f, d.get(f))
        out[f] = int(bool(v)) if f in BOOL_FIELDS else f32(v)
    return out


def make_optimizer(kind, params, o):
    kw = {k: (bool(v) if k in BOOL_FIELDS else v) for k, v in o.items()}
    if "beta1" in kw:
        kw["betas"] = (kw.pop("beta1"), kw.pop("beta2"))
    if kind != "sgd":
        kw["foreach"] = False  # the single-tensor code path
    return CLASSES[kind](params, **kw)


def fmt_config(kind, o):
    return "config %s %s" % (kind, " ".join(
        "%s=%d" % (k, v) if k in BOOL_FIELDS else "%s=%.9g" % (k, v) for k, v in o.items()))


def state_line(state_name, pname, t):
    a = t.detach().numpy().astype(np.float32).ravel()
    return "state %s %s %d %.9g %.9g" % (state_name, pname, a.size,
                                         float(np.sum(a.astype(np.float64))),
                                         float(np.sum(np.abs(a.astype(np.float64)))))


HEADER = """\
# {name}.txt - generated by scripts/make_optim_fixtures.py; do not edit.
# PyTorch {torch} float32, 1 thread, single-tensor (foreach=False) optimizer step.
# Tiny CNN (see the script), weights and data from the uint32 hash; {steps} steps of batch {batch}.
# Lines:
#   config <kind> <field>=<value> ...                         nn_optim_config fields (float32)
#   init  <name> <numel> <sum> <abssum> <v0> <v1> <v2> <v3>   parameters before step 0
#   data  0 <xsum> <label_0> ... <label_{last}>                   step 0's batch
#   loss  <t> <value>                                         step t's mean CE loss (pre-update)
#   param <name> <numel> <sum> <abssum> <v0> <v1> <v2> <v3>   parameters after the last step
#   state <state> <param> <numel> <sum> <abssum>              optimizer state after the last step,
#                                                             states in state_dict order
#   steps <n>                                                 the state's 'step' (if it has one)
# sum and abssum are float64 sums of the float32 values; numbers are %.9g."""


def run_case(name, kind, opts, outdir):
    torch.manual_seed(0)
    model = TinyCNN()
    init_params(model)
    o = full_options(kind, opts)
    opt = make_optimizer(kind, model.parameters(), o)
    loss_fn = torch.nn.CrossEntropyLoss()

    lines = [HEADER.format(name="optim_" + name, torch=torch.__version__, steps=STEPS,
                           batch=BATCH, last=BATCH - 1), fmt_config(kind, o)]
    for pname, p in model.named_parameters():
        lines.append(param_line("init", pname, p))
    x0, y0 = batch(0)
    lines.append("data 0 %.9g %s" % (float(np.sum(x0.numpy().astype(np.float64))),
                                     " ".join(str(int(v)) for v in y0)))
    losses = []
    for t in range(STEPS):
        x, y = batch(t)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        lines.append("loss %d %.9g" % (t, loss.item()))
    named = list(model.named_parameters())
    for pname, p in named:
        lines.append(param_line("param", pname, p))
    steps = None
    for pname, p in named:
        st = opt.state[p]
        for sname, t in st.items():
            if sname == "step":
                steps = int(float(t))
            elif torch.is_tensor(t):
                lines.append(state_line(sname, pname, t))
    if steps is not None:
        lines.append("steps %d" % steps)
    text = "\n".join(lines) + "\n"
    path = os.path.join(outdir, "optim_%s.txt" % name)
    with open(path, "w") as f:
        f.write(text)
    print("%-30s loss %.4f -> %.4f  wrote %s (%d bytes)" %
          (name, losses[0], losses[-1], os.path.normpath(path), len(text)))


def write_defaults(outdir):
    lines = ["# optim_defaults.txt - generated by scripts/make_optim_fixtures.py; do not edit.",
             "# torch.optim %s constructor defaults as nn_optim_config fields (float32, %%.9g)."
             % torch.__version__,
             "# SGD's lr has no default in torch and is not listed."]
    dummy = torch.zeros(1, requires_grad=True)
    for kind in ["sgd", "adam", "adamw", "rmsprop", "adagrad"]:
        d = dict(CLASSES[kind]([dummy], lr=1.0).defaults)
        if kind == "sgd":
            d.pop("lr")
        else:
            d["lr"] = CLASSES[kind].__init__.__defaults__[0]
        if "betas" in d:
            d["beta1"], d["beta2"] = d.pop("betas")
        fields = [f for f in FIELDS[kind] if f in d]
        lines.append("defaults %s %s" % (kind, " ".join(
            "%s=%d" % (f, int(bool(d[f]))) if f in BOOL_FIELDS else "%s=%.9g" % (f, f32(d[f]))
            for f in fields)))
    path = os.path.join(outdir, "optim_defaults.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s" % os.path.normpath(path))


BIT_N, BIT_STEPS, BIT_PARAM_STREAM, BIT_GRAD_STREAM = 1031, 5, 11, 20


def fnv1a64(a):
    """FNV-1a 64 of the little-endian bytes of a float32 array, as 16 hex digits."""
    h = 0xCBF29CE484222325
    for b in np.ascontiguousarray(a, dtype="<f4").tobytes():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def write_bitexact(outdir):
    lines = ["# optim_bitexact.txt - generated by scripts/make_optim_fixtures.py; do not edit.",
             "# PyTorch %s float32, single-tensor step. One flat tensor of %d parameters, %d steps"
             % (torch.__version__, BIT_N, BIT_STEPS),
             "# (data in the script's docstring). Lines:",
             "#   config <case> <kind> <field>=<value> ...",
             "#   bits <case> <tensor> <fnv1a64 of the float32 bytes> <float64 sum>",
             "# tensor is 'params' or a state name in state_dict order."]
    idx = np.arange(BIT_N)
    p0 = (np.float32(2.0) * uniform(BIT_PARAM_STREAM, BIT_N) - np.float32(1.0)).astype(np.float32)
    scale = np.ldexp(np.float32(1.0), -(idx % 16)).astype(np.float32)
    for name, kind, opts in CASES:
        o = full_options(kind, opts)
        p = torch.from_numpy(p0.copy()).requires_grad_(True)
        opt = make_optimizer(kind, [p], o)
        for t in range(BIT_STEPS):
            u = uniform(BIT_GRAD_STREAM + t, BIT_N)
            g = ((np.float32(2.0) * u - np.float32(1.0)).astype(np.float32) * scale)
            p.grad = torch.from_numpy(g.astype(np.float32))
            opt.step()
        lines.append("config %s %s" % (name, fmt_config(kind, o)[len("config "):]))
        tensors = [("params", p)] + [(k, v) for k, v in opt.state[p].items()
                                     if torch.is_tensor(v) and v.numel() == BIT_N]
        for tname, t in tensors:
            a = t.detach().numpy().astype(np.float32)
            lines.append("bits %s %s %s %.17g" % (name, tname, fnv1a64(a),
                                                 float(np.sum(a.astype(np.float64)))))
    path = os.path.join(outdir, "optim_bitexact.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s" % os.path.normpath(path))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("-o", "--output-dir", default=os.path.join(here, "..", "tests", "fixtures"),
                    help="fixture directory (default: tests/fixtures)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    os.makedirs(args.output_dir, exist_ok=True)
    write_defaults(args.output_dir)
    write_bitexact(args.output_dir)
    for name, kind, opts in CASES:
        run_case(name, kind, opts, args.output_dir)


if __name__ == "__main__":
    main()
