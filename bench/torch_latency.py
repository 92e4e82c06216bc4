#!/usr/bin/env python3
"""PyTorch reference for nnopt's inference latency: builds the torch module of
an nnopt model file (scripts/nnopt_model.py), puts it in eval mode and times
forward passes of one batch of the first Fashion-MNIST test images (normalized
as nnopt normalizes them) under torch.inference_mode(), as `nnopt compare`
times its batch-1 latency: warm-up, then RUNS single forward passes, median.
Prints one JSON line.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/torch_latency.py models/seed_cnn.nn \
        --batch 1 --threads 1 [--compile] [--data DIR]

Runs under Debian's PyTorch 1.13 (/usr/bin/python3) or PyPI's 2.x
(.venv-torch2/bin/python, scripts/setup_torch2.sh); --compile is 2.x only.
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
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=201)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (2.x)")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                    help="Fashion-MNIST directory (its first test images are the input)")
    a = ap.parse_args()
    if a.batch < 1 or a.runs < 1 or a.threads < 1:
        sys.exit("torch_latency: --batch, --runs and --threads must be >= 1")
    require("torch")
    require("numpy")
    import torch
    from nnopt_model import NnoptModel
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_model_bench import idx_read
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = NnoptModel(a.model).eval()
    shape = model.input_shape
    images = idx_read(os.path.join(a.data, "t10k-images-idx3-ubyte"))
    if len(images) < a.batch:
        sys.exit(f"torch_latency: {a.data}: fewer than {a.batch} test images")
    x = torch.from_numpy(images[:a.batch].astype("float32") / 255.0)
    x = ((x - 0.2860) / 0.3530).reshape(a.batch, *shape).contiguous()
    net = torch.compile(model) if a.compile else model
    with torch.inference_mode():
        for _ in range(a.warmup):
            net(x)
        times = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    print(json.dumps({"impl": "torch" + ("-compile" if a.compile else ""),
                      "version": torch.__version__, "model": a.model, "batch": a.batch,
                      "threads": a.threads, "runs": a.runs, "latency_ms": round(ms, 5)}))


if __name__ == "__main__":
    main()
