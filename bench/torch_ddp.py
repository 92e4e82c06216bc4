#!/usr/bin/env python3
"""PyTorch DistributedDataParallel reference for nnopt's data-parallel
training (bench/scaling.sh): R processes (gloo backend, CPU), each with T
threads, train an nnopt model file (scripts/nnopt_model.py builds the torch
module) with SGD lr 0.01 momentum 0.9 on the first N images of a
Fashion-MNIST training set, normalized as nnopt does, global batch R x B:
every rank draws the same permutation each epoch and takes its contiguous
share of each global batch, as nnopt's ranks do. DDP averages the gradients
in buckets while the backward pass runs (its default 25 MB buckets). The
last epoch is timed (the first warms up) and rank 0 prints one JSON line:
images/s over all ranks. Runs under any PyTorch: Debian's 1.13
(/usr/bin/python3) or PyPI's 2.x.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/torch_ddp.py models/seed_cnn.nn \
        --ranks 2 --threads 1 --batch 32 --data /usr/share/datasets/fashion-mnist
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from pydeps import require  # noqa: E402
from torch_model_bench import idx_read  # noqa: E402


def worker(rank, a, init_file, out_q):
    import torch
    import torch.distributed as dist
    from nnopt_model import NnoptModel
    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank,
                            world_size=a.ranks)
    torch.manual_seed(0)
    model = NnoptModel(a.model)
    model.train()
    net = torch.nn.parallel.DistributedDataParallel(model) if a.ranks > 1 else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    images = idx_read(os.path.join(a.data, "train-images-idx3-ubyte"))[:a.train_limit]
    labels = idx_read(os.path.join(a.data, "train-labels-idx1-ubyte"))[:a.train_limit]
    x_all = ((torch.from_numpy(images.astype("float32") / 255.0) - 0.2860) / 0.3530)
    x_all = x_all.reshape(len(images), *model.input_shape)
    y_all = torch.from_numpy(labels.astype("int64"))
    n, gb = len(images), a.ranks * a.batch
    seconds = 0.0
    for epoch in range(a.epochs):
        g = torch.Generator().manual_seed(epoch)
        perm = torch.randperm(n, generator=g)
        dist.barrier() if a.ranks > 1 else None
        t0 = time.perf_counter()
        for first in range(0, n, gb):
            m = min(gb, n - first)
            lo, hi = first + rank * m // a.ranks, first + (rank + 1) * m // a.ranks
            idx = perm[lo:hi]
            opt.zero_grad()
            loss_fn(net(x_all[idx]), y_all[idx]).backward()
            opt.step()
        dist.barrier() if a.ranks > 1 else None
        seconds = time.perf_counter() - t0
    if rank == 0:
        out_q.put({"impl": "torch-ddp", "version": torch.__version__, "model": a.model,
                   "ranks": a.ranks, "threads": a.threads, "batch": a.batch,
                   "images": n, "seconds": round(seconds, 4),
                   "images_per_s": round(n / seconds, 1)})
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32, help="per rank")
    ap.add_argument("--train-limit", type=int, default=12800)
    ap.add_argument("--epochs", type=int, default=2, help="the last one is timed")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a = ap.parse_args()
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        print("torch_ddp: set OPENBLAS_NUM_THREADS=1 for PyTorch's best speed here", file=sys.stderr)
    require("torch")
    import torch.multiprocessing as mp
    init_file = os.path.join(tempfile.mkdtemp(prefix="torch_ddp."), "init")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, a, init_file, q)) for r in range(a.ranks)]
    for p in procs:
        p.start()
    result = q.get()
    for p in procs:
        p.join()
        if p.exitcode:
            sys.exit(f"torch_ddp: rank exited {p.exitcode}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
