#!/usr/bin/env python3
"""PyTorch reference for `nnopt bench`: builds the equivalent torch module from
an nnopt model file (the layer types nnopt supports), then times SGD training
steps (forward, backward, update) on one random in-memory batch, like nnopt
bench: warm-up, R repeats of S steps, median. Prints one JSON line.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/torch_model_bench.py models/seed_cnn.nn \
        --batch 64 --threads 2

Set OPENBLAS_NUM_THREADS=1 before starting Python (PyTorch is fastest that way
here); the script warns if it is not set.
"""
import argparse
import json
import os
import statistics
import sys
import time


def parse_model(path):
    """The model file as a list of (type, {key: value}) in file order."""
    layers = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            kv = {}
            for tok in parts[1:]:
                if "=" not in tok:
                    sys.exit(f"{path}:{lineno}: expected key=value, found '{tok}'")
                k, v = tok.split("=", 1)
                kv[k] = v
            layers.append((parts[0], kv))
    return layers


def pair(v, default):
    if v is None:
        return (default, default)
    a = v.split("x")
    return (int(a[0]), int(a[-1]))


def build(torch, layers):
    """torch.nn.Sequential of the model (sequential files only) and input shape."""
    nn = torch.nn
    mods = []
    shape = None
    for op, kv in layers:
        if "in" in kv:
            sys.exit("torch_model_bench: only sequential model files are supported")
        if op == "input":
            shape = [int(s) for s in kv["shape"].split("x")]
            cur = list(shape)
        elif op == "conv2d":
            k = pair(kv.get("kernel"), 1)
            s = pair(kv.get("stride"), 1)
            p = pair(kv.get("pad"), 0)
            out = int(kv["out"])
            mods.append(nn.Conv2d(cur[0], out, k, s, p, bias=kv.get("bias", "1") == "1"))
            cur = [out, (cur[1] + 2 * p[0] - k[0]) // s[0] + 1, (cur[2] + 2 * p[1] - k[1]) // s[1] + 1]
        elif op == "maxpool":
            k = pair(kv.get("size"), 1)
            s = pair(kv.get("stride"), None) if "stride" in kv else k
            p = pair(kv.get("pad"), 0)
            mods.append(nn.MaxPool2d(k, s, p))
            cur = [cur[0], (cur[1] + 2 * p[0] - k[0]) // s[0] + 1, (cur[2] + 2 * p[1] - k[1]) // s[1] + 1]
        elif op == "relu":
            mods.append(nn.ReLU())
        elif op == "flatten":
            mods.append(nn.Flatten())
            n = 1
            for d in cur:
                n *= d
            cur = [n]
        elif op == "linear":
            out = int(kv["out"])
            mods.append(nn.Linear(cur[0], out, bias=kv.get("bias", "1") == "1"))
            cur = [out]
        elif op == "softmax_ce":
            pass
        else:
            sys.exit(f"torch_model_bench: layer type '{op}' is not supported here")
    return nn.Sequential(*mods), shape, cur[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        print("torch_model_bench: set OPENBLAS_NUM_THREADS=1 for PyTorch's best speed here",
              file=sys.stderr)
    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net, shape, classes = build(torch, parse_model(a.model))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(a.batch, *shape)
    y = torch.randint(0, classes, (a.batch,))

    def step():
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        times.append((time.perf_counter() - t0) / a.steps)
    s = statistics.median(times)
    print(json.dumps({"impl": "torch", "version": torch.__version__, "model": a.model,
                      "batch": a.batch, "threads": a.threads, "ms_per_step": round(s * 1e3, 4),
                      "images_per_s": round(a.batch / s, 1)}))


if __name__ == "__main__":
    main()
