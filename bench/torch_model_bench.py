#!/usr/bin/env python3
"""PyTorch reference for `nnopt bench`: builds the equivalent torch module from
an nnopt model file (scripts/nnopt_model.py: any graph, blocks expanded by
nnopt), then times SGD training steps (forward, backward, update) on
in-memory batches, like nnopt bench: one random batch, or with --data DIR the
first 32 batches of DIR's Fashion-MNIST training set, normalized as nnopt
normalizes them (mean 0.2860, std 0.3530) and cycled, the same batches
`nnopt bench --data DIR` takes; warm-up, R repeats of S steps, median. Prints one JSON line. Runs under any PyTorch: Debian's 1.13
(/usr/bin/python3) or PyPI's 2.x (scripts/setup_torch2.sh), eager or with
--compile (torch.compile of the model, 2.x only). --device cuda runs it on the
GPU: batches are copied there once, before timing (PyTorch's best case), and
each timed repeat ends with torch.cuda.synchronize(); --compile-mode
reduce-overhead adds CUDA graphs.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/torch_model_bench.py models/seed_cnn.nn \
        --batch 64 --threads 2

Set OPENBLAS_NUM_THREADS=1 before starting Python (PyTorch is fastest that way
here); the script warns if it is not set.
"""
import argparse
import gzip
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from pydeps import require  # noqa: E402  (says how to install a missing module)

BATCHES = 32  # as CLI_WORKLOAD_BATCHES in nnopt


def idx_read(path):
    """The array of an IDX file, gzipped or not (.gz tried first)."""
    import numpy as np
    for p in (path + ".gz", path):
        if os.path.exists(p):
            with (gzip.open(p, "rb") if p.endswith(".gz") else open(p, "rb")) as f:
                b = f.read()
            ndim = b[3]
            dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
            return np.frombuffer(b, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    sys.exit(f"torch_model_bench: {path}[.gz]: no such file")


def real_batches(data, batch, shape):
    """The first BATCHES x batch training images of data (fewer batches if the
    set is smaller) as normalized (x, y) tensors, one pair per batch."""
    import torch
    images = idx_read(os.path.join(data, "train-images-idx3-ubyte"))
    labels = idx_read(os.path.join(data, "train-labels-idx1-ubyte"))
    k = min(BATCHES, len(images) // batch)
    if k < 1:
        sys.exit(f"torch_model_bench: {data}: fewer than one batch of {batch} images")
    x = torch.from_numpy(images[:k * batch].astype("float32") / 255.0)
    x = ((x - 0.2860) / 0.3530).reshape(k, batch, *shape)
    y = torch.from_numpy(labels[:k * batch].astype("int64")).reshape(k, batch)
    return [(x[i].contiguous(), y[i].contiguous()) for i in range(k)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (2.x)")
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile mode (default, reduce-overhead, max-autotune)")
    ap.add_argument("--data", help="Fashion-MNIST directory: real batches, cycled")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--amp", choices=["bf16"], default=None,
                    help="bf16: torch.autocast (bf16 convolutions and matmuls, fp32 weights)")
    a = ap.parse_args()
    if a.device == "cpu" and os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        print("torch_model_bench: set OPENBLAS_NUM_THREADS=1 for PyTorch's best speed here",
              file=sys.stderr)
    require("torch")
    import torch
    from nnopt_model import NnoptModel
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = NnoptModel(a.model).to(a.device)
    model.train()
    shape, classes = model.input_shape, model.num_classes
    if a.compile_mode:
        a.compile = True
    net = torch.compile(model, mode=a.compile_mode) if a.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    if a.data:
        batches = real_batches(a.data, a.batch, shape)
    else:
        batches = [(torch.randn(a.batch, *shape), torch.randint(0, classes, (a.batch,)))]
    batches = [(x.to(a.device), y.to(a.device)) for x, y in batches]
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    turn = [0]

    def step():
        x, y = batches[turn[0]]
        turn[0] = (turn[0] + 1) % len(batches)
        opt.zero_grad()
        if a.amp:
            with torch.autocast(device_type=a.device.split(":")[0], dtype=torch.bfloat16):
                loss = loss_fn(net(x), y)
        else:
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    sync()
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        sync()
        times.append((time.perf_counter() - t0) / a.steps)
    s = statistics.median(times)
    impl = "torch" + ("-compile" if a.compile else "") + \
        (f"-{a.compile_mode}" if a.compile_mode else "")
    print(json.dumps({"impl": impl, "device": a.device, "amp": a.amp,
                      "version": torch.__version__, "model": a.model,
                      "batch": a.batch, "threads": a.threads, "data": a.data,
                      "batches": len(batches), "ms_per_step": round(s * 1e3, 4),
                      "images_per_s": round(a.batch / s, 1)}))


if __name__ == "__main__":
    main()
