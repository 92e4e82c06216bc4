#!/usr/bin/python3
"""Train the seed CNN in PyTorch with nnopt's seed recipe and time each epoch.

The PyTorch side of bench/seed_epoch.sh. Same network (scripts/seed_cnn.py),
same data handling and same optimizer as `nnopt train models/seed_cnn.nn`:

  - Fashion-MNIST from IDX .gz files (gzip + numpy, no torchvision), normalized
    as (x/255 - 0.2860)/0.3530; the whole training set is held in memory as one
    float32 tensor (N, 1, 28, 28);
  - SGD lr 0.01, momentum 0.9, batch 64, CrossEntropyLoss (mean over the batch);
  - a fresh shuffle every epoch (torch.randperm from a seeded generator); the
    last partial batch is used;
  - evaluation on the 10,000 test images after every epoch under torch.no_grad.

Timing matches nnopt's: "seconds" covers the batch loop of one epoch (gather
batch, forward, backward, step), not the shuffle and not the evaluation,
which is timed separately as "eval_seconds". Prints one JSON line per epoch:

  {"impl":"torch","version":...,"threads":T,"epoch":E,"seconds":...,
   "images_per_s":...,"test_accuracy":pct,"eval_seconds":...,"train_loss":...}

Run with Debian's PyTorch, and set OPENBLAS_NUM_THREADS=1 in the environment
(it must be set before torch is imported, so it is not set here):

  OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/torch_seed_epoch.py --threads 2
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
from pydeps import require  # noqa: E402  (says how to install a missing module)

require("numpy", "torch")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from seed_cnn import FASHION_MNIST_MEAN, FASHION_MNIST_STD, SeedCNN  # noqa: E402
from torch_eval_checkpoint import (DEFAULT_DATA_DIR, IDX_IMAGES_MAGIC,  # noqa: E402
                                   IDX_LABELS_MAGIC, find_file, read_idx)


def load_split(data_dir, prefix):
    """x (N, 1, 28, 28) float32 normalized as nnopt does, y (N,) int64."""
    images = read_idx(find_file(data_dir, f"{prefix}-images-idx3-ubyte"), IDX_IMAGES_MAGIC)
    labels = read_idx(find_file(data_dir, f"{prefix}-labels-idx1-ubyte"), IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{data_dir}: {prefix}: {images.shape[0]} images, {labels.shape[0]} labels")
    x = images.astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(FASHION_MNIST_MEAN)) / np.float32(FASHION_MNIST_STD)
    x = torch.from_numpy(np.ascontiguousarray(x.reshape(-1, 1, images.shape[1], images.shape[2])))
    return x, torch.from_numpy(labels.astype(np.int64))


@torch.no_grad()
def evaluate(model, x, y, batch):
    """Accuracy in percent over x, y."""
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], batch):
        correct += (model(x[i:i + batch]).argmax(dim=1) == y[i:i + batch]).sum().item()
    model.train()
    return 100.0 * correct / x.shape[0]


def main():
    ap = argparse.ArgumentParser(description="Train SeedCNN in PyTorch with nnopt's seed "
                                             "recipe; one JSON line per epoch.")
    ap.add_argument("--epochs", type=int, default=1, help="epochs (default 1)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--seed", type=int, default=1, help="torch.manual_seed for init and shuffle")
    ap.add_argument("--batch", type=int, default=64, help="training batch size (default 64)")
    ap.add_argument("--eval-batch", type=int, default=64,
                    help="evaluation batch size (default 64, as nnopt train's)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--train-limit", type=int, default=0, help="use the first N training images")
    ap.add_argument("--data", default=DEFAULT_DATA_DIR,
                    help=f"Fashion-MNIST directory (default {DEFAULT_DATA_DIR})")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        x_train, y_train = load_split(args.data, "train")
        x_test, y_test = load_split(args.data, "t10k")
    except (OSError, ValueError) as e:
        print(f"torch_seed_epoch: {e}", file=sys.stderr)
        return 1
    if args.train_limit > 0:
        x_train, y_train = x_train[:args.train_limit], y_train[:args.train_limit]
    n = x_train.shape[0]

    model = SeedCNN()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(args.seed)

    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        t0 = time.perf_counter()
        for first in range(0, n, args.batch):
            idx = perm[first:first + args.batch]
            xb, yb = x_train[idx], y_train[idx]
            opt.zero_grad(set_to_none=False)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * idx.shape[0]
        seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        acc = evaluate(model, x_test, y_test, args.eval_batch)
        eval_seconds = time.perf_counter() - t1
        print(json.dumps({"impl": "torch", "version": torch.__version__, "threads": args.threads,
                          "epoch": epoch, "seconds": round(seconds, 3),
                          "images_per_s": round(n / seconds, 1),
                          "test_accuracy": round(acc, 4), "eval_seconds": round(eval_seconds, 3),
                          "train_loss": round(loss_sum / n, 6)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
