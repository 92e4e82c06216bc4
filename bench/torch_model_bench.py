#!/usr/bin/env python3
"""PyTorch reference for `nnopt bench`: builds the equivalent torch module from
an nnopt model file (scripts/nnopt_model.py: any graph, blocks expanded by
nnopt), then times SGD training steps (forward, backward, update) on one
random in-memory batch, like nnopt bench: warm-up, R repeats of S steps,
median. Prints one JSON line. Runs under any PyTorch: Debian's 1.13
(/usr/bin/python3) or PyPI's 2.x (scripts/setup_torch2.sh), eager or with
--compile (torch.compile of the model, 2.x only).

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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from pydeps import require  # noqa: E402  (says how to install a missing module)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (2.x)")
    a = ap.parse_args()
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        print("torch_model_bench: set OPENBLAS_NUM_THREADS=1 for PyTorch's best speed here",
              file=sys.stderr)
    require("torch")
    import torch
    from nnopt_model import NnoptModel
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = NnoptModel(a.model)
    model.train()
    shape, classes = model.input_shape, model.num_classes
    net = torch.compile(model) if a.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
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
    print(json.dumps({"impl": "torch" + ("-compile" if a.compile else ""),
                      "version": torch.__version__, "model": a.model,
                      "batch": a.batch, "threads": a.threads, "ms_per_step": round(s * 1e3, 4),
                      "images_per_s": round(a.batch / s, 1)}))


if __name__ == "__main__":
    main()
